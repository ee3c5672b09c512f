"""sample: bad configs are one-line errors; one seed gives the same structures."""

import pytest

from conftest import assert_one_line_error, cli


@pytest.mark.parametrize(
    "text, needles",
    [
        ("colour: red\n", ["unknown key 'colour'", "check its spelling"]),
        ("seed: many\n", ["'seed'", "fix that value"]),
        ("temperatures_k: [300, -300]\n", ["temperatures_k.1", "greater than 0"]),
        ("timestep_fs: 0\n", ["timestep_fs", "greater than 0"]),
        ("strained: [\n", ["not valid YAML", "fix the syntax"]),
        ("- 1\n- 2\n", ["must be a mapping"]),
    ],
    ids=["unknown-key", "wrong-type", "negative-temperature", "zero-timestep", "invalid-yaml", "not-a-mapping"],
)
def test_bad_sample_config(capsys, tmp_path, text, needles):
    """A negative temperature used to run the MD for minutes and then report a blow-up."""
    (tmp_path / "sample.yaml").write_text(text)
    out = tmp_path / "structures.extxyz"
    assert_one_line_error(cli(capsys, "sample", "--config", tmp_path / "sample.yaml", "--out", out), *needles)
    assert not out.exists()


@pytest.mark.slow
def test_sample_is_deterministic_for_a_seed(tmp_path):
    from mlip_exafs.sample import SampleSpec, sample

    spec = SampleSpec(supercell="1x1x1", temperatures_k=[300.0], snapshots_per_temperature=2, strained=1, rattled=2,
                      equilibration_fs=10, interval_fs=4, threads=1)
    sample(spec, tmp_path / "a.extxyz")
    sample(spec, tmp_path / "b.extxyz")
    sample(spec.model_copy(update={"seed": 1}), tmp_path / "c.extxyz")
    assert (tmp_path / "a.extxyz").read_text() == (tmp_path / "b.extxyz").read_text()
    assert (tmp_path / "a.extxyz").read_text() != (tmp_path / "c.extxyz").read_text()


def test_sampled_uids_name_a_structure_file_not_its_path(tmp_path):
    """A uid becomes a folder name (CP2K failure output): a path in it would write next to the user's structure file."""
    import ase.io

    from mlip_exafs.sample import SampleSpec, sample
    from mlip_exafs.structures import load_structure

    structure = tmp_path / "in" / "ws2.vasp"
    structure.parent.mkdir()
    ase.io.write(structure, load_structure("ws2"), format="vasp")
    spec = SampleSpec(structure=str(structure), supercell="1x1x1", temperatures_k=[300.0], snapshots_per_temperature=1, strained=0, rattled=1,
                      equilibration_fs=4, interval_fs=4, threads=1)
    frames = sample(spec, tmp_path / "a.extxyz")
    assert all(a.info["uid"].startswith("ws2.vasp-s") and "/" not in a.info["uid"] for a in frames)


def test_an_output_that_is_a_folder_is_refused_before_the_sampling_md(capsys, tmp_path, monkeypatch):
    """It was refused only after every sampling MD, as 'free disk space'."""
    import mlip_exafs.sample as sample

    def no_md(*args, **kwargs):
        raise AssertionError("the sampling MD ran before the output was checked")

    monkeypatch.setattr(sample, "calculator_for", no_md)
    (tmp_path / "sdir").mkdir()
    assert_one_line_error(cli(capsys, "sample", "--out", tmp_path / "sdir", "--threads", "1"), "structures file", "is a folder, not a file",
                          "train.extxyz")


def test_sampled_structures_keep_the_magnetic_order_of_their_structure_file(tmp_path):
    """An antiferromagnet's ± start moments (extxyz initial_magmoms) reach every sampled structure, and so its labels."""
    import ase.io
    import numpy as np
    from ase.build import bulk

    from mlip_exafs.sample import SampleSpec, sample

    ni = bulk("Ni", "fcc", a=3.52, cubic=True)  # a magnetic element EMT knows: the order is made up, the point is that it stays
    ni.set_initial_magnetic_moments([0.6, -0.6, 0.6, -0.6])
    ase.io.write(tmp_path / "ni.extxyz", ni)
    spec = SampleSpec(structure=str(tmp_path / "ni.extxyz"), supercell="2x1x1", potential="python:ase.calculators.emt:EMT", temperatures_k=[300.0],
                      snapshots_per_temperature=1, strained=1, rattled=1, equilibration_fs=4, interval_fs=4, threads=1)
    sample(spec, tmp_path / "s.extxyz")
    frames = ase.io.read(tmp_path / "s.extxyz", ":")
    assert sorted(a.info["method"] for a in frames) == ["md", "rattled", "strained"]
    for atoms in frames:
        assert np.array_equal(atoms.get_initial_magnetic_moments(), [0.6, -0.6, 0.6, -0.6] * 2)
