"""Atomic writes: a full disk is one line, leaves no temporary or truncated file, and keeps the old file.

The disk-full checks run the CLI in a subprocess under a real file-size limit (EFBIG).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from conftest import assert_one_line_error, no_temp_files
from mlip_exafs.errors import UserError

VASP_OUTCAR = Path(str(resources.files("ase.test") / "testdata" / "vasp" / "OUTCAR_example_1"))


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


def test_writer_lock_one_writer_per_folder_and_nothing_left(tmp_path):
    """A second writer is refused in one line; the lock file and a folder the lock created are gone afterwards."""
    from mlip_exafs.files import writer_lock

    out = tmp_path / "new" / "out"
    with writer_lock(out, "md"):
        assert (out / ".md.lock").read_text() == str(os.getpid())
        with pytest.raises(UserError, match=rf"another md \(pid {os.getpid()}\) is running into .*out; wait for it"):
            with writer_lock(out, "md"):
                pass
    assert not (tmp_path / "new").exists()  # nothing was written: no lock file, no empty folders
    with writer_lock(out, "md"):  # released: the next writer gets it
        (out / "result.txt").write_text("x")
    assert [p.name for p in out.iterdir()] == ["result.txt"]


def test_writer_lock_of_a_killed_process_is_free(tmp_path):
    """``kill -9`` leaves the lock file behind but releases the kernel lock: the rerun that resumes is not blocked."""
    from mlip_exafs.files import writer_lock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mlip_exafs.files import writer_lock\n"
                               f"with writer_lock({str(tmp_path)!r}, 'md'):\n    print('held', flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        with writer_lock(tmp_path, "md"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".md.lock").exists()
    with writer_lock(tmp_path, "md"):
        pass


@pytest.mark.parametrize("kind", ["existing-file", "parent-is-a-file"])
def test_output_folder_that_cannot_be_created_is_refused(tmp_path, kind):
    from mlip_exafs.files import check_output_folder

    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" if kind == "existing-file" else tmp_path / "f" / "out"
    with pytest.raises(UserError, match="is an existing file|is a file, not a folder"):
        check_output_folder(out)
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_folder_in_a_read_only_folder_is_refused(tmp_path):
    from mlip_exafs.files import check_output_folder

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(UserError, match="read-only for this user"):
        check_output_folder(ro / "out")
