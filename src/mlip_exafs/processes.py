"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``): a killed study or md leaves no step
child or i-PI behind that keeps writing."""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Callable

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
