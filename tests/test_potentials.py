"""The potentials registry: every offline model by name, checkpoints that name their family, any ASE calculator."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import all_changes as ALL_CHANGES
from ase.calculators.emt import EMT as EMT_CALCULATOR
from ase.stress import voigt_6_to_full_3x3_stress

from conftest import assert_nothing_written, assert_one_line_error, cli
from mlip_exafs.errors import UserError
from mlip_exafs.potentials import REGISTRY, calculator_for, load_potential, potential_id, resolve_device, save_checkpoint
from mlip_exafs.structures import load_structure

OFFLINE_MODELS = ["chgnet", "chgnet-0.2.0", "chgnet-r2scan", "sevennet-0", "sevennet-l3i5", "sevennet-mf-0"]
EMT = "python:ase.calculators.emt:EMT"


def _symmetric_forces_ok(atoms):
    """Perfect 2H-WS2: W forces vanish by symmetry; S forces only along c, opposite within a layer."""
    forces = atoms.get_forces()
    symbols = np.array(atoms.get_chemical_symbols())
    assert np.abs(forces[symbols == "W"]).max() < 1e-4
    assert np.abs(forces[symbols == "S"][:, :2]).max() < 1e-4
    assert abs(forces[:, 2].sum()) < 1e-4


def test_registry_names_every_offline_model_with_its_family_and_training_data():
    assert list(REGISTRY) == OFFLINE_MODELS
    assert {REGISTRY[name].family for name in OFFLINE_MODELS} == {"chgnet", "sevennet"}
    assert REGISTRY["sevennet-mf-0"].options == {"modal": "PBE"}
    assert all(entry.trained_on and entry.description for entry in REGISTRY.values())


def test_cli_potentials_lists_every_name_and_what_it_was_trained_on(capsys):
    proc = cli(capsys, "potentials")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    for name in OFFLINE_MODELS:
        assert name in lines and "MPtrj" in lines[name], proc.stdout
    assert "r2SCAN" in lines["chgnet-r2scan"] and "PBE head" in lines["sevennet-mf-0"]
    assert "python:M:F" in lines


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFLINE_MODELS)
def test_pretrained_models_load_offline_and_respect_symmetry(name):
    atoms = load_structure("ws2")
    atoms.calc = calculator_for(name, atoms, threads=1)
    energy_ev_atom = atoms.get_potential_energy() / len(atoms)
    assert -9.5 < energy_ev_atom < -7.0 if name != "chgnet-r2scan" else -25 < energy_ev_atom < -20  # r2SCAN's own energy scale
    _symmetric_forces_ok(atoms)
    assert np.isfinite(atoms.get_stress()).all()
    bcc = load_structure("w-bcc", "2x2x2")
    bcc.calc = calculator_for(name, bcc, threads=1)
    assert np.abs(bcc.get_forces()).max() < 1e-4


@pytest.mark.slow
def test_the_models_are_different_models():
    """Six names, six sets of weights: no two give the same WS2 energy."""
    energies = {}
    for name in OFFLINE_MODELS:
        atoms = load_structure("ws2")
        atoms.calc = calculator_for(name, atoms, threads=1)
        energies[name] = round(atoms.get_potential_energy(), 4)
    assert len(set(energies.values())) == len(OFFLINE_MODELS), energies


def test_unknown_potential_lists_the_available_ones():
    with pytest.raises(UserError, match="use one of: chgnet, chgnet-0.2.0, chgnet-r2scan, sevennet-0, sevennet-l3i5, sevennet-mf-0"):
        calculator_for("mace-mp-0", load_structure("ws2"))


def test_element_not_covered_is_refused_before_compute():
    atoms = Atoms("Og2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[3, 3, 3], pbc=True)
    with pytest.raises(UserError, match="does not cover element.*Og"):
        calculator_for("chgnet", atoms)
    with pytest.raises(UserError, match="does not cover element.*Og"):
        calculator_for("sevennet-0", atoms)


def _energy(spec, structure="ws2"):
    atoms = load_structure(structure, "2x1x1")
    atoms.rattle(0.05, seed=3)
    atoms.calc = calculator_for(spec, atoms, threads=1)
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chgnet-0.2.0", "sevennet-mf-0"])
def test_checkpoint_round_trip_names_its_family_and_predicts_the_same(tmp_path, name):
    """One per family (0.2.0: CHGNet's odd readout bias; MF-0: the fidelity head must survive)."""
    import torch

    path = tmp_path / "model.pt"
    save_checkpoint(load_potential(name), path, {"note": "test"})
    payload = torch.load(path, weights_only=True)
    assert payload["family"] == REGISTRY[name].family and payload["format"] == f"mlip-exafs-{payload['family']}-v1"
    reloaded = load_potential(path)
    assert reloaded.family_name == REGISTRY[name].family and reloaded.checkpoint_metadata == {"note": "test"}
    (e_saved, f_saved), (e_name, f_name) = _energy(path), _energy(name)
    assert e_saved == pytest.approx(e_name, abs=1e-5)
    np.testing.assert_allclose(f_saved, f_name, atol=1e-5)
    assert potential_id(path).startswith("model.pt:sha256:")


def test_checkpoints_written_before_the_registry_still_load(tmp_path):
    """Version-1 checkpoints have no 'family' key: the format names it (studies/*/finetune-*/model.pt)."""
    import torch

    path = tmp_path / "old.pt"
    save_checkpoint(load_potential("chgnet"), path, {})
    payload = torch.load(path, weights_only=True)
    del payload["family"]
    torch.save(payload, path)
    assert load_potential(path).family_name == "chgnet"
    shipped = Path(__file__).resolve().parents[1] / "studies" / "ws2-paper" / "steps" / "finetune-chgnet-ft-n1-s0" / "model.pt"
    if shipped.exists():
        assert load_potential(shipped).family_name == "chgnet"


def test_corrupted_or_pickled_checkpoint_is_refused(tmp_path):
    import torch

    pickled = tmp_path / "evil.pt"
    torch.save({"format": "x", "obj": object()}, pickled)  # not loadable with weights_only=True
    with pytest.raises(UserError, match="refusing checkpoint"):
        load_potential(pickled)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(1000))
    with pytest.raises(UserError, match="refusing checkpoint"):
        load_potential(corrupt)
    unknown = tmp_path / "other.pt"
    torch.save({"format": "mlip-exafs-mace-v1", "state_dict": {}}, unknown)
    with pytest.raises(UserError, match="not an mlip-exafs checkpoint of a known family"):
        load_potential(unknown)


# ---------------------------------------------------------------- python:MODULE:CALLABLE


def _cu_file(folder: Path) -> Path:
    import ase.io
    from ase.build import bulk

    path = folder / "cu.cif"
    ase.io.write(path, bulk("Cu", "fcc", a=3.61, cubic=True))
    return path


def test_python_callable_is_the_ase_calculator_it_returns(tmp_path):

    cu = load_structure(_cu_file(tmp_path), "2x2x2")
    cu.rattle(0.05, seed=0)
    reference = cu.copy()
    reference.calc = EMT_CALCULATOR()
    cu.calc = calculator_for(EMT, cu)
    assert cu.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(cu.get_forces(), reference.get_forces(), atol=1e-10)
    loaded = load_potential(EMT + "?asap_cutoff=True")
    assert loaded.family_name == "python" and loaded.model.inner.parameters["asap_cutoff"] is True  # ?key=value read as a literal
    assert potential_id(EMT) == EMT


def test_python_callable_runs_singlepoint_and_md_on_fcc_cu(capsys, tmp_path):
    cif = _cu_file(tmp_path)
    proc = cli(capsys, "singlepoint", cif, "--potential", EMT)
    assert proc.returncode == 0 and "family python" in proc.stdout, proc.stderr
    out = tmp_path / "md"
    proc = cli(capsys, "md", cif, "--supercell", "2x2x2", "--potential", EMT, "--equilibrate", "20fs", "--production", "40fs",
               "--every", "10fs", "--out", out)
    assert proc.returncode == 0, proc.stderr
    import ase.io

    frames = ase.io.read(out / "snapshots.extxyz", ":")
    assert len(frames) == 4 and set(frames[0].get_chemical_symbols()) == {"Cu"}


def _cu_labels(folder: Path, stiffer: float = 1.1) -> Path:
    """Three rattled 2x2x2 fcc Cu cells labelled by EMT made ``stiffer`` times stiffer."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    db = folder / "cu.db"
    with ase.db.connect(db) as handle:
        for seed in range(3):
            atoms = load_structure(_cu_file(folder), "2x2x2")
            atoms.rattle(0.08, seed=seed)
            atoms.calc = EMT_CALCULATOR()
            labels = {"energy": stiffer * atoms.get_potential_energy(), "forces": stiffer * atoms.get_forces(), "stress": stiffer * atoms.get_stress()}
            atoms.calc = SinglePointCalculator(atoms, **labels)
            handle.write(atoms, key_value_pairs={"uid": f"cu-{seed}", "scf_converged": True})
    return db


def test_python_callable_validates_against_labels(tmp_path):
    """EMT labels made 10 % stiffer: the python: route sees the softening slope 1/1.1 like any model."""
    from mlip_exafs.validate import validate

    metrics = validate(EMT, _cu_labels(tmp_path), tmp_path / "val")
    assert metrics["softening_slope"] == pytest.approx(1 / 1.1, rel=1e-9)
    assert metrics["n_test_structures"] == 3 and metrics["stress_mae_gpa"] > 0


@pytest.mark.parametrize(
    "spec, needles",
    [
        ("python:no_such_module_xyz:Calc", ["cannot import module 'no_such_module_xyz'"]),
        ("python:ase.calculators.emt:NoSuchCalc", ["has no 'NoSuchCalc'"]),
        ("python:os:getcwd", ["returned a str, not an ASE calculator"]),
        ("python:math:pi", ["non-callable 'pi'"]),
        ("python:ase.calculators.emt", ["is not python:MODULE:CALLABLE"]),
        (EMT + "?asap_cutoff", ["key=value"]),
        ("python:ase.io:read?filename='no-such-file.xyz'", ["ase.io.read", "failed", "FileNotFoundError"]),
    ],
    ids=["module-missing", "callable-missing", "not-a-calculator", "not-callable", "no-callable", "bad-arguments", "call-fails"],
)
def test_bad_python_spec_is_one_line_error(capsys, tmp_path, spec, needles):
    assert_one_line_error(cli(capsys, "singlepoint", _cu_file(tmp_path), "--potential", spec), *needles)


class FaultyEMT(EMT_CALCULATOR):
    """ASE's EMT failing the way a user's calculator might; the python: route imports it from this module."""

    def __init__(self, fault: str = "none", **kwargs):
        super().__init__(**kwargs)
        self.fault = fault
        if fault == "no-stress":
            self.implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=ALL_CHANGES):
        if self.fault == "raises":
            raise RuntimeError("weights file is corrupt\nsecond line of the message")
        super().calculate(atoms, properties, system_changes)
        if self.fault == "nan-forces":
            self.results["forces"][0, 0] = np.nan
        elif self.fault == "forces-shape":
            self.results["forces"] = self.results["forces"][:, :2]
        elif self.fault == "stress-3x3":
            self.results["stress"] = voigt_6_to_full_3x3_stress(self.results["stress"])


FAULTY = "python:test_potentials:FaultyEMT"
COMPUTE_FAULTS = {
    "raises": ["its calculator failed computing", "of Cu32", "RuntimeError: weights file is corrupt", "fix the calculator"],
    "nan-forces": ["non-finite forces (NaN or inf)", "check its model"],
    "forces-shape": ["forces of shape (32, 2) for 32 atoms, expected (32, 3)"],
}


@pytest.mark.parametrize("fault", COMPUTE_FAULTS)
@pytest.mark.parametrize("verb", ["singlepoint", "md", "validate"])
def test_python_calculator_failing_at_compute_time_is_one_line_error(capsys, tmp_path, verb, fault):
    """Raises, NaN forces, wrong shape: one line naming the spec, from every verb, and nothing written."""
    spec, out = f"{FAULTY}?fault='{fault}'", tmp_path / "out"
    cif = _cu_file(tmp_path)
    args = {"singlepoint": ["singlepoint", cif, "--supercell", "2x2x2"],
            "md": ["md", cif, "--supercell", "2x2x2", "--equilibrate", "20fs", "--production", "40fs", "--every", "10fs", "--out", out],
            "validate": ["validate", "--test", _cu_labels(tmp_path), "--out", out]}[verb]
    assert_one_line_error(cli(capsys, *args, "--potential", spec), f"potential '{spec}'", *COMPUTE_FAULTS[fault])
    assert_nothing_written(out)


def test_python_calculator_without_stress_runs_until_stress_is_needed(capsys, tmp_path):
    """singlepoint and validate report no stress; only the barostat of an NPT MD needs it, and says so in one line."""
    from mlip_exafs.singlepoint import singlepoint
    from mlip_exafs.validate import validate

    spec, cif = f"{FAULTY}?fault='no-stress'", _cu_file(tmp_path)
    assert singlepoint(str(cif), spec, "2x2x2")["stress_gpa"] is None
    metrics = validate(spec, _cu_labels(tmp_path), tmp_path / "val")
    assert metrics["softening_slope"] == pytest.approx(1 / 1.1, rel=1e-9) and metrics["stress_mae_gpa"] is None
    proc = cli(capsys, "md", cif, "--supercell", "2x2x2", "--potential", spec, "--npt", "--equilibrate", "20fs", "--production", "20fs",
               "--every", "10fs", "--out", tmp_path / "md")
    assert_one_line_error(proc, f"potential '{spec}'", "does not compute stress", "without NPT")
    assert_nothing_written(tmp_path / "md")  # refused before the run starts, not at its first NPT step


def test_python_calculator_3x3_stress_is_read_as_voigt(tmp_path):
    cu = load_structure(_cu_file(tmp_path), "2x2x2")
    cu.rattle(0.05, seed=1)
    reference = cu.copy()
    reference.calc = EMT_CALCULATOR()
    cu.calc = calculator_for(f"{FAULTY}?fault='stress-3x3'", cu)
    np.testing.assert_allclose(cu.get_stress(voigt=True), reference.get_stress(voigt=True), atol=1e-12)


def test_python_callable_cannot_be_fine_tuned(capsys, tmp_path, data):
    out = tmp_path / "ft"
    proc = cli(capsys, "finetune", "--train", data, "--n", "1", "--potential", EMT, "--out", out)
    assert_one_line_error(proc, "cannot fine-tune", "registered families")
    assert_nothing_written(out)


# ---------------------------------------------------------------- devices


def test_device_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_then(monkeypatch):
    import torch

    monkeypatch.delenv("MLIP_EXAFS_DEVICE", raising=False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("MLIP_EXAFS_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"
    with pytest.raises(UserError, match="unknown device: 'device' tpu"):
        resolve_device("tpu")
    monkeypatch.setenv("MLIP_EXAFS_DEVICE", "tpu")
    with pytest.raises(UserError, match=r"unknown device: \$MLIP_EXAFS_DEVICE=tpu"):
        resolve_device(None)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_a_python_callable_chooses_its_own_device_whatever_the_setting(monkeypatch):
    """What an MD records as its device: a callable's is its own business (a CUDA setting on a CPU machine is no error)."""
    from mlip_exafs.potentials import CALLABLE_DEVICE, device_for

    monkeypatch.setenv("MLIP_EXAFS_DEVICE", "cuda")
    assert device_for("python:ase.calculators.emt:EMT") == CALLABLE_DEVICE
    assert device_for("chgnet", "cpu") == "cpu"
    with pytest.raises(UserError, match="unknown device: 'device' bogus"):  # a typo is still a typo
        device_for("python:ase.calculators.emt:EMT", "bogus")


def test_python_arguments_are_taken_as_written():
    """No URL decoding ('+' and '%20' are part of a path), each key once, no empty key."""
    from mlip_exafs.potentials.ase_callable import parse

    assert parse("python:m:f?model='/data/a+b%20c.pt'&n=2").kwargs == {"model": "/data/a+b%20c.pt", "n": 2}
    assert parse("python:m:f?x=a=b").kwargs == {"x": "a=b"}
    assert parse("python:m:f?a=false&b=TRUE&c=none&d='false'").kwargs == {"a": False, "b": True, "c": None, "d": "false"}
    with pytest.raises(UserError, match="gives x more than once"):
        parse("python:m:f?x=1&x=2")
    with pytest.raises(UserError, match="key=value"):
        parse("python:m:f?=3")


def test_chgnet_does_not_claim_elements_materials_project_lacks():
    """CHGNet embeds Z = 1–94, but MPtrj holds no Po, At, Rn, Fr or Ra: their embeddings are untrained."""
    from mlip_exafs.potentials import FAMILIES

    covered = FAMILIES["chgnet"].elements(None)
    assert {84, 85, 86, 87, 88}.isdisjoint(covered) and {1, 42, 74, 83, 89, 94} <= covered and len(covered) == 89


def test_threads_from_the_environment_must_be_a_positive_integer(monkeypatch):
    from mlip_exafs.potentials.runtime import threads_from_environment

    for bad in ("abc", "1.5", "0", "-2"):
        monkeypatch.setenv("MLIP_EXAFS_THREADS", bad)
        with pytest.raises(UserError, match=f"MLIP_EXAFS_THREADS={bad} is not a positive whole number"):
            threads_from_environment()
    monkeypatch.setenv("MLIP_EXAFS_THREADS", " 2 ")
    assert threads_from_environment() == 2
    monkeypatch.setenv("MLIP_EXAFS_THREADS", "")
    assert threads_from_environment() is None


def test_a_damaged_checkpoint_of_a_known_family_is_refused(capsys, tmp_path):
    import torch

    for name, payload in {"nomodel.pt": {"format": "mlip-exafs-chgnet-v1", "family": "chgnet"},
                          "badmodel.pt": {"family": "chgnet", "model": {"state_dict": {}}}}.items():
        torch.save(payload, tmp_path / name)
        assert_one_line_error(cli(capsys, "singlepoint", "w-bcc", "--potential", str(tmp_path / name), "--threads", "1"),
                              f"refusing checkpoint {tmp_path / name}", "family chgnet but its weights do not load")


def test_potential_names_empty_upper_case_suffix_and_step_folders(tmp_path):
    from mlip_exafs.potentials import is_checkpoint

    assert is_checkpoint(tmp_path / "MODEL.PT")
    with pytest.raises(UserError, match="unknown potential ''"):
        potential_id("")
    (tmp_path / "finetune-x").mkdir()
    (tmp_path / "finetune-x" / "model.pt").write_bytes(b"")
    with pytest.raises(UserError, match="model.pt is a fine-tuned model in that folder"):
        potential_id(tmp_path / "finetune-x")


def _study_yaml(folder: Path, extra: str) -> Path:
    path = folder / "study.yaml"
    path.write_text(f"name: t\nstructure: ws2\nabsorber: W\ndataset: ws2\n{extra}\n")
    return path


def test_study_takes_python_potentials_and_a_device(tmp_path):
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps

    config = load_study_config(_study_yaml(tmp_path, f"pristine: [chgnet, '{EMT}']\ndevice: cpu"))
    assert config.device == "cpu"
    names = [step.name for step in build_steps(config)]
    assert f"validate-{EMT}" in names and f"md-{EMT}" in names
    with pytest.raises(UserError, match="cannot name a step folder"):
        load_study_config(_study_yaml(tmp_path, "pristine: ['python:m:f?path=/data/x.pt']"))


def test_study_device_cuda_without_a_gpu_is_one_line_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "study"
    proc = cli(capsys, "study", _study_yaml(tmp_path, "pristine: [chgnet]\nfinetune: {n: []}"), "--out", out, "--device", "cuda")
    assert_one_line_error(proc, "torch sees no CUDA GPU")
    assert_nothing_written(out)


@pytest.mark.parametrize("verb", ["singlepoint", "md", "validate", "finetune", "study"])
def test_every_compute_verb_takes_device(capsys, verb):
    proc = cli(capsys, verb, "--help")
    assert "--device" in proc.stdout


PAGE_FAULTS_OF_AUTOGRAD_STEPS = """
import resource, sys
import torch
from mlip_exafs.potentials import set_torch_threads
if sys.argv[1] == "tuned":
    set_torch_threads(1)  # applies keep_freed_memory
else:
    torch.set_num_threads(1)
x, w = torch.randn(4000, 64, requires_grad=True), torch.randn(64, 512)
def step():  # forces-and-stress-like: a gradient, then the gradient of a function of it
    g, = torch.autograd.grad((torch.tanh(x @ w) @ w.T).pow(2).sum(), x, create_graph=True)
    g.pow(2).sum().backward()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not __import__("platform").libc_ver()[0] == "glibc", reason="glibc malloc only")
def test_compute_processes_keep_freed_memory_instead_of_faulting_it_in_again():
    """torch frees and reallocates tens of MB per step; by default glibc returns much of it to the kernel."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {mode: int(subprocess.run([sys.executable, "-c", PAGE_FAULTS_OF_AUTOGRAD_STEPS, mode], env=env, capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "tuned")}
    assert faults["tuned"] * 3 < faults["default"], faults


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A truncated checkpoint and one holding a pickled object (code could run on load)."""
    import torch

    root = tmp_path_factory.mktemp("ckpt")
    (root / "truncated.pt").write_bytes(b"PK\x03\x04 half a zip file")
    torch.save({"format": "mlip-exafs-chgnet-v1", "model": object()}, root / "pickled.pt")
    return {"truncated": root / "truncated.pt", "pickled": root / "pickled.pt"}


@pytest.mark.parametrize(
    "verb, potential, needles",
    [
        ("md", "mace-mp-0", ["unknown potential 'mace-mp-0'", "chgnet, chgnet-0.2.0"]),
        ("md", "missing.pt", ["checkpoint", "does not exist"]),
        ("validate", "mace-mp-0", ["unknown potential", "chgnet, chgnet-0.2.0"]),
    ],
    ids=["md-unknown-name", "md-missing-checkpoint", "validate-unknown-name"],
)
def test_unknown_or_missing_potential(capsys, tmp_path, data, verb, potential, needles):
    """Was a traceback (FileNotFoundError from the provenance hash) before the potential was checked."""
    out = tmp_path / "out"
    args = ["md", "ws2"] if verb == "md" else ["validate", "--test", data]
    potential = str(tmp_path / potential) if potential.endswith(".pt") else potential
    assert_one_line_error(cli(capsys, *args, "--potential", potential, "--out", out), *needles)
    assert_nothing_written(out)


@pytest.mark.parametrize("which", ["truncated", "pickled"])
@pytest.mark.parametrize("verb", ["validate", "md", "finetune"])
def test_model_checkpoint_corrupted_or_pickled_is_refused(capsys, tmp_path, data, checkpoints, which, verb):
    """torch.load(weights_only=True): a pickled object is refused, never executed."""
    out = tmp_path / "out"
    args = {"validate": ["validate", "--test", data], "md": ["md", "ws2"], "finetune": ["finetune", "--train", data, "--n", "1"]}[verb]
    proc = cli(capsys, *args, "--potential", checkpoints[which], "--out", out)
    assert_one_line_error(proc, "refusing checkpoint", "written by 'mlip-exafs finetune'")
    assert_nothing_written(out)  # finetune used to leave out/.work behind


def test_a_python_callable_is_validated_anew_each_time_and_one_structure_judges_no_energy(tmp_path, monkeypatch):
    """python: code can change under its name, so validate does not reuse its folder's result for it (a checkpoint or
    a name it does); a test set of one structure has an energy MAE of exactly 0 after the fitted offset: null."""
    import mlip_exafs.validate as validate_module

    calls = []
    real = validate_module.predict_labels
    monkeypatch.setattr(validate_module, "predict_labels", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    labels = _cu_labels(tmp_path)
    validate_module.validate(EMT, labels, tmp_path / "val")
    validate_module.validate(EMT, labels, tmp_path / "val")
    assert len(calls) == 2
    import ase.db

    one = tmp_path / "one.db"
    with ase.db.connect(labels) as src, ase.db.connect(one) as dst:
        row = next(src.select())
        dst.write(row.toatoms(), key_value_pairs=row.key_value_pairs)
    metrics = validate_module.validate(EMT, one, tmp_path / "one")
    assert metrics["energy_mae_mev_atom"] is None and metrics["force_mae_ev_a"] > 0


def test_a_validation_rerun_without_stress_leaves_no_old_stress_plot(tmp_path):
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip_exafs.validate import validate

    labels = _cu_labels(tmp_path)
    validate(EMT, labels, tmp_path / "val")
    assert (tmp_path / "val" / "parity_stress.png").exists()
    without = tmp_path / "nostress.db"
    with ase.db.connect(labels) as src, ase.db.connect(without) as dst:
        for row in src.select():
            atoms = row.toatoms()
            atoms.calc = SinglePointCalculator(atoms, energy=row.energy, forces=row.forces)
            dst.write(atoms, key_value_pairs=row.key_value_pairs)
    assert validate(EMT, without, tmp_path / "val")["stress_mae_gpa"] is None
    assert not (tmp_path / "val" / "parity_stress.png").exists()
