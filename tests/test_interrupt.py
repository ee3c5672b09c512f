"""Ctrl-C in the long verbs (finetune, label, study): exit 130, one line, and the rerun resumes.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, workers and CP2K included, so each
verb runs in its own session here and gets the signal with ``os.killpg``. ``md`` is in test_cli.py.
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import default_sigint, run_cli
from fake_dft import fake_cp2k_shell, write_fake_dataset
from test_label import _descendants
from test_study import TINY_STUDY

INTERRUPTED = "error: interrupted; rerun the same command to resume"
PROGRESS_LINE = re.compile(r"^[^:]+: \d+/\d+, elapsed \d+:\d\d:\d\d, ETA ")  # progress.log_lines
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MLIP_EXAFS_THREADS": "1"}


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True, preexec_fn=default_sigint)


def _ctrl_c_when(proc: subprocess.Popen, started, timeout_s: float = 600) -> tuple[str, str]:
    """Wait until ``started()`` (the run has visibly begun), press Ctrl-C, return (stdout, stderr).

    Also checks that no process the verb started (step workers, CP2K) outlives it.
    """
    deadline = time.monotonic() + timeout_s
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    children = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)
    time.sleep(1)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], ("a child outlived the interrupted run", output)
    return output


def _assert_interrupted(proc: subprocess.Popen, stdout: str, stderr: str) -> None:
    """Exit 130 and one error line, last; the progress log lines of a stderr that is not a terminal may come before it."""
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1] == INTERRUPTED, stderr
    assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), stderr


@pytest.mark.slow
def test_ctrl_c_in_finetune_exits_130_and_the_rerun_resumes(tmp_path, data):
    """Interrupted after its first epoch: 130 and one line; the same command then resumes after a finished epoch."""
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "mlip_exafs", "finetune", "--train", str(data), "--n", "2", "--seed", "3", "--epochs", "4", "--out", str(out)]
    proc = _start(cmd)
    stdout, stderr = _ctrl_c_when(proc, lambda: any((out / ".work" / "trainer").glob("epoch*.pth.tar")))
    _assert_interrupted(proc, stdout, stderr)
    assert not (out / "finetune.json").exists()  # the half run is not marked complete
    run_cli(*cmd[3:], check=True)
    record = json.loads((out / "finetune.json").read_text())
    assert 1 <= record["resumed_after_epoch"] < 4


# cp2k_shell's handshake with ASE, then a calculation that never ends. It ignores SIGINT, as an MPI launcher
# busy in a collective may: the labeller has to stop it itself.



def _hanging_cp2k_on_path(tmp_path: Path) -> tuple[dict, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "cp2k-is-computing"
    fake = bin_dir / "cp2k_shell"
    fake.write_text(fake_cp2k_shell(startup="trap '' INT", at_work=f"touch {marker}\nexec sleep 300"))  # ignores Ctrl-C, hangs
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, marker


def test_ctrl_c_in_label_exits_130_stops_cp2k_and_stores_nothing(tmp_path):
    """No real CP2K: a script on PATH plays a cp2k_shell that computes for ever. Ctrl-C mid-structure: 130, one
    line, CP2K gone, no row for the structure, and the rerun is not refused (it goes on to start CP2K again)."""
    import ase.io

    from mlip_exafs.label import finished_uids
    from mlip_exafs.structures import load_structure

    atoms = load_structure("w-bcc")
    atoms.info["uid"] = "w-0"
    ase.io.write(tmp_path / "s.extxyz", [atoms])
    db = tmp_path / "d" / "labels.db"
    path, marker = _hanging_cp2k_on_path(tmp_path)
    cmd = [sys.executable, "-m", "mlip_exafs", "label", str(tmp_path / "s.extxyz"), "--db", str(db), "--mpi-ranks", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**ENV, **path}, start_new_session=True, preexec_fn=default_sigint)
    stdout, stderr = _ctrl_c_when(proc, marker.exists, timeout_s=120)  # it also checks that CP2K is gone
    _assert_interrupted(proc, stdout, stderr)
    assert finished_uids(db) == set()
    marker.unlink()
    rerun = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**ENV, **path}, start_new_session=True, preexec_fn=default_sigint)
    stdout, stderr = _ctrl_c_when(rerun, marker.exists, timeout_s=120)  # it got as far as CP2K: nothing blocked it
    _assert_interrupted(rerun, stdout, stderr)


@pytest.fixture
def tiny_study(tmp_path) -> Path:
    write_fake_dataset(tmp_path / "data", n_train=3, n_test=2)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_STUDY))
    return tmp_path / "tiny.yaml"


@pytest.mark.slow
def test_ctrl_c_in_study_exits_130_and_the_rerun_keeps_finished_steps(tiny_study, tmp_path):
    """Ctrl-C after the first finished step (the step workers get it too): 130, one line, no summary; the same
    command then finishes the study without redoing the finished steps."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlip_exafs", "study", str(tiny_study), "--out", str(out)]
    proc = _start(cmd)
    stdout, stderr = _ctrl_c_when(proc, lambda: any(out.glob("steps/*/step.json")), timeout_s=900)
    _assert_interrupted(proc, stdout, stderr)
    assert not (out / "summary.json").exists()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("steps/*/step.json")}
    assert finished
    run_cli(*cmd[3:], check=True)
    for name, mtime in finished.items():
        assert (out / "steps" / name / "step.json").stat().st_mtime_ns == mtime
    assert (out / "summary.json").exists()



def test_sigterm_inside_a_study_stops_it_as_ctrl_c_does():
    """A SIGTERM (kill, scancel) killed a study at once: its lock stayed and its Dask steps ran on. Inside
    ``terminate_as_interrupt`` it is a KeyboardInterrupt (the study's stop path); outside, the handler is the old one."""
    from mlip_exafs.processes import terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as soon as the interpreter resumes
            time.sleep(5)  # not reached
    assert signal.getsignal(signal.SIGTERM) is before
