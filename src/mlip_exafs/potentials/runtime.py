"""Where and how a model runs: torch threads, glibc's memory policy, and the device (cpu or cuda)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Literal, get_args

from mlip_exafs.errors import UserError, setting

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
DEFAULT_DEVICE = "auto"  # a GPU when torch sees one, else the CPU: on a CPU-only machine nothing changes
DEVICE_ENV = "MLIP_EXAFS_DEVICE"  # how a study hands its ``device`` to every step's child process


def resolve_device(device: str | None = None) -> str:
    """'auto' | 'cpu' | 'cuda' (None: ``$MLIP_EXAFS_DEVICE``, else 'auto') -> the torch device to use.

    'cuda' on a machine where torch sees no GPU is refused rather than silently
    run on the CPU, so that a user who asked for a GPU learns that they have none.
    """
    choice = check_device_name(device) or DEFAULT_DEVICE
    if choice == "cpu":
        return "cpu"
    import torch  # lazy: torch, seconds; only when a GPU could be meant

    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise UserError(f"{device_request(device, 'cuda')}, but torch sees no CUDA GPU (CPU-only torch or no driver); use {setting('device')} cpu or auto")
    return "cpu"


def device_request(device: str | None, value: str) -> str:
    """How the user asked for ``value``: the option (or study setting), or the environment variable."""
    return f"{setting('device')} {value}" if device else f"${DEVICE_ENV}={value}"


def check_device_name(device: str | None) -> str | None:
    """The device asked for (``device`` or ``$MLIP_EXAFS_DEVICE``), lower-cased and checked; None when neither is set."""
    asked = device or os.environ.get(DEVICE_ENV) or None
    if asked is None:
        return None
    if asked.lower() not in DEVICES:
        raise UserError(f"unknown device: {device_request(device, asked)}; use one of: {', '.join(DEVICES)}")
    return asked.lower()


def set_torch_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (default: ``$MLIP_EXAFS_THREADS``, else the cores this process may use), and keep freed memory.

    On a shared CPU, oversubscribed torch threads spin and make every call
    tens of times slower, so callers running several processes must lower it.
    Every compute stage calls this first, so it also applies ``keep_freed_memory``.
    """
    import torch  # lazy: torch, seconds; only when a model runs

    keep_freed_memory()
    n = threads or threads_from_environment() or available_cores()
    torch.set_num_threads(n)
    return n


THREADS_ENV = "MLIP_EXAFS_THREADS"


def available_cores() -> int:
    """Cores this process may run on (``taskset``, cgroup CPU sets, a SLURM job's CPUs), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_from_environment() -> int | None:
    """``$MLIP_EXAFS_THREADS`` as a positive integer; None when unset or empty."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"${THREADS_ENV}={text} is not a positive whole number of threads; set it to e.g. 1, or unset it to use all cores")
    return n


# glibc mallopt parameters: trim the heap only above 2 GiB free, grow it 1 GiB at a time, mmap only above 32 MiB
# (the largest threshold glibc accepts at run time).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP_FREED_MEMORY = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 1 << 30, _M_MMAP_THRESHOLD: 32 << 20}  # C ints


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of giving it back to the kernel.

    torch allocates and frees tens of MB per force call. With glibc's defaults much of it is
    returned to the kernel and faulted in again at the next call: on the 2-core VM of
    docs/study.md, SevenNet-0 on 432 atoms spent 1.4 of 4.1 s per force call in the kernel
    (800 000 page faults); two such processes slowed each other about 2x. With this: 2.5 s,
    0.02 s in the kernel. The price is that a process keeps its peak memory. Not applied when
    the user has set glibc's own ``MALLOC_*_`` variables; returns whether it was applied.
    """
    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    return all(mallopt(param, value) == 1 for param, value in _KEEP_FREED_MEMORY.items())
