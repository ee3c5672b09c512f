"""Bad input, interruptions and trust: every error is one clear line, and nothing half-written is left.

The table in docs/robustness.md lists every bad input and the test that checks
it; this file holds the checks no other test file makes. Most run the CLI in
this process (:func:`cli`), which costs milliseconds instead of the ~4 s of a
fresh interpreter; the disk-full checks need a subprocess for their file-size
limit.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import assert_one_line_error
from fake_dft import write_fake_dataset
from mlip_exafs.errors import UserError

VASP_OUTCAR = Path(str(resources.files("ase.test") / "testdata" / "vasp" / "OUTCAR_example_1"))


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``mlip-exafs ARGS`` in this process: exit code, stdout and stderr as a user would see them."""
    from mlip_exafs.cli import main

    capsys.readouterr()
    saved = sys.argv
    sys.argv = ["mlip-exafs", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_nothing_written(path: Path) -> None:
    """The output folder or file was not created (or, for a folder, holds no file)."""
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        assert not files, files
    else:
        assert not path.exists(), path


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 training + 2 test structures labelled by stiffened CHGNet."""
    return write_fake_dataset(tmp_path_factory.mktemp("data"), n_train=3, n_test=2)


def _labelled_db(path: Path, kinds: list[str]) -> Path:
    """A small WS2 database; kinds: ok, nan-forces, inf-energy, unconverged."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip_exafs.structures import load_structure

    with ase.db.connect(path) as db:
        for i, kind in enumerate(kinds):
            atoms = load_structure("ws2")
            atoms.rattle(0.05, seed=i)
            forces = np.random.default_rng(i).normal(size=(len(atoms), 3))
            energy = -50.0
            if kind == "nan-forces":
                forces[0, 0] = np.nan
            if kind == "inf-energy":
                energy = np.inf
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=np.zeros(6))
            db.write(atoms, key_value_pairs={"uid": f"{kind}-{i}", "scf_converged": kind != "unconverged"})
    return path


@pytest.fixture(scope="module")
def bad_dbs(tmp_path_factory) -> dict[str, Path]:
    import ase.db

    root = tmp_path_factory.mktemp("bad")
    dbs = {
        "nan-forces": _labelled_db(root / "nan.db", ["ok", "nan-forces"]),
        "inf-energy": _labelled_db(root / "inf.db", ["inf-energy"]),
        "unconverged": _labelled_db(root / "unconverged.db", ["unconverged", "unconverged"]),
    }
    with ase.db.connect(root / "empty.db") as db:
        db.metadata = {"units": {}}
    dbs["empty"] = root / "empty.db"
    return dbs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A truncated checkpoint and one holding a pickled object (code could run on load)."""
    import torch

    root = tmp_path_factory.mktemp("ckpt")
    (root / "truncated.pt").write_bytes(b"PK\x03\x04 half a zip file")
    torch.save({"format": "mlip-exafs-chgnet-v1", "model": object()}, root / "pickled.pt")
    return {"truncated": root / "truncated.pt", "pickled": root / "pickled.pt"}


@pytest.fixture(scope="module")
def w_traj(tmp_path_factory) -> Path:
    """Two snapshots of a 3x3x3 bcc W supercell (half width 4.75 Å)."""
    import ase.io

    from mlip_exafs.structures import load_structure

    path = tmp_path_factory.mktemp("traj") / "w.extxyz"
    frames = []
    for seed in range(2):
        atoms = load_structure("w-bcc", "3x3x3")
        atoms.rattle(0.03, seed=seed)
        frames.append(atoms)
    ase.io.write(path, frames)
    return path


# ---------------------------------------------------------------- structures and potentials


def _structure_file(tmp_path: Path, kind: str) -> Path:
    import ase.io
    from ase import Atoms

    if kind == "missing":
        return tmp_path / "missing.cif"
    if kind == "corrupt":
        (tmp_path / "corrupt.cif").write_text("data_ws2\n_cell_length_a 3.15\nthis is not a CIF loop\n")
        return tmp_path / "corrupt.cif"
    if kind == "molecule":
        ase.io.write(tmp_path / "mol.xyz", Atoms("W2", positions=[[0, 0, 0], [2.2, 0, 0]]))
        return tmp_path / "mol.xyz"
    ase.io.write(tmp_path / "og.extxyz", Atoms("Og2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[3, 3, 3], pbc=True))
    return tmp_path / "og.extxyz"


@pytest.mark.parametrize(
    "kind, needles",
    [
        ("missing", ["neither a file nor a built-in", "check the path"]),
        ("corrupt", ["cannot read structure file", "CIF, POSCAR or extxyz"]),
        ("molecule", ["not a 3D periodic crystal", "full unit cell"]),
        ("uncovered-element", ["does not cover element(s) Og", "trained on them"]),
    ],
    ids=["missing", "corrupt", "molecule", "uncovered-element"],
)
def test_bad_structure_for_md(capsys, tmp_path, kind, needles):
    out = tmp_path / "md"
    assert_one_line_error(cli(capsys, "md", _structure_file(tmp_path, kind), "--out", out), *needles)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "verb, potential, needles",
    [
        ("md", "mace-mp-0", ["unknown potential 'mace-mp-0'", "chgnet, sevennet-0"]),
        ("md", "missing.pt", ["checkpoint", "does not exist"]),
        ("validate", "mace-mp-0", ["unknown potential", "chgnet, sevennet-0"]),
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--potential", "mace-mp-0"], "unknown potential 'mace-mp-0'; use one of: chgnet, sevennet-0"),
        (["--potential", "sevennet-0", "--freeze", "readout"], "SevenNet fine-tuning supports --freeze none only, not 'readout'"),
    ],
    ids=["unknown-potential", "sevennet-freeze"],
)
def test_finetune_of_a_potential_it_cannot_train_writes_nothing(capsys, tmp_path, data, args, message):
    out = tmp_path / "ft"
    proc = cli(capsys, "finetune", "--train", data, "--n", "1", *args, "--out", out)
    assert_one_line_error(proc, message)
    assert_nothing_written(out)


# ---------------------------------------------------------------- datasets


@pytest.mark.parametrize(
    "kind, needles",
    [
        ("nan-forces", ["NaN or infinite labels", "remove it or relabel it"]),
        ("inf-energy", ["NaN or infinite labels", "inf-energy-0"]),
        ("unconverged", ["no usable labelled structures", "label or import"]),
        ("empty", ["no usable labelled structures", "label or import"]),
    ],
    ids=["nan-forces", "inf-energy", "unconverged", "empty"],
)
def test_untrustworthy_or_empty_labels(capsys, tmp_path, bad_dbs, kind, needles):
    for args in (["validate", "--test", bad_dbs[kind]], ["finetune", "--train", bad_dbs[kind], "--n", "1"]):
        out = tmp_path / args[0]
        assert_one_line_error(cli(capsys, *args, "--out", out), *needles)
        assert_nothing_written(out)


def test_unconverged_rows_are_never_used(bad_dbs, tmp_path):
    """A db with converged and unconverged rows: only the converged ones are loaded."""
    import ase.db

    from mlip_exafs.dataset import load_structures

    mixed = shutil.copy(bad_dbs["unconverged"], tmp_path / "mixed.db")
    _labelled_db(Path(mixed), ["ok"])
    with ase.db.connect(mixed) as db:
        assert db.count() == 3
    assert [a.info["uid"] for a in load_structures(mixed)] == ["ok-0"]


def test_scf_convergence_is_read_from_the_cp2k_output(tmp_path):
    from mlip_exafs.cp2k import scf_converged

    out = tmp_path / "cp2k.out"
    out.write_text("  *** SCF run converged in    12 steps ***\n")
    assert scf_converged(out)
    with open(out, "a") as fh:
        offset = fh.tell()
        fh.write("  *** SCF run NOT converged ***\n")
    assert not scf_converged(out) and not scf_converged(out, offset)
    out.write_text("CP2K started, then was killed\n")
    assert not scf_converged(out)  # no verdict at all is not convergence


@pytest.mark.parametrize(
    "args, needles",
    [
        (["dataset", "info", "nope"], ["unknown dataset 'nope'", "shipped name"]),
        (["dataset", "info", "{empty_folder}"], ["has neither train.db nor test.db", "label or import"]),
        (["validate", "--test", "{train_only}", "--out", "{out}"], ["has no test split", "label or import a test set"]),
        (["finetune", "--train", "{data}", "--n", "4", "--out", "{out}"], ["has 3 usable structures but n = 4", "lower --n"]),
        (["learning-curve", "--train", "{data}", "--test", "{data}", "--n", "1,4", "--out", "{out}"], ["asks for [4]", "label more"]),
    ],
    ids=["unknown-name", "folder-without-dbs", "no-test-split", "finetune-n-too-large", "learning-curve-n-too-large"],
)
def test_missing_or_too_small_datasets(capsys, tmp_path, data, args, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "train-only").mkdir()
    shutil.copy(data / "train.db", tmp_path / "train-only" / "train.db")
    names = {"empty_folder": tmp_path / "empty", "train_only": tmp_path / "train-only", "data": data, "out": tmp_path / "out"}
    assert_one_line_error(cli(capsys, *[a.format(**names) for a in args]), *needles)
    assert_nothing_written(tmp_path / "out")


@pytest.fixture
def overlapping(data, tmp_path) -> Path:
    """A dataset whose test split is a copy of its train split."""
    folder = tmp_path / "overlap"
    folder.mkdir()
    shutil.copy(data / "train.db", folder / "train.db")
    shutil.copy(data / "train.db", folder / "test.db")
    return folder


def test_duplicates_between_train_and_test_are_refused_by_learning_curve(capsys, tmp_path, data, overlapping):
    out = tmp_path / "lc"
    proc = cli(capsys, "learning-curve", "--train", data, "--test", overlapping, "--n", "1", "--seeds", "0", "--epochs", "1", "--out", out)
    assert_one_line_error(proc, "3 structure(s) appear in both the training pool and the test set", "sampled separately")
    assert_nothing_written(out)


def test_duplicates_between_train_and_test_are_refused_by_study(capsys, tmp_path, overlapping):
    config = {"name": "dup", "structure": "ws2", "absorber": "W", "dataset": str(overlapping), "pristine": ["chgnet"],
              "finetune": {"n": [1], "seeds": [0], "epochs": 1}}
    (tmp_path / "dup.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    assert_one_line_error(cli(capsys, "study", tmp_path / "dup.yaml", "--out", out), "both the training pool and the test set")
    assert_nothing_written(out)


# ---------------------------------------------------------------- CP2K


FAKE_CP2K = """#!/bin/sh
# Stands in for cp2k_shell: answers the version and ASE's handshake, then dies
# as if killed (kill -9, out of memory, a lost MPI rank) when work starts.
if [ "$1" = "--version" ]; then echo "CP2K version 2024.1"; exit 0; fi
{startup}
echo "* READY"
read line
echo "CP2K Shell Version: 6.0"
echo "* READY"
read line
echo "* READY"
read line
kill -9 $$
"""


@pytest.mark.parametrize("dies, needle", [("mid-run", "CP2K failed on structure w-0"), ("at-start", "CP2K did not start for structure w-0")],
                         ids=["mid-run", "at-start"])
def test_cp2k_killed_mid_run_is_a_one_line_error_and_no_row(capsys, tmp_path, monkeypatch, dies, needle):
    """No real CP2K: a script on PATH plays a cp2k_shell that dies. Nothing is stored for the structure."""
    import ase.io

    from mlip_exafs.cp2k import cp2k_version
    from mlip_exafs.label import finished_uids
    from mlip_exafs.structures import load_structure

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cp2k_shell"
    fake.write_text(FAKE_CP2K.format(startup="kill -9 $$" if dies == "at-start" else ""))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    atoms = load_structure("w-bcc")
    atoms.info["uid"] = "w-0"
    ase.io.write(tmp_path / "s.extxyz", [atoms])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cp2k_version.cache_clear()
    try:
        proc = cli(capsys, "label", tmp_path / "s.extxyz", "--db", tmp_path / "labels.db", "--mpi-ranks", "1")
    finally:
        cp2k_version.cache_clear()
    assert_one_line_error(proc, needle)
    assert finished_uids(tmp_path / "labels.db") == set()  # a rerun labels w-0 again


def test_shell_command_quotes_the_executable(monkeypatch):
    """ASE starts cp2k_shell through a shell: the one path in that string is quoted."""
    from mlip_exafs import cp2k

    monkeypatch.setattr(cp2k, "cp2k_executable", lambda: "/opt/my cp2k/cp2k_shell")
    assert cp2k.shell_command(1).endswith(" OMP_NUM_THREADS=1 '/opt/my cp2k/cp2k_shell'")


def test_no_shell_strings_in_the_package():
    """Subprocesses get argument lists; no user path is ever pasted into a shell command."""
    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    offenders = [f"{path.name}:{n}" for path in package.rglob("*.py") for n, line in enumerate(path.read_text().splitlines(), 1)
                 if any(bad in line for bad in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"))]
    assert offenders == []


# ---------------------------------------------------------------- EXAFS


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--rmax", "7"], ["exceeds half the supercell width (4.75 Å)", "--rmax ≤ 4.75"]),
        (["--absorber", "Mo"], ["absorber 'Mo' is not in the structure", "choose --absorber"]),
        (["--absorber", "Xx"], ["not a chemical element symbol"]),
        (["--edge", "L7"], ["edge 'L7'", "use one of K, L1"]),
        (["--absorber", "H", "--edge", "L3"], ["no L3 edge"]),
        (["--engine", "warp"], ["'engine'", "'fast' or 'feff'"]),
    ],
    ids=["rmax", "absorber-not-in-structure", "absorber-not-an-element", "edge-unknown", "edge-not-of-element", "engine-unknown"],
)
def test_bad_exafs_options(capsys, tmp_path, w_traj, args, needles):
    out = tmp_path / "exafs"
    assert_one_line_error(cli(capsys, "exafs", w_traj, "--out", out, *args), *needles)
    assert_nothing_written(out)


def test_compare_without_a_theory_spectrum(capsys, tmp_path):
    out = tmp_path / "cmp"
    proc = cli(capsys, "compare", tmp_path / "chi.csv", "--experiment", tmp_path / "w.xdi", "--out", out)
    assert_one_line_error(proc, "chi.csv does not exist", "run 'mlip-exafs exafs' first")
    assert_nothing_written(out)


# ---------------------------------------------------------------- configs and options


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


@pytest.mark.parametrize(
    "setup, args, needles",
    [
        ("cp2k-config", ["label", "{s}", "--db", "{db}", "--config", "{cfg}"], ["'cutoff_ry'", "fix that value"]),
        ("", ["label", "{tmp}/missing.extxyz", "--db", "{db}"], ["does not exist", "mlip-exafs sample"]),
        ("duplicate-uids", ["label", "{s}", "--db", "{db}"], ["duplicate 'uid'", "unique uid"]),
        ("", ["import", "{tmp}/x.extxyz", "--db", "{db}", "--stress-units", "psi"], ["unknown --stress-units 'psi'"]),
        ("", ["finetune", "--train", "ws2", "--n", "1", "--lr", "-1", "--out", "{out}"], ["'learning_rate'", "greater than 0"]),
        ("", ["finetune", "--train", "ws2", "--n", "1", "--freeze", "half", "--out", "{out}"], ["'freeze'", "'energy-scale'"]),
        ("", ["learning-curve", "--train", "ws2", "--test", "ws2", "--n", "0,1", "--out", "{out}"], ["contains 0"]),
        ("", ["learning-curve", "--train", "ws2", "--test", "ws2", "--seeds", "a", "--out", "{out}"], ["--seeds 'a'"]),
        ("", ["report", "{out}"], ["has no summary.json", "mlip-exafs study"]),
        ("missing-experiment", ["study", "{tmp}/study.yaml", "--out", "{out}"], ["experimental spectrum", "experiment.file"]),
    ],
    ids=["label-config-wrong-type", "label-structures-missing", "label-duplicate-uids", "import-stress-units", "finetune-negative-lr",
         "finetune-freeze-unknown", "learning-curve-n-zero", "learning-curve-seeds-not-numbers", "report-without-study",
         "study-experiment-missing"],
)
def test_bad_options_and_configs(capsys, tmp_path, setup, args, needles):
    import ase.io

    from mlip_exafs.structures import load_structure

    s = tmp_path / "s.extxyz"
    frames = [load_structure("w-bcc"), load_structure("w-bcc")]
    if setup == "duplicate-uids":
        for atoms in frames:
            atoms.info["uid"] = "same"
    ase.io.write(s, frames)
    (tmp_path / "cp2k.yaml").write_text("cutoff_ry: big\n")
    if setup == "missing-experiment":
        config = {"name": "x", "structure": "ws2", "absorber": "W", "dataset": "ws2", "experiment": {"file": "nope.xdi"}}
        (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    names = {"s": s, "db": tmp_path / "labels.db", "cfg": tmp_path / "cp2k.yaml", "tmp": tmp_path, "out": tmp_path / "out"}
    assert_one_line_error(cli(capsys, *[a.format(**names) for a in args]), *needles)
    assert not (tmp_path / "labels.db").exists()
    assert_nothing_written(tmp_path / "out")


# ---------------------------------------------------------------- disk full


def _file_size_limit(max_bytes: int):
    def apply() -> None:  # in the child: writes past max_bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def _run_limited(args: list, max_bytes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MLIP_EXAFS_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mlip_exafs", *map(str, args)], capture_output=True, text=True, env=env,
                          preexec_fn=_file_size_limit(max_bytes), timeout=600)


def test_disk_full_while_writing_outputs(tmp_path, w_traj):
    """A real failed write (EFBIG under a file-size limit): one line, no temporary file, no truncated output."""
    out = tmp_path / "analysis"
    proc = _run_limited(["analyze", w_traj, "--out", out], max_bytes=2000)
    assert_one_line_error(proc, "could not write", "file too large", "free disk space")
    assert no_temp_files(out)
    for path in out.glob("*"):  # whatever was written before the failure is complete
        assert path.stat().st_size < 2000


def test_disk_full_while_writing_a_database(tmp_path):
    db = tmp_path / "d" / "train.db"
    proc = _run_limited(["import", VASP_OUTCAR, "--db", db], max_bytes=2000)
    assert_one_line_error(proc, f"could not write {db}", "free disk space")
    assert not db.exists()  # the database this import created is removed again


def test_atomic_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from mlip_exafs import files

    target = tmp_path / "result.json"
    files.write_json(target, {"old": 1})

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", no_space)
    with pytest.raises(UserError, match="could not write .*result.json: No space left on device; free disk space") as err:
        files.write_json(target, {"new": 2})
    assert "\n" not in str(err.value)
    assert files.read_json(target) == {"old": 1} and no_temp_files(tmp_path)


def test_atomic_write_gives_the_permissions_of_a_plain_new_file(tmp_path):
    """mkstemp's 0600 must not leak into outputs that a group shares."""
    from mlip_exafs import files

    files.write_text(tmp_path / "out.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_disk_full_during_md_then_rerun_resumes(tmp_path, monkeypatch):
    """Snapshots cannot be appended: a one-line error; after space is freed the same command finishes the run."""
    import ase.io

    from mlip_exafs.md import MdSettings, read_thermo, run_md

    settings = MdSettings(structure="ws2", equilibration_fs=0, production_fs=40, snapshot_every_fs=10, checkpoint_every_fs=10)
    real_write = ase.io.write

    def full_disk(target, *args, **kwargs):
        if kwargs.get("format") == "extxyz" and not isinstance(target, (str, Path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(target, *args, **kwargs)

    monkeypatch.setattr(ase.io, "write", full_disk)
    with pytest.raises(UserError, match="No space left on device.*rerun the same command to resume") as err:
        run_md(settings, tmp_path, show_progress=False)
    assert "\n" not in str(err.value) and no_temp_files(tmp_path)
    monkeypatch.setattr(ase.io, "write", real_write)
    run_md(settings, tmp_path, show_progress=False)
    assert [f.info["step"] for f in ase.io.read(tmp_path / "snapshots.extxyz", ":")] == [5, 10, 15, 20]
    assert list(read_thermo(tmp_path / "thermo.csv")["step"]) == [0, 5, 10, 15, 20]


# ---------------------------------------------------------------- determinism


def test_sample_is_deterministic_for_a_seed(tmp_path):
    from mlip_exafs.sample import SampleSpec, sample

    spec = SampleSpec(supercell="1x1x1", temperatures_k=[300.0], snapshots_per_temperature=2, strained=1, rattled=2,
                      equilibration_fs=10, interval_fs=4, threads=1)
    sample(spec, tmp_path / "a.extxyz")
    sample(spec, tmp_path / "b.extxyz")
    sample(spec.model_copy(update={"seed": 1}), tmp_path / "c.extxyz")
    assert (tmp_path / "a.extxyz").read_text() == (tmp_path / "b.extxyz").read_text()
    assert (tmp_path / "a.extxyz").read_text() != (tmp_path / "c.extxyz").read_text()


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 300) -> None:
    import time

    deadline = time.time() + timeout_s
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_finetune_killed_then_rerun_equals_an_uninterrupted_run(tmp_path, data):
    """kill -9 mid-training, rerun: it resumes after the last finished epoch and ends with the same weights, bit for
    bit, and the same validation numbers as a run never stopped.

    The two complete runs also show that fine-tuning twice with one seed is deterministic.
    """
    import torch

    from mlip_exafs.files import read_json
    from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune
    from mlip_exafs.potentials import load_chgnet_checkpoint
    from mlip_exafs.validate import validate

    settings = FinetuneSettings(train=str(data), n=2, seed=3, recipe=FinetuneRecipe(epochs=6))
    finetune(settings, tmp_path / "a")
    cmd = [sys.executable, "-m", "mlip_exafs", "finetune", "--train", str(data), "--n", "2", "--seed", "3", "--epochs", "6", "--out", str(tmp_path / "b")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MLIP_EXAFS_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _kill_when(proc, lambda: any((tmp_path / "b" / ".work" / "trainer").glob("epoch*.pth.tar")))  # after the first epoch
    assert not (tmp_path / "b" / "finetune.json").exists()
    finetune(settings, tmp_path / "b")
    assert 1 <= read_json(tmp_path / "b" / "finetune.json")["resumed_after_epoch"] < 6
    weights = [load_chgnet_checkpoint(tmp_path / run / "model.pt").state_dict() for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    metrics = [validate(tmp_path / run / "model.pt", data, tmp_path / run / "validate") for run in ("a", "b")]
    assert metrics[0] == metrics[1]
    assert read_json(tmp_path / "a" / "validate" / "validate.json") == read_json(tmp_path / "b" / "validate" / "validate.json")
