"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``): a killed study or md leaves no step
child or i-PI behind that keeps writing; and SIGTERM handled as Ctrl-C where a clean stop matters."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _prctl():
    """libc's prctl, looked up in the parent: a dlopen between fork and exec can deadlock a threaded parent."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux: children are not tied to their parent there
        return None


def dies_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies."""
    prctl = _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig)

    return preexec


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A killed process its parent has not reaped (a zombie) does not: it still answers
    ``kill(pid, 0)``, but it will never finish or clean up (CI's PID 1 reaps orphans slowly)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # not Linux (no /proc), or it went in between
        return not Path("/proc/self").exists()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM (``kill``, SLURM's ``scancel``) stops the main thread as Ctrl-C does.

    A study killed by SIGTERM died at once: its lock file stayed, and its steps on Dask workers ran on.
    As a KeyboardInterrupt it stops its steps, removes its lock and says how to resume.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
