"""Shared test setup: one torch thread (oversubscription makes torch 40-60x slower here)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLIP_EXAFS_THREADS", "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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


requires_cp2k = pytest.mark.skipif(shutil.which("cp2k_shell") is None, reason="CP2K not installed (apt-get install cp2k cp2k-data)")
