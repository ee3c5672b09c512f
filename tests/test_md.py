"""The md stage: temperature control, kill -9 + resume, blow-up and input errors, fast CHGNet."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest

from conftest import assert_nothing_written, assert_one_line_error, cli, no_temp_files, run_cli
from mlip_exafs.errors import UserError
from mlip_exafs.md import CHECKPOINT_FILE, MdSettings, parse_duration_fs, read_thermo, run_md, schedule_of

# 6-atom WS2 cell: about 30 steps/s on one loaded core
SHORT = ["--equilibrate", "0", "--production", "20fs", "--every", "10fs"]  # a run of 10 steps
KILL_RUN = ["ws2", "--equilibrate", "40fs", "--production", "560fs", "--every", "10fs", "--checkpoint-every", "20fs", "--seed", "3"]


def test_durations_accept_units():
    assert parse_duration_fs("2ps") == 2000.0
    assert parse_duration_fs("500fs") == 500.0
    assert parse_duration_fs("10") == 10.0
    assert parse_duration_fs("0.5 ns") == 5.0e5
    with pytest.raises(UserError, match="not a duration"):
        parse_duration_fs("2 hours")


def test_schedule_counts_phases_and_frames():
    s = schedule_of(MdSettings(timestep_fs=2, npt_fs=100, equilibration_fs=200, production_fs=1000, snapshot_every_fs=50))
    assert (s.npt_steps, s.production_start, s.total, s.n_frames) == (50, 150, 650, 20)
    assert s.phase_of(50) == "npt" and s.phase_of(51) == "equilibration" and s.phase_of(151) == "production"
    assert not s.is_snapshot(150) and s.is_snapshot(175) and s.frames_until(650) == 20
    with pytest.raises(UserError, match="whole number"):
        schedule_of(MdSettings(timestep_fs=2, snapshot_every_fs=45))


def test_fast_chgnet_matches_chgnet_calculator():
    """Energy, forces and stress of the fast calculator equal CHGNet's own (strained, rattled, atoms outside the cell)."""
    from chgnet.model.dynamics import CHGNetCalculator

    from mlip_exafs.potentials.chgnet import FastCHGNetCalculator
    from mlip_exafs.potentials import get_calculator
    from mlip_exafs.structures import load_structure

    atoms = load_structure("ws2", "2x2x1")
    atoms.rattle(0.08, seed=2)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + [[0.02, 0.01, 0], [0.01, -0.01, 0.003], [0, 0.003, 0.015]]), scale_atoms=True)
    model = get_calculator("chgnet", threads=1).model
    ref, fast = atoms.copy(), atoms.copy()
    ref.calc = CHGNetCalculator(model=model, use_device="cpu")
    fast.positions += atoms.cell.array[0] - 2 * atoms.cell.array[2]  # unwrapped, as in a long MD run
    fast.calc = FastCHGNetCalculator(model)
    assert fast.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(fast.get_forces(), ref.get_forces(), atol=2e-4)
    np.testing.assert_allclose(fast.get_stress(), ref.get_stress(), atol=1e-6)
    assert np.abs(ref.get_stress()).max() > 1e-3  # the strain makes the stress comparison meaningful


@pytest.mark.slow
def test_short_nvt_run_holds_the_target_temperature(tmp_path):
    settings = MdSettings(structure="ws2", supercell="2x2x1", temperature_k=400, equilibration_fs=300, production_fs=600,
                          snapshot_every_fs=20, thermostat_time_fs=50, seed=1)
    snaps = run_md(settings, tmp_path, show_progress=False)
    thermo = read_thermo(tmp_path / "thermo.csv")
    prod = thermo["phase"] == "production"
    mean_t = thermo["temperature_k"][prod].mean()
    # 24 atoms: T fluctuates by ~17 % per sample; the mean of 600 fs is good to ~5 %
    assert abs(mean_t - 400) < 0.15 * 400, mean_t
    frames = ase.io.read(snaps, ":")
    assert len(frames) == 30 and [f.info["step"] for f in frames] == list(range(160, 451, 10))
    assert np.allclose(thermo["etot_ev"], thermo["epot_ev"] + thermo["ekin_ev"], atol=2e-6)


def _wait_for_checkpoint_step(out: Path, proc: subprocess.Popen, min_step: int, timeout_s: float = 240) -> None:
    from mlip_exafs.files import read_json

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"md ended before it could be killed: {proc.stderr.read()}")
        try:
            if read_json(out / "md.json")["step"] >= min_step:
                return
        except (UserError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail("md made no checkpoint in time")


@pytest.mark.slow
def test_kill_9_then_rerun_continues_the_same_run(tmp_path):
    """A run killed mid-way and rerun ends identical to one never interrupted: no lost or doubled frames."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mlip_exafs", "md", *KILL_RUN, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    _wait_for_checkpoint_step(out, proc, min_step=60)
    time.sleep(0.7)  # kill between checkpoints, with frames written after the last one
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / CHECKPOINT_FILE).exists()
    run_cli("md", *KILL_RUN, "--out", str(out), check=True)

    from mlip_exafs.files import read_json

    summary = read_json(out / "md.json")
    assert summary["status"] == "complete" and len(summary["segments"]) == 2
    resumed_at = summary["segments"][1]["start_step"]
    assert 60 <= resumed_at < 300, summary["segments"]
    assert [s["device"] for s in summary["segments"]] == ["cpu", "cpu"]  # which steps ran where
    frames = ase.io.read(out / "snapshots.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(range(25, 301, 5))
    thermo = read_thermo(out / "thermo.csv")
    assert list(thermo["step"]) == list(range(0, 301, 5))

    reference = MdSettings(structure="ws2", equilibration_fs=40, production_fs=560, snapshot_every_fs=10, checkpoint_every_fs=20, seed=3)
    run_md(reference, tmp_path / "straight", show_progress=False)
    straight = ase.io.read(tmp_path / "straight" / "snapshots.extxyz", ":")
    np.testing.assert_allclose(frames[-1].positions, straight[-1].positions, atol=1e-8)


def test_rerun_of_a_finished_run_does_nothing_and_other_settings_are_refused(tmp_path):
    settings = MdSettings(structure="ws2", equilibration_fs=0, production_fs=20, snapshot_every_fs=10)
    run_md(settings, tmp_path, show_progress=False)
    before = (tmp_path / "snapshots.extxyz").read_text()
    run_md(settings, tmp_path, show_progress=False)
    assert (tmp_path / "snapshots.extxyz").read_text() == before
    with pytest.raises(UserError, match="other settings"):
        run_md(settings.model_copy(update={"temperature_k": 600.0}), tmp_path, show_progress=False)


@pytest.mark.slow
def test_corrupted_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_cli("md", "ws2", "--equilibrate", "0", "--production", "20", "--every", "10", "--out", str(tmp_path))
    assert_one_line_error(proc, "corrupted", "delete it and rerun")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--temperature", "-5"], "--temperature input should be greater than 0"),
        (["--temperature", "0"], "--temperature input should be greater than 0"),
        (["--timestep", "0"], "--timestep input should be greater than 0"),
        (["--timestep", "-1fs"], "--timestep input should be greater than 0"),
        (["--production", "2 hours"], "not a duration"),
        (["--every", "3fs"], "whole number"),
        # options the run would record in md.json, or take, and then ignore (SHORT: without the refusal the test's run is seconds)
        (["--npt-time", "1ps", *SHORT], "--npt-time is given without --npt, so no NPT would run and it would be ignored; add --npt to run NPT first, or leave --npt-time out"),
        (["--pressure", "5", *SHORT], "--pressure is given without --npt, so no NPT would run and it would be ignored; add --npt to run NPT first, or leave --pressure out"),
        (["--npt", "--npt-time", "0", "--pressure", "5", *SHORT], "--pressure 5 GPa is the NPT barostat's pressure, but this run has no NPT (--npt-time 0); "
                                                                  "run NPT first (--npt-time above 0), or leave --pressure out"),
        (["--beads", "8", *SHORT], "--beads 8 is used only by path-integral MD, but this run has classical nuclei; set --nuclei path-integral, or leave --beads out"),
        (["--nuclei", "corrected", "--beads", "8", *SHORT], "--beads 8 is used only by path-integral MD, but this run has corrected nuclei"),
        (["--checkpoint-every", "3fs", *SHORT], "checkpoint interval (--checkpoint-every) 3 fs is not a whole number of 2 fs timesteps; choose a multiple of the timestep"),
        (["--nuclei", "path-integral", "--thermostat", "langevin", *SHORT], "--thermostat langevin is not used by path-integral MD, which i-PI thermostats with PILE-L"),
    ],
)
def test_bad_md_inputs_are_one_line_errors(tmp_path, args, needle):
    proc = run_cli("md", "ws2", "--out", str(tmp_path / "x"), *args)
    assert_one_line_error(proc, needle)
    assert_nothing_written(tmp_path / "x")


def test_settings_a_run_would_ignore_are_refused_by_the_model_not_at_their_defaults():
    """The same refusals for a study's md step (the model's own check); a study plan leaves beads None and the rest at their defaults."""
    for given, needle in [(dict(beads=8), "'beads' 8 is used only by path-integral MD"), (dict(pressure_gpa=1.0), "'pressure_gpa' 1 GPa is the NPT barostat's pressure"),
                          (dict(timestep_fs=2.0, checkpoint_every_fs=5.0), "checkpoint interval ('checkpoint_every_fs') 5 fs is not a whole number of 2 fs timesteps")]:
        with pytest.raises(UserError, match=re.escape(needle)):
            MdSettings(**given)
    MdSettings(nuclei="path-integral", beads=8)
    MdSettings(npt_fs=100.0, pressure_gpa=1.0)
    MdSettings(nuclei="corrected", beads=None, npt_fs=0.0, pressure_gpa=0.0)  # a study plan's defaults
    MdSettings(timestep_fs=1.5)  # the default checkpoint interval (200 fs) is not given: rounded to whole steps, as before
    MdSettings(timestep_fs=2.5, checkpoint_every_fs=200.0)


def test_blow_up_stops_with_a_user_error(tmp_path):
    settings = MdSettings(structure="ws2", temperature_k=1000, timestep_fs=20, equilibration_fs=0, production_fs=4000, snapshot_every_fs=200)
    with pytest.raises(UserError, match="blew up"):
        run_md(settings, tmp_path, show_progress=False)


@pytest.mark.slow
def test_npt_then_nvt_at_the_mean_cell(tmp_path):
    """--npt: the barostat moves the cell, and NVT continues at the mean cell of the NPT run's second half."""
    settings = MdSettings(structure="ws2", npt_fs=200, equilibration_fs=20, production_fs=40, snapshot_every_fs=20, barostat_time_fs=200)
    run_md(settings, tmp_path, show_progress=False)
    from mlip_exafs.files import read_json
    from mlip_exafs.structures import load_structure

    mean_cell = np.array(read_json(tmp_path / "md.json")["npt_mean_cell_a"])
    frames = ase.io.read(tmp_path / "snapshots.extxyz", ":")
    assert len(frames) == 2
    for frame in frames:
        np.testing.assert_allclose(frame.cell.array, mean_cell, atol=1e-9)
    assert np.abs(mean_cell - load_structure("ws2").cell.array).max() > 1e-3
    assert "npt" in set(read_thermo(tmp_path / "thermo.csv")["phase"])


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


def test_disk_full_during_md_then_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Snapshots cannot be appended: a one-line error; after space is freed the same command finishes the run."""
    import ase.io

    from mlip_exafs.files import read_json

    from mlip_exafs.md import MdSettings, read_thermo, run_md

    settings = MdSettings(structure="ws2", equilibration_fs=0, production_fs=40, snapshot_every_fs=10, checkpoint_every_fs=10)
    real_write = ase.io.write
    snapshots_written = []

    def full_disk(target, *args, **kwargs):  # the disk fills after two snapshots (and their checkpoints)
        if kwargs.get("format") == "extxyz" and not isinstance(target, (str, Path)):
            if len(snapshots_written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            snapshots_written.append(target)
        return real_write(target, *args, **kwargs)

    monkeypatch.setattr(ase.io, "write", full_disk)
    with pytest.raises(UserError, match="No space left on device.*rerun the same command to resume") as err:
        run_md(settings, tmp_path, show_progress=False)
    assert "\n" not in str(err.value) and no_temp_files(tmp_path)
    monkeypatch.setattr(ase.io, "write", real_write)
    capsys.readouterr()
    run_md(settings, tmp_path, show_progress=True)
    resumed_at = read_json(tmp_path / "md.json")["segments"][-1]["start_step"]
    progress = capsys.readouterr().err.splitlines()  # not a terminal: log lines
    assert resumed_at > 0 and progress[-1].startswith("MD 300 K: 20/20, ")  # a resumed run counts the whole run, as fine-tunes do
    assert [f.info["step"] for f in ase.io.read(tmp_path / "snapshots.extxyz", ":")] == [5, 10, 15, 20]
    assert list(read_thermo(tmp_path / "thermo.csv")["step"]) == [0, 5, 10, 15, 20]


def test_md_json_says_running_before_the_first_step(tmp_path, monkeypatch):
    """md.json exists with status 'running' from the start, not only from the first checkpoint."""
    import mlip_exafs.md as md
    from mlip_exafs.files import read_json

    seen = {}

    def stop_before_stepping(files, *args, **kwargs):
        seen.update(read_json(files.summary))
        raise KeyboardInterrupt

    monkeypatch.setattr(md, "_run_steps", stop_before_stepping)
    settings = MdSettings(structure="ws2", equilibration_fs=0, production_fs=400, snapshot_every_fs=10, checkpoint_every_fs=200)
    with pytest.raises(KeyboardInterrupt):
        run_md(settings, tmp_path, show_progress=False)
    assert seen["status"] == "running" and seen["step"] == 0 and seen["total_steps"] == 200 and seen["n_frames"] == 0


def test_md_help_shows_flags_as_flags_and_the_thread_default_the_readme_states(capsys):
    help_text = cli(capsys, "md", "--help").stdout
    npt_line = next(line for line in help_text.splitlines() if "--npt " in line and "--no-npt" in line)
    assert "<bool>" not in npt_line
    threads_help = " ".join(help_text.split("--threads")[1].replace("│", " ").split())
    assert threads_help.split("--nuclei")[0].rstrip(". ").endswith("default 1")  # MdSettings.threads, as the README states
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "`md`, `validate` and `finetune` use 1 unless `--threads N`" in readme


def test_second_md_into_the_same_folder_is_refused(capsys, tmp_path):
    """Two runs into one --out used to both 'succeed' with duplicated frames; the second now stops at once."""
    from mlip_exafs.files import writer_lock

    out = tmp_path / "out"
    with writer_lock(out, "md"):
        proc = cli(capsys, "md", "w-bcc", "--supercell", "2x2x2", "--potential", "python:ase.calculators.emt:EMT", "--out", out,
                   "--equilibrate", "0", "--production", "4fs", "--every", "2fs")
        assert_one_line_error(proc, f"another md (pid {os.getpid()}) is running into", "choose another output folder")
        assert [p.name for p in out.iterdir()] == [".md.lock"]


def test_langevin_thermostat_resumes_as_the_same_run(tmp_path, monkeypatch):
    """--thermostat langevin (local friction, for stiff near-harmonic crystals): an interrupted run resumes
    to the frames of a run never interrupted, since its random forces come from the checkpointed generator."""
    import ase.io
    from ase.build import bulk

    from mlip_exafs.md import MdSettings, run_md

    ase.io.write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.61, cubic=True))
    settings = MdSettings(structure=str(tmp_path / "cu.cif"), supercell="2x2x2", potential="python:ase.calculators.emt:EMT",
                          thermostat="langevin", equilibration_fs=0, production_fs=60, snapshot_every_fs=10, checkpoint_every_fs=10, seed=4)
    run_md(settings, tmp_path / "straight", show_progress=False)
    real_write, appends = ase.io.write, []

    def disk_full_at_the_third_frame(target, *args, **kwargs):
        if kwargs.get("format") == "extxyz" and not isinstance(target, (str, Path)):
            appends.append(1)
            if len(appends) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(target, *args, **kwargs)

    monkeypatch.setattr(ase.io, "write", disk_full_at_the_third_frame)
    with pytest.raises(UserError, match="No space left"):
        run_md(settings, tmp_path / "resumed", show_progress=False)
    monkeypatch.setattr(ase.io, "write", real_write)
    run_md(settings, tmp_path / "resumed", show_progress=False)
    straight = ase.io.read(tmp_path / "straight" / "snapshots.extxyz", ":")
    resumed = ase.io.read(tmp_path / "resumed" / "snapshots.extxyz", ":")
    assert len(resumed) == len(straight) == 6
    np.testing.assert_allclose(resumed[-1].positions, straight[-1].positions, atol=1e-8)
    bussi = MdSettings(**{**settings.model_dump(), "thermostat": "bussi"})
    assert bussi.identity() == MdSettings(**{k: v for k, v in bussi.model_dump().items() if k != "thermostat"}).identity()  # old runs still match


def test_corrected_nuclei_default_to_langevin_and_classical_runs_keep_their_identity():
    """nuclei corrected: Langevin unless told (Bussi's global rescaling leaves mode energies unequilibrated, docs/md.md);
    classical and path-integral runs keep Bussi and the identity they had, and an old Bussi 'corrected' run stays Bussi."""
    from mlip_exafs.md import MdSettings, comparable_settings

    assert MdSettings().thermostat == "bussi" and MdSettings(nuclei="path-integral").thermostat == "bussi"
    assert MdSettings(nuclei="corrected").thermostat == "langevin"
    assert MdSettings(nuclei="corrected", thermostat="bussi").thermostat == "bussi"
    assert "thermostat" not in MdSettings().identity()  # classical runs made before the option still match
    old_corrected = {"nuclei": "corrected", "seed": 1}  # an md.json from before the option: that run was Bussi
    assert comparable_settings(old_corrected)["thermostat"] == "bussi"
    assert comparable_settings({**old_corrected, "thermostat": None})["thermostat"] == "langevin"  # a study plan that leaves it unset
    assert comparable_settings({"seed": 1, "thermostat": None}) == {"seed": 1}


def test_md_cli_corrected_runs_langevin_unless_told(capsys, tmp_path):
    import json

    from ase.build import bulk

    ase.io.write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.61, cubic=True))
    common = ("md", tmp_path / "cu.cif", "--supercell", "2x2x2", "--potential", "python:ase.calculators.emt:EMT", "--timestep", "2",
              "--equilibrate", "0", "--production", "40fs", "--every", "10fs", "--nuclei", "corrected")
    for extra, expected in (((), "langevin"), (("--thermostat", "bussi"), "bussi")):
        out = tmp_path / expected
        proc = cli(capsys, *common, *extra, "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "md.json").read_text())["settings"]["thermostat"] == expected


def test_a_run_moved_to_another_machine_or_folder_continues_where_its_files_now_lie():
    """Structure and checkpoint files are compared by name (their content by the atoms and the potential id), not place."""
    from mlip_exafs.md import first_difference, same_run

    ran = MdSettings(structure="/gpu-machine/work/w.cif", potential="/gpu-machine/work/steps/finetune-x/model.pt").identity()
    here = MdSettings(structure="/home/me/w.cif", potential="studies/s/steps/finetune-x/model.pt")
    assert first_difference(ran, here) is None and same_run(ran, here)
    assert first_difference(ran, MdSettings(structure="/home/me/other.cif", potential=here.potential)) == "structure"
    assert first_difference(ran, here.model_copy(update={"temperature_k": 10.0})) == "temperature_k"


def test_an_edited_structure_file_of_the_same_name_is_another_run(tmp_path, monkeypatch):
    """A structure file is matched by name (runs move); its geometry is checked too, finished or interrupted."""
    import mlip_exafs.md as md
    from ase.build import bulk

    structure = tmp_path / "POSCAR"
    ase.io.write(structure, bulk("W", "bcc", a=3.165, cubic=True), format="vasp")
    settings = MdSettings(structure=str(structure), supercell="2x2x2", equilibration_fs=0, production_fs=20, snapshot_every_fs=10,
                          checkpoint_every_fs=10)
    run_md(settings, tmp_path / "done", show_progress=False)
    real_run_steps = md._run_steps

    def stop_after_a_checkpoint(files, atoms, state, *args, **kwargs):
        md.save_checkpoint(files, atoms, state, settings, md.potential_id_of(settings.potential))
        raise KeyboardInterrupt

    monkeypatch.setattr(md, "_run_steps", stop_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_md(settings, tmp_path / "killed", show_progress=False)
    monkeypatch.setattr(md, "_run_steps", real_run_steps)
    ase.io.write(structure, bulk("W", "bcc", a=3.30, cubic=True), format="vasp")
    for folder in ("done", "killed"):
        with pytest.raises(UserError, match="started from another structure"):
            run_md(settings, tmp_path / folder, show_progress=False)
    ase.io.write(structure, bulk("W", "bcc", a=3.165, cubic=True), format="vasp")
    run_md(settings, tmp_path / "killed", show_progress=False)  # the same file again: it continues
    assert md.read_result(tmp_path / "killed")["status"] == "complete"
