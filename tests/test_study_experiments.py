"""Studies with several spectra (each at its temperature) and pristine-only studies (no dataset)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import W_FOIL, assert_nothing_written, assert_one_line_error, cli, run_cli


PRISTINE_ONLY = {
    "name": "pristine-series",
    "structure": "ws2",
    "absorber": "W",
    "pristine": ["chgnet"],
    "md": {"supercell": "3x3x1", "temperatures_k": [300, 10], "timestep_fs": 2, "equilibration_fs": 10, "production_fs": 40,
           "snapshot_every_fs": 10},
    "exafs": {"edge": "L3", "rmax_a": 4.0, "engine": "fast"},
}


def foil_at(folder: Path, temperature: str | None, name: str = "foil.xdi") -> Path:
    """The W foil spectrum with its header's Sample.temperature replaced (None: the line removed)."""
    lines = [line for line in W_FOIL.read_text().splitlines(keepends=True) if not line.startswith("# Sample.temperature:")]
    if temperature is not None:
        lines.insert(1, f"# Sample.temperature: {temperature}\n")
    path = folder / name
    path.write_text("".join(lines))
    return path


def write_config(folder: Path, **changes) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**PRISTINE_ONLY, **changes}))
    return path


@pytest.mark.parametrize("text, kelvin", [("10K", 10.0), ("100 K", 100.0), ("25 C", 298.15), ("-196 °C", 77.15), ("77.5", 77.5),
                                          ("room temperature", None), (None, None)])
def test_a_spectrums_temperature_is_read_from_its_xdi_header(tmp_path, text, kelvin):
    from mlip_exafs.spectra import spectrum_temperature_k

    temperature_k, said = spectrum_temperature_k(foil_at(tmp_path, text))
    assert said == text
    assert temperature_k == (None if kelvin is None else pytest.approx(kelvin))


def test_a_two_column_spectrum_has_no_header_temperature(tmp_path):
    from mlip_exafs.spectra import spectrum_temperature_k

    path = tmp_path / "chi.txt"
    path.write_text("".join(f"{3 + 0.05 * i} {0.01 * (-1) ** i}\n" for i in range(60)))
    assert spectrum_temperature_k(path) == (None, None)


def test_each_spectrum_is_compared_with_the_md_at_its_temperature(tmp_path):
    """A list of spectra: a compare step per potential and spectrum, a fit per spectrum, named by temperature like md/analyze/exafs."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps, summarize

    cold = foil_at(tmp_path, "10K", "cold.xdi")
    config = load_study_config(write_config(tmp_path, experiment=[{"file": str(W_FOIL), "temperature_k": 300}, {"file": str(cold)}]))
    assert [(p.file.name, p.temperature_k) for p in config.experiment] == [("W_metal_rt_01.xdi", 300.0), ("cold.xdi", 10.0)]
    steps = {s.name: s for s in build_steps(config)}
    assert sorted(steps) == sorted(["fit-experiment", "fit-experiment@10K", "md-chgnet", "analyze-chgnet", "exafs-chgnet", "compare-chgnet",
                                    "md@10K-chgnet", "analyze@10K-chgnet", "exafs@10K-chgnet", "compare@10K-chgnet"])  # no finetune, no validate
    assert steps["compare@10K-chgnet"].deps == ("exafs@10K-chgnet",) and steps["compare@10K-chgnet"].params["experiment"] == str(cold)
    assert (steps["compare@10K-chgnet"].potential, steps["compare@10K-chgnet"].temperature_k) == ("chgnet", 10.0)
    assert steps["fit-experiment@10K"].temperature_k == 10.0 and steps["fit-experiment"].params["experiment"] == str(W_FOIL)

    msrd = {"W-S1": {"r_mean": 2.41, "sigma2": 0.002, "sigma2_classical": None}}
    comparison = {"r_factor_k": 0.1, "r_factor_r": 0.05, "s02": 0.9, "de0_ev": 1.0, "kmin": 3, "kmax": 14, "rmin": 1, "rmax": 5}
    results = {name: {"msrd": msrd} for name in steps if name.startswith("analyze")}
    results |= {"compare-chgnet": comparison, "compare@10K-chgnet": {**comparison, "r_factor_r": 0.02}, "fit-experiment@10K": {"shells": {}}}
    summary = summarize(config, results)
    chgnet = summary["potentials"]["chgnet"]
    assert chgnet["validation"] is None and chgnet["exafs"]["r_factor_r"] == 0.05  # the first spectrum's comparison
    assert chgnet["by_temperature"]["10"]["exafs"]["r_factor_r"] == 0.02 and chgnet["by_temperature"]["300"]["exafs"]["r_factor_r"] == 0.05
    assert summary["learning_curve"] == [] and summary["recommended_n"] is None and "no dataset" in summary["recommended_n_rule"]
    assert summary["experiment"]["file"] == str(W_FOIL) and summary["experiment"]["fit"] is None  # the first spectrum (its fit not run)
    assert [(s["file"], s["temperature_k"], s["fit"]) for s in summary["experiment"]["spectra"]] == [(str(W_FOIL), 300.0, None),
                                                                                                      (str(cold), 10.0, {"shells": {}})]


def test_steps_at_once_are_of_different_potentials_then_the_next_temperature(tmp_path):
    """Ties start in list order: md-A with md-B, so md@10K-A finds A's highest frequency (and its EXAFS the FEFF potentials) cached."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps

    config = load_study_config(write_config(tmp_path, pristine=["chgnet", "sevennet-0"]))
    md_steps = [s.name for s in build_steps(config) if s.action == "md"]
    assert md_steps == ["md-chgnet", "md-sevennet-0", "md@10K-chgnet", "md@10K-sevennet-0"]


def test_one_experiment_block_keeps_its_step_hashes(tmp_path):
    """A single block and a list of one give the same steps and hashes (committed one-spectrum studies stay cached)."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps
    from mlip_exafs.study.steps import all_hashes

    one_t = {**PRISTINE_ONLY["md"], "temperatures_k": None, "temperature_k": 300}
    block = {"file": str(W_FOIL), "temperature_k": 300}
    single = all_hashes(build_steps(load_study_config(write_config(tmp_path, md=one_t, experiment=block))))
    listed = all_hashes(build_steps(load_study_config(write_config(tmp_path, md=one_t, experiment=[block]))))
    assert single == listed and {"compare-chgnet", "fit-experiment"} <= set(single)


@pytest.mark.parametrize("case, needles", [
    ("room-temperature", ["W_metal_rt_01.xdi", "'room temperature'", "temperature_k"]),
    ("no-temperature", ["foil.xdi", "no Sample.temperature", "temperature_k"]),
    ("unmatched", ["foil.xdi is at 100 K", "md.temperatures_k"]),
    ("same-temperature", ["two experiment spectra are at 300 K"]),
    ("header-contradicted", ["foil.xdi: temperature_k is 300 K but its header says '100 K' (100 K)", "the spectrum you mean"]),
    ("finetune-without-dataset", ["finetune needs a dataset"]),
])
def test_bad_spectra_and_a_finetune_without_dataset_are_one_line_errors_at_load(capsys, tmp_path, case, needles):
    experiment = {
        "room-temperature": lambda: [{"file": str(W_FOIL)}],
        "no-temperature": lambda: [{"file": str(foil_at(tmp_path, None))}],
        "unmatched": lambda: [{"file": str(foil_at(tmp_path, "100 K"))}],
        "same-temperature": lambda: [{"file": str(W_FOIL), "temperature_k": 300}, {"file": str(foil_at(tmp_path, "300K"))}],
        "header-contradicted": lambda: [{"file": str(foil_at(tmp_path, "100 K")), "temperature_k": 300}],  # the 100 K file for the 300 K MD
        "finetune-without-dataset": lambda: [],
    }[case]()
    extra = {"finetune": {"n": [1], "seeds": [0]}} if case == "finetune-without-dataset" else {}
    proc = cli(capsys, "study", write_config(tmp_path, experiment=experiment, **extra), "--out", tmp_path / "out")
    assert_one_line_error(proc, *needles)
    assert_nothing_written(tmp_path / "out")


def test_only_learning_curve_without_a_dataset_is_a_one_line_error(capsys, tmp_path):
    proc = cli(capsys, "study", write_config(tmp_path), "--out", tmp_path / "out", "--only", "learning-curve")
    assert_one_line_error(proc, "needs a dataset")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.slow
def test_a_pristine_only_study_at_two_temperatures_runs_end_to_end(tmp_path):
    """No dataset: the pretrained potential's MD, analysis, EXAFS and comparison at 300 K and 10 K; the report renders."""
    cold = foil_at(tmp_path, "10K", "cold.xdi")
    experiment = [{"file": str(W_FOIL), "temperature_k": 300, "fit_shells": 0}, {"file": str(cold), "fit_shells": 0}]
    out = tmp_path / "run"
    run_cli("study", str(write_config(tmp_path, experiment=experiment)), "--out", str(out), check=True)
    assert sorted(p.name for p in (out / "steps").iterdir()) == sorted(
        f"{action}{tag}-chgnet" for action in ("md", "analyze", "exafs", "compare") for tag in ("", "@10K"))
    summary = json.loads((out / "summary.json").read_text())
    chgnet = summary["potentials"]["chgnet"]
    assert chgnet["validation"] is None and summary["learning_curve"] == [] and summary["recommended_n"] is None
    cold_md, warm_md = chgnet["by_temperature"]["10"], chgnet["by_temperature"]["300"]
    assert cold_md["exafs"]["r_factor_r"] > 0 and warm_md["exafs"] == chgnet["exafs"]
    first = next(iter(warm_md["msrd"]))
    assert 0 < cold_md["msrd"][first]["sigma2"] < warm_md["msrd"][first]["sigma2"]  # classical σ² grows with T
    assert [s["temperature_k"] for s in summary["experiment"]["spectra"]] == [300.0, 10.0]
    assert (out / "report.html").stat().st_size > 10_000


def _strained_frames(c_over_a: float, n_frames: int = 12, seed: int = 0) -> list:
    """SrTiO3 3x3x3 frames of a tetragonal cell (c/a given), atoms jiggled 0.03 Å about their sites."""
    from mlip_exafs.structures import load_structure

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = load_structure("srtio3", "3x3x3")
        atoms.set_cell(atoms.cell.array * [[1], [1], [c_over_a]], scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    return frames


def test_a_temperature_series_finds_one_shell_set_at_every_temperature(tmp_path):
    """A cold MD that finds a distortion (c/a 1.08 splits the 12 Sr-O of the frame average into 4 + 8) and a warm cubic one:
    each against its own average, 'Sr-O2' would name the split-off 8 at one temperature and the 24 at 4.78 Å at the other.
    The series' analyses take the crystal the MDs start from, so each shell is one pair list at both."""
    import ase.io
    from mlip_exafs.study.actions import analyze_action
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps, series_reference

    config = load_study_config(write_config(tmp_path, structure="srtio3", absorber="Sr", md={**PRISTINE_ONLY["md"], "supercell": "3x3x3"}))
    steps = {s.name: s for s in build_steps(config)}
    reference = series_reference(config)
    assert reference == {"reference": "srtio3", "reference_supercell": "3x3x3"}
    assert steps["analyze-chgnet"].params == steps["analyze@10K-chgnet"].params == {"absorber": "Sr", **reference}
    one_t = load_study_config(write_config(tmp_path, md={**PRISTINE_ONLY["md"], "temperatures_k": None, "temperature_k": 300}))
    assert series_reference(one_t) == {}  # one temperature: its own average, its hashes as before

    shells = {}
    for label, c_over_a in (("cold", 1.08), ("warm", 1.0)):
        traj = tmp_path / f"{label}.extxyz"
        ase.io.write(traj, _strained_frames(c_over_a))
        for how, params in (("own average", {}), ("series", reference)):
            out = tmp_path / f"{label}-{how}"
            result = analyze_action(out, {f"md-{label}": {"snapshots": str(traj)}}, absorber="Sr", **params)
            shells[label, how] = list(result["msrd"])
    assert shells["cold", "own average"][:2] == ["Sr-O1", "Sr-O2"] and shells["cold", "own average"] != shells["warm", "own average"]
    assert shells["cold", "series"] == shells["warm", "series"] == shells["warm", "own average"]
