"""Turn a potential name or a checkpoint path into an ASE calculator, offline.

Names: ``chgnet`` (pretrained 0.3.0 weights shipped in the chgnet wheel),
``sevennet-0`` (shipped in the sevenn wheel). Paths: a fine-tuned checkpoint
of either, written by ``mlip-exafs finetune`` (``*.pt``), loaded with
``torch.load(weights_only=True)`` so that no code in it can run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator

from mlip_exafs.errors import UserError
from mlip_exafs.files import sha256_file

CHECKPOINT_FORMAT = "mlip-exafs-chgnet-v1"
SEVENNET_FORMAT = "mlip-exafs-sevennet-v1"
CHGNET_MAX_Z = 94  # CHGNet's MPtrj training covers H..Pu


@dataclass(frozen=True)
class PotentialInfo:
    name: str
    description: str


AVAILABLE = {
    "chgnet": PotentialInfo("chgnet", "CHGNet 0.3.0 pretrained on MPtrj (weights in the chgnet wheel)"),
    "sevennet-0": PotentialInfo("sevennet-0", "SevenNet-0 (11Jul2024) pretrained on MPtrj (weights in the sevenn wheel)"),
}


def set_torch_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (default: all cores), and keep freed memory. Returns the threads set.

    On a shared CPU, oversubscribed torch threads spin and make every call
    tens of times slower, so callers running several processes must lower it.
    Every compute stage calls this first, so it also applies ``keep_freed_memory``.
    """
    import torch

    keep_freed_memory()
    n = threads or int(os.environ.get("MLIP_EXAFS_THREADS", 0)) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
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
    import ctypes
    import ctypes.util

    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    return all(mallopt(param, value) == 1 for param, value in _KEEP_FREED_MEMORY.items())


def available_potentials() -> list[PotentialInfo]:
    return list(AVAILABLE.values())


def is_checkpoint(spec: str | Path) -> bool:
    return str(spec).lower() not in AVAILABLE and Path(spec).suffix in {".pt", ".pth"}


def potential_id(spec: str | Path) -> str:
    """A stable identity for provenance: the name, or the checkpoint's sha256."""
    if str(spec).lower() in AVAILABLE:
        return str(spec).lower()
    path = Path(spec)
    if path.suffix not in {".pt", ".pth"}:
        raise unknown_potential(spec)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give a .pt written by 'mlip-exafs finetune'")
    return f"{path.name}:sha256:{sha256_file(path)[:16]}"


def unknown_potential(spec: str | Path) -> UserError:
    names = ", ".join(AVAILABLE)
    return UserError(f"unknown potential '{spec}'; use one of: {names}, or a checkpoint .pt written by 'mlip-exafs finetune'")


def supported_elements(spec: str | Path) -> set[int]:
    key = str(spec).lower()
    if key == "sevennet-0":
        return _sevennet_numbers()
    if is_checkpoint(spec) and Path(spec).is_file():
        payload = _load_payload(spec)
        if payload["format"] == SEVENNET_FORMAT:
            from ase.data import atomic_numbers

            return {atomic_numbers[s] for s in payload["config"]["chemical_species"]}
    return set(range(1, CHGNET_MAX_Z + 1))


def check_elements(spec: str | Path, atoms: Atoms) -> None:
    """Refuse a structure with an element the model never saw, before any compute."""
    missing = sorted(set(atoms.get_chemical_symbols()) - {_symbol(z) for z in supported_elements(spec)})
    if missing:
        raise UserError(
            f"potential '{spec}' does not cover element(s) {', '.join(missing)}; choose a potential trained on them"
        )


def get_calculator(spec: str | Path, threads: int | None = None) -> Calculator:
    """An ASE calculator for a potential name or a fine-tuned checkpoint path."""
    import contextlib
    import io

    set_torch_threads(threads)
    key = str(spec).lower()
    with contextlib.redirect_stdout(io.StringIO()):  # the models print banners; stdout is for results
        if key == "chgnet":
            from chgnet.model import CHGNet

            return _chgnet_calculator(CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False))
        if key == "sevennet-0":
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator("7net-0", device="cpu")
        path = Path(spec)
        if path.suffix in {".pt", ".pth"}:
            model = load_checkpoint_model(path)
            if is_sevennet_model(model):
                from sevenn.calculator import SevenNetCalculator

                return SevenNetCalculator(model=model, file_type="model_instance", device="cpu")
            return _chgnet_calculator(model)
    raise unknown_potential(spec)


def calculator_for(spec: str | Path, atoms: Atoms, threads: int | None = None) -> Calculator:
    """Check the elements, then build the calculator: the usual entry point."""
    if str(spec).lower() not in AVAILABLE and not Path(spec).exists():
        get_calculator(spec)  # raises the 'unknown potential' error
    check_elements(spec, atoms)
    return get_calculator(spec, threads)


def _chgnet_calculator(model) -> Calculator:
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(model=model, use_device="cpu")


def is_sevennet_model(model) -> bool:
    """True for a SevenNet model (pretrained or fine-tuned), without importing sevenn."""
    return type(model).__name__ == "AtomGraphSequential"


def save_chgnet_checkpoint(model, path: str | Path, metadata: dict) -> None:
    """Save weights + hyperparameters only (no pickled code), atomically."""
    _save_payload({"format": CHECKPOINT_FORMAT, "model": model.as_dict(), "metadata": metadata}, path)


def save_sevennet_checkpoint(model, path: str | Path, metadata: dict) -> None:
    """A fine-tuned SevenNet: its config and weights (no pickled code), atomically."""
    from mlip_exafs.finetune.sevennet import save_payload

    _save_payload({"format": SEVENNET_FORMAT, **save_payload(model), "metadata": metadata}, path)


def _save_payload(payload: dict, path: str | Path) -> None:
    import torch

    from mlip_exafs.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint_model(path: str | Path):
    """The CHGNet or SevenNet model of a checkpoint written by ``mlip-exafs finetune``; refuse anything else."""
    payload = _load_payload(path)
    if payload["format"] == SEVENNET_FORMAT:
        from mlip_exafs.finetune.sevennet import build_from

        return build_from(payload["config"], payload["state_dict"])
    from chgnet.model import CHGNet

    model = CHGNet.from_dict(payload["model"])
    model.eval()
    return model


def load_chgnet_checkpoint(path: str | Path):
    """The CHGNet model of a checkpoint written by :func:`save_chgnet_checkpoint`."""
    model = load_checkpoint_model(path)
    if is_sevennet_model(model):
        raise UserError(f"checkpoint {path} is a fine-tuned SevenNet, not a CHGNet; use it with --potential sevennet-0 workflows")
    return model


def _load_payload(path: str | Path) -> dict:
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; give a .pt written by 'mlip-exafs finetune'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"refusing checkpoint {path}: it is corrupted or not a plain-weights file ({first}); "
            "use a checkpoint written by 'mlip-exafs finetune'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, SEVENNET_FORMAT):
        raise UserError(f"refusing checkpoint {path}: not an mlip-exafs checkpoint; use one written by 'mlip-exafs finetune'")
    return payload


def checkpoint_metadata(path: str | Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True).get("metadata", {})


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]


def _sevennet_numbers() -> set[int]:
    from ase.data import atomic_numbers
    from sevenn.util import load_checkpoint

    return {atomic_numbers[s] for s in load_checkpoint("7net-0").config["chemical_species"]}
