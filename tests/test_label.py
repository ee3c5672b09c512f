"""CP2K labelling: a real DFT calculation on a tiny cell, force check, resume after kill -9."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, cli, requires_cp2k, run_cli
from fake_dft import fake_cp2k_shell
from mlip_exafs.cp2k import Cp2kSettings, kpoint_mesh, make_calculator
from mlip_exafs.errors import UserError
from mlip_exafs.label import WORKDIR_PARENT, finished_uids, group_by_cell, new_workdir, remove_stale_workdirs
from mlip_exafs.processes import process_alive
from mlip_exafs.structures import load_structure

# A cheap but real level of theory: 2-atom bcc W, 2x2x2 k-points, 200 Ry.
TINY = Cp2kSettings(cutoff_ry=200, rel_cutoff_ry=30, eps_default=1e-8, kspacing_inv_a=1.0, added_mos=10)


def _tiny_config(tmp_path):
    import yaml

    path = tmp_path / "cp2k.yaml"
    path.write_text(yaml.safe_dump(TINY.model_dump()))
    return path


def _rattled_w(n, seed=0):
    import ase.io  # noqa: F401

    frames = []
    for i in range(n):
        atoms = load_structure("w-bcc")
        atoms.rattle(0.08, seed=seed + i)
        atoms.info["uid"] = f"w-tiny-{i}"
        frames.append(atoms)
    return frames


def test_kpoint_mesh_from_spacing():
    assert kpoint_mesh(load_structure("ws2"), 0.26) == (9, 9, 2)
    assert kpoint_mesh(load_structure("ws2", "3x3x1"), 0.26) == (3, 3, 2)


@pytest.mark.slow
@requires_cp2k
def test_cp2k_force_matches_finite_difference(tmp_path):
    atoms = _rattled_w(1, seed=3)[0]

    def energy_forces(a, name):
        calc = make_calculator(TINY, a, tmp_path / name, mpi_ranks=1)
        a.calc = calc
        try:
            return a.get_potential_energy(), a.get_forces()
        finally:
            calc.close()

    _, forces = energy_forces(atoms.copy(), "0")
    h = 0.005
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[0, 0] += h
    minus.positions[0, 0] -= h
    fd = -(energy_forces(plus, "p")[0] - energy_forces(minus, "m")[0]) / (2 * h)
    assert abs(forces[0, 0]) > 0.5
    assert abs(fd - forces[0, 0]) < 0.01 * abs(forces[0, 0])


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


@pytest.mark.slow
@requires_cp2k
def test_label_is_resumable_after_kill_9(tmp_path):
    import ase.db
    import ase.io

    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, _rattled_w(3))
    db = tmp_path / "labels.db"
    config = _tiny_config(tmp_path)
    cmd = [sys.executable, "-m", "mlip_exafs", "label", str(structures), "--db", str(db), "--config", str(config), "--mpi-ranks", "1"]
    log = open(tmp_path / "label.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 600
    while len(finished_uids(db)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "label.log").read_text()
    cp2k_pids = _descendants(proc.pid)
    assert cp2k_pids
    os.kill(proc.pid, signal.SIGKILL)  # only the labelling process, as `kill -9 PID` would
    proc.wait()
    deadline = time.time() + 30  # SIGKILL is delivered at once; a loaded machine may take seconds to tear MPI's orted down
    while [pid for pid in cp2k_pids if process_alive(pid)] and time.time() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in cp2k_pids if process_alive(pid)], "CP2K outlived the killed labelling run"
    done_before = finished_uids(db)
    assert 1 <= len(done_before) < 3
    with ase.db.connect(db) as conn:
        first_rows = {r.uid: (r.id, r.energy) for r in conn.select()}

    killed_workdirs = [d for d in WORKDIR_PARENT.glob("mlx-cp2k-*") if _owner(d) == proc.pid]
    assert killed_workdirs, "the killed run's CP2K folder should still be there"

    rerun = run_cli("label", str(structures), "--db", str(db), "--config", str(config), "--mpi-ranks", "1", check=True)
    progress = [line for line in rerun.stderr.splitlines() if line.startswith("CP2K labelling")]
    assert progress[-1].startswith(f"CP2K labelling → {db}: 3/3, "), rerun.stderr  # the resumed run counts the whole file
    assert not [d for d in killed_workdirs if d.exists()], "the rerun should remove the killed run's CP2K folder"
    with ase.db.connect(db) as conn:
        rows = list(conn.select())
        assert sorted(r.uid for r in rows) == ["w-tiny-0", "w-tiny-1", "w-tiny-2"]
        for r in rows:  # finished rows were not recomputed
            if r.uid in first_rows:
                assert (r.id, r.energy) == first_rows[r.uid]
            assert r.scf_converged and r.dft_code == "CP2K" and r.settings_hash == TINY.settings_hash()
            assert np.isfinite(r.forces).all() and r.stress.shape == (6,)
        assert conn.metadata["settings"]["cutoff_ry"] == 200
    # a rerun has nothing to do
    out = run_cli("label", str(structures), "--db", str(db), "--config", str(config), "--mpi-ranks", "1", check=True).stdout
    assert "labelled 0 new, 3 already done" in out


def _owner(workdir: Path) -> int | None:
    try:
        return int((workdir / "owner.pid").read_text())
    except (OSError, ValueError):
        return None


def test_stale_cp2k_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "mlx-cp2k-stale"
    stale.mkdir()
    (stale / "owner.pid").write_text(str(dead.pid))
    (stale / "cp2k-RESTART.kp").write_bytes(b"wavefunction")
    unowned = tmp_path / "mlx-cp2k-unowned"  # made by an older version: not ours to judge
    unowned.mkdir()
    mine = new_workdir(tmp_path)  # also runs the cleanup
    assert not stale.exists()
    assert unowned.exists() and mine.exists() and _owner(mine) == os.getpid()
    assert remove_stale_workdirs(tmp_path) == []


def test_a_cp2k_folder_of_a_killed_owner_not_yet_reaped_is_stale(tmp_path):
    """A zombie still answers kill(pid, 0), but it will never clean up after itself."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "mlx-cp2k-zombie"
        folder.mkdir()
        (folder / "owner.pid").write_text(str(owner.pid))
        assert remove_stale_workdirs(tmp_path) == []  # alive
        owner.kill()
        deadline = time.time() + 10
        while process_alive(owner.pid) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(owner.pid, 0)  # not waited on: still in the process table, a zombie
        assert remove_stale_workdirs(tmp_path) == [folder]
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.slow
@requires_cp2k
def test_unconverged_scf_is_recorded_and_never_used(tmp_path):
    import ase.io

    from mlip_exafs.dataset import dataset_info
    from mlip_exafs.errors import UserError
    from mlip_exafs.dataset import load_structures
    from mlip_exafs.label import label_structures

    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, _rattled_w(1))
    db = tmp_path / "labels.db"
    label_structures(structures, db, TINY.model_copy(update={"max_scf": 2}), mpi_ranks=1)
    info = dataset_info(db)
    assert info["n_all"] == 1 and info["n_all_not_converged"] == 1
    with pytest.raises(UserError, match="no usable labelled structures"):
        load_structures(db)


def test_cp2k_missing_from_path_is_a_clear_error(tmp_path):
    import ase.io

    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, _rattled_w(1))
    proc = run_cli("label", str(structures), "--db", str(tmp_path / "x.db"), env={"PATH": os.path.dirname(sys.executable)})
    assert_one_line_error(proc, "cp2k_shell", "apt-get install cp2k")
    assert not (tmp_path / "x.db").exists()


@requires_cp2k
def test_mixing_settings_in_one_database_is_refused(tmp_path):
    from mlip_exafs.errors import UserError
    from mlip_exafs.label import ensure_settings

    ensure_settings(tmp_path / "a.db", TINY)
    with pytest.raises(UserError, match="other CP2K settings"):
        ensure_settings(tmp_path / "a.db", TINY.model_copy(update={"cutoff_ry": 300}))


def test_a_solver_setting_continues_a_database(tmp_path):
    """The Broyden history changes the SCF's path, not its label: same hash, so a dataset can go on faster."""
    from mlip_exafs.cp2k import input_template
    from mlip_exafs.label import ensure_settings

    faster = TINY.model_copy(update={"broyden_nbuffer": 8})
    assert faster.settings_hash() == TINY.settings_hash()
    assert "NBUFFER 8" in input_template(faster, (1, 1, 1)) and "NBUFFER 4" in input_template(TINY, (1, 1, 1))
    ensure_settings(tmp_path / "a.db", TINY)
    ensure_settings(tmp_path / "a.db", faster)  # no error
    # a study's label steps: unchanged parameters (and hashes) unless the solver setting is given
    assert "broyden_nbuffer" not in TINY.as_params() and faster.as_params()["broyden_nbuffer"] == 8


@pytest.mark.slow
@requires_cp2k
def test_rows_record_their_solver_and_scf_steps_and_the_solver_keeps_the_label(tmp_path):
    import ase.db
    import ase.io

    from mlip_exafs.label import label_structures

    ase.io.write(tmp_path / "one.extxyz", _rattled_w(1, seed=3))
    rows = {}
    for nbuffer in (4, 8):
        db = tmp_path / f"nbuffer{nbuffer}.db"
        label_structures(tmp_path / "one.extxyz", db, TINY.model_copy(update={"broyden_nbuffer": nbuffer}), mpi_ranks=1)
        with ase.db.connect(db) as conn:
            (rows[nbuffer],) = conn.select()
    for nbuffer, row in rows.items():
        assert row.broyden_nbuffer == nbuffer and row.scf_converged and row.scf_steps >= 2
    assert abs(rows[4].energy - rows[8].energy) < 1e-4
    assert np.abs(rows[4].forces - rows[8].forces).max() < 2e-3


@pytest.mark.slow
@requires_cp2k
def test_reusing_cp2k_between_structures_gives_the_fresh_result(tmp_path):
    """Consecutive structures of one cell reuse CP2K's wavefunction: same labels as a cold start."""
    import ase.io

    from mlip_exafs.dataset import load_structures
    from mlip_exafs.label import label_structures

    frames = _rattled_w(2, seed=7)
    ase.io.write(tmp_path / "both.extxyz", frames)
    ase.io.write(tmp_path / "second.extxyz", frames[1:])
    label_structures(tmp_path / "both.extxyz", tmp_path / "both.db", TINY, mpi_ranks=1)
    label_structures(tmp_path / "second.extxyz", tmp_path / "second.db", TINY, mpi_ranks=1)
    reused = {a.info["uid"]: a for a in load_structures(tmp_path / "both.db")}["w-tiny-1"]
    (fresh,) = load_structures(tmp_path / "second.db")
    assert abs(reused.get_potential_energy() - fresh.get_potential_energy()) < 1e-4
    assert np.abs(reused.get_forces() - fresh.get_forces()).max() < 2e-3
    assert np.abs(reused.get_stress() - fresh.get_stress()).max() < 2e-5  # eV/Å^3 (0.003 GPa)


@pytest.mark.slow
@requires_cp2k
def test_two_labellers_share_one_database(tmp_path):
    """One labeller from the start, one from the end (--reverse): every structure labelled exactly once."""
    import ase.db
    import ase.io

    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, _rattled_w(4, seed=10))
    db, config = tmp_path / "labels.db", _tiny_config(tmp_path)
    run_cli("label", str(structures), "--db", str(db), "--config", str(config), "--mpi-ranks", "1", "--limit", "1", check=True)
    cmd = [sys.executable, "-m", "mlip_exafs", "label", str(structures), "--db", str(db), "--config", str(config), "--mpi-ranks", "1"]
    procs = [subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for extra in ([], ["--reverse"])]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    with ase.db.connect(db) as conn:
        assert sorted(r.uid for r in conn.select()) == [f"w-tiny-{i}" for i in range(4)]


def test_structures_sharing_a_cell_are_labelled_one_after_another():
    """Fewer CP2K cold starts: the cell groups come in order of first appearance, file order inside each."""
    ideal = load_structure("w-bcc").repeat(2)
    strained = ideal.copy()
    strained.set_cell(ideal.cell * 1.03, scale_atoms=True)
    frames = []
    for i, base in enumerate([ideal, strained, ideal, strained, ideal]):
        atoms = base.copy()
        atoms.info["uid"] = f"s{i}"
        frames.append(atoms)
    assert [a.info["uid"] for a in group_by_cell(frames)] == ["s0", "s2", "s4", "s1", "s3"]





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
    fake.write_text(fake_cp2k_shell(startup="kill -9 $$" if dies == "at-start" else "", at_work="kill -9 $$"))
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


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_second_labeller_in_the_same_direction_is_refused(capsys, tmp_path, reverse):
    """One labeller per --db and direction (a forward and a --reverse one meet in the middle); a second is refused before CP2K starts."""
    import ase.io

    from mlip_exafs.files import writer_lock
    from mlip_exafs.structures import load_structure

    structures = tmp_path / "s.extxyz"
    atoms = load_structure("w-bcc")
    atoms.info["uid"] = "w-0"
    ase.io.write(structures, atoms)
    db = tmp_path / "d" / "train.db"
    direction = "reverse" if reverse else "forward"
    with writer_lock(db.parent, "label", f".train.db.{direction}.lock", "--db"):
        proc = cli(capsys, "label", structures, "--db", db, *(["--reverse"] if reverse else []))
        assert_one_line_error(proc, f"another label (pid {os.getpid()}) is running into", "--reverse")
    assert not db.parent.exists()


@pytest.mark.parametrize("kind", ["below-a-file", "a-folder"])
def test_db_that_cannot_be_written_is_one_line_error(capsys, tmp_path, kind):
    import ase.io

    from mlip_exafs.structures import load_structure

    structures = tmp_path / "s.extxyz"
    atoms = load_structure("w-bcc")
    atoms.info["uid"] = "w-0"
    ase.io.write(structures, atoms)
    blocker = tmp_path / "taken"
    if kind == "below-a-file":
        blocker.write_text("keep me")
    else:
        blocker.mkdir()
    db = blocker / "train.db" if kind == "below-a-file" else blocker
    proc = cli(capsys, "label", structures, "--db", db)
    assert_one_line_error(proc, f"database file {db}", "is a file, not a folder" if kind == "below-a-file" else "is a folder, not a file")
    assert (blocker.read_text() == "keep me") if kind == "below-a-file" else not any(blocker.iterdir())


def test_a_structure_edited_after_labelling_is_not_skipped_by_its_uid(tmp_path):
    """Resuming skips finished uids; a structures file re-sampled or edited since (same uid, other geometry) is refused."""
    from ase.build import bulk

    from mlip_exafs.label import check_same_geometries, labelled_geometries, write_row

    atoms = bulk("W", "bcc", a=3.165, cubic=True)
    atoms.info["uid"] = "w-0"
    db = tmp_path / "train.db"
    write_row(db, atoms, -10.0, np.zeros((2, 3)), None, {"uid": "w-0", "scf_converged": True})
    labelled = labelled_geometries(db)
    check_same_geometries([atoms], labelled, tmp_path / "s.extxyz", db)
    edited = bulk("W", "bcc", a=3.30, cubic=True)
    edited.info["uid"] = "w-0"
    with pytest.raises(UserError, match="1 structure\\(s\\) of .* \\(first: w-0\\) differ from the rows of the same uid"):
        check_same_geometries([edited], labelled, tmp_path / "s.extxyz", db)


def test_a_nonmagnetic_acknowledgement_is_recorded_in_the_database(tmp_path, monkeypatch):
    """Out of the settings hash (it changes no CP2K input), but a reader of the labels learns the choice was made."""
    import ase.db

    import mlip_exafs.label as label_module
    from mlip_exafs.label import ensure_settings

    monkeypatch.setattr(label_module, "cp2k_version", lambda: "2023.1")
    ensure_settings(tmp_path / "fe.db", Cp2kSettings(nonmagnetic=True))
    ensure_settings(tmp_path / "w.db", Cp2kSettings())
    with ase.db.connect(tmp_path / "fe.db") as fe, ase.db.connect(tmp_path / "w.db") as w:
        assert fe.metadata["nonmagnetic_acknowledged"] is True and "nonmagnetic_acknowledged" not in w.metadata
        assert fe.metadata["settings_hash"] == w.metadata["settings_hash"]


@pytest.mark.slow
@requires_cp2k
def test_spin_polarised_labels_of_bcc_iron_are_magnetic_and_below_the_restricted_ones(tmp_path):
    """One bcc Fe atom at a cheap level: the spin-polarised row holds a moment near PBE's 2.2 μB and an energy well
    below the spin-restricted label of the same structure (PBE: ≈ 0.6 eV/atom); both SCFs converge."""
    import ase.db
    import ase.io
    from ase.build import bulk

    from mlip_exafs.label import label_structures

    atoms = bulk("Fe", "bcc", a=2.83)
    atoms.set_initial_magnetic_moments(None)  # ASE's bulk Fe comes with its own; the element's moment is the start here
    atoms.info["uid"] = "fe-bcc"
    ase.io.write(tmp_path / "fe.extxyz", atoms)
    cheap = TINY.model_dump() | {"mixing_alpha": 0.1, "broyden_nbuffer": 8}  # a magnetic metal's SCF needs gentler mixing
    energies = {}
    for name, spin in (("spin", {"magnetic_moments_mub": {"Fe": 3.0}}), ("restricted", {"nonmagnetic": True})):
        label_structures(tmp_path / "fe.extxyz", tmp_path / f"{name}.db", Cp2kSettings(**(cheap | spin)), mpi_ranks=2)
        with ase.db.connect(tmp_path / f"{name}.db") as db:
            row = db.get(uid="fe-bcc")
        assert row.scf_converged, name
        energies[name] = row.energy
        if name == "spin":
            assert 1.8 < row.magnetic_moment_mub < 2.8
            assert row.data["spin_moments_mub"].shape == (1,)
        else:
            assert "magnetic_moment_mub" not in row.key_value_pairs and "spin_moments_mub" not in row.data
    assert energies["restricted"] - energies["spin"] > 0.3


@pytest.mark.slow
@requires_cp2k
def test_an_antiferromagnet_labelled_from_its_own_start_moments_keeps_them_opposite(tmp_path):
    """Rock-salt MnO in AFM-I order (8-atom cubic cell), started ±5 μB from the structure file: CP2K takes the two Mn
    sublattices as two kinds, the SCF converges, and the moments stay opposite (measured ±4.79 μB, 61 steps, 91 s)."""
    import ase.db
    import ase.io
    from ase.build import bulk

    from mlip_exafs.label import label_structures

    atoms = bulk("MnO", "rocksalt", a=4.445, cubic=True)
    start = [(5.0 if a.position[2] < 1.0 else -5.0) if a.symbol == "Mn" else 0.0 for a in atoms]  # Mn planes ± along z
    atoms.set_initial_magnetic_moments(start)
    atoms.info["uid"] = "mno-afm1"
    ase.io.write(tmp_path / "mno.extxyz", atoms)
    settings = Cp2kSettings(cutoff_ry=300, kspacing_inv_a=1.0, broyden_nbuffer=8, magnetic_moments_mub={"Mn": 5.0})
    label_structures(tmp_path / "mno.extxyz", tmp_path / "mno.db", settings, mpi_ranks=2)
    with ase.db.connect(tmp_path / "mno.db") as db:
        row = db.get(uid="mno-afm1")
    moments = row.data["spin_moments_mub"]
    assert row.scf_converged and row.data["start_moments_mub"].tolist() == start
    mn = np.array([symbol == "Mn" for symbol in atoms.get_chemical_symbols()])
    assert np.all(np.sign(moments[mn]) == np.sign(np.array(start)[mn])) and np.all(np.abs(moments[mn]) > 4.0)
    assert abs(row.magnetic_moment_mub) < 0.05
