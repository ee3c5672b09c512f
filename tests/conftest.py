"""Shared test setup: one torch thread (oversubscription makes torch 40-60x slower here)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLIP_EXAFS_THREADS", "1")
# a user cache of this test run's own (subprocesses inherit it): no test finds another run's FEFF potentials;
# each test gets its own below (`own_user_cache`), this one serves fixtures of wider scope
os.environ["MLIP_EXAFS_CACHE"] = tempfile.mkdtemp(prefix="mlip-exafs-test-cache-")
atexit.register(lambda: shutil.rmtree(os.environ["MLIP_EXAFS_CACHE"], ignore_errors=True))

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W_FOIL = REPO / "examples" / "data" / "W_metal_rt_01.xdi"  # the bundled W-foil spectrum; header: "room temperature"


def run_cli(*args: str, cwd: Path | None = None, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``mlip-exafs ARGS`` as a user would, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "mlip_exafs", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlip-exafs {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr starting with 'error:'."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


@pytest.fixture(autouse=True)
def own_user_cache(tmp_path_factory, monkeypatch):
    """An empty user cache per test, so that no outcome depends on which tests ran before (FEFF potentials, ω_max)."""
    monkeypatch.setenv("MLIP_EXAFS_CACHE", str(tmp_path_factory.mktemp("user-cache")))


requires_cp2k = pytest.mark.skipif(shutil.which("cp2k_shell") is None, reason="CP2K not installed (apt-get install cp2k cp2k-data)")


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``mlip-exafs ARGS`` in this process: exit code, stdout and stderr as a user would see them.

    Milliseconds instead of the ~4 s of a fresh interpreter (:func:`run_cli`), for the many bad-input checks.
    """
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


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """3 training + 2 test structures labelled by stiffened CHGNet."""
    from fake_dft import write_fake_dataset

    return write_fake_dataset(tmp_path_factory.mktemp("data"), n_train=3, n_test=2)


@pytest.fixture(scope="session")
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


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test will Ctrl-C: SIGINT back to its default action. A test run started
    in the background (``cmd &``, nohup, some CI runners) ignores SIGINT, and children inherit that, so Python in
    them would never raise KeyboardInterrupt and the test would hang instead of testing the interruption."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
