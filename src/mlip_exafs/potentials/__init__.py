"""Potentials by name, checkpoint or Python callable, offline; the one place that knows model families.

A ``--potential`` is one of

* a registered name (:data:`REGISTRY`, ``mlip-exafs potentials``): weights shipped in an installed wheel;
* a checkpoint ``*.pt`` written by ``mlip-exafs finetune``; it names its family and holds weights only,
  read with ``torch.load(weights_only=True)`` so that no code in it can run;
* ``python:MODULE:CALLABLE[?key=value&...]``: any ASE calculator (``potentials/ase_callable.py``).

:func:`load_potential` turns any of them into a :class:`Potential` (family, model, device).
One module per family (``chgnet.py``, ``sevennet.py``) implements :class:`ModelFamily`;
adding a family is adding a module and a line in :data:`FAMILIES` (docs/potentials.md).
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from mlip_exafs.errors import UserError, first_line
from mlip_exafs.files import atomic_path, sha256_file
from mlip_exafs.potentials.ase_callable import AseCallableFamily, is_callable_spec
from mlip_exafs.potentials.base import ModelFamily, Potential, Pretrained
from mlip_exafs.potentials.chgnet import ChgnetFamily
from mlip_exafs.potentials.runtime import DEFAULT_DEVICE, DEVICES, Device, check_device_name, keep_freed_memory, resolve_device, set_torch_threads
from mlip_exafs.potentials.sevennet import SevenNetFamily

__all__ = [
    "DEFAULT_DEVICE", "DEVICES", "Device", "FAMILIES", "REGISTRY", "ModelFamily", "Potential", "Pretrained", "available_potentials",
    "calculator_for", "checkpoint_metadata", "get_calculator", "is_checkpoint", "keep_freed_memory", "load_potential",
    "device_for", "md_calculator_for", "pins_content", "potential_id", "resolve_device", "save_checkpoint", "set_torch_threads",
]

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (ChgnetFamily(), SevenNetFamily())}
PYTHON = AseCallableFamily()
REGISTRY: dict[str, Pretrained] = {entry.name: entry for family in FAMILIES.values() for entry in family.pretrained}
CHECKPOINT_SUFFIXES = {".pt", ".pth"}


def available_potentials() -> list[Pretrained]:
    return list(REGISTRY.values())


def is_checkpoint(spec: str | Path) -> bool:
    return str(spec).lower() not in REGISTRY and not is_callable_spec(str(spec)) and Path(spec).suffix.lower() in CHECKPOINT_SUFFIXES


def unknown_potential(spec: str | Path) -> UserError:
    from mlip_exafs.finetune import OutFiles  # lazy: finetune imports this module; only on this error path

    model = OutFiles(Path(spec)).model
    hint = f" ({model} is a fine-tuned model in that folder)" if str(spec).strip() and model.is_file() else ""
    return UserError(f"unknown potential '{spec}'{hint}; use one of: {', '.join(REGISTRY)}, a checkpoint .pt written by "
                     "'mlip-exafs finetune', or python:MODULE:CALLABLE (see 'mlip-exafs potentials')")


def potential_id(spec: str | Path) -> str:
    """A stable identity for provenance and caches: the name, the python: spec, or the checkpoint's sha256."""
    if str(spec).lower() in REGISTRY:
        return str(spec).lower()
    if is_callable_spec(str(spec)):
        return str(spec)
    path = Path(spec)
    if not str(spec).strip() or path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise unknown_potential(spec)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give a .pt written by 'mlip-exafs finetune'")
    return f"{path.name}:sha256:{sha256_file(path)[:16]}"


def pins_content(identity: str) -> bool:
    """Whether a :func:`potential_id` fixes what the potential computes, so its results may be cached across runs.

    A name (with its package's version, which caches add) and a checkpoint's hash do; a python: spec
    names code that can change under the same name.
    """
    return not is_callable_spec(identity)


def load_potential(spec: str | Path, device: str | None = None, threads: int | None = None) -> Potential:
    """Any ``--potential`` as a :class:`Potential` on ``device`` ('auto', 'cpu', 'cuda'; None: $MLIP_EXAFS_DEVICE or auto)."""
    identity = potential_id(spec)  # refuses unknown names and missing checkpoints before torch starts
    set_torch_threads(threads)
    device = device_for(spec, device)
    if is_callable_spec(str(spec)):
        return Potential(str(spec), identity, PYTHON, PYTHON.load(str(spec)), device)
    if str(spec).lower() in REGISTRY:
        entry = REGISTRY[str(spec).lower()]
        family = FAMILIES[entry.family]
        return Potential(entry.name, identity, family, family.load_pretrained(entry, device), device)
    payload = _load_payload(spec)
    family = family_of_payload(payload, spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = family.from_checkpoint(payload, device)
    except Exception as exc:  # the family's loader meets a damaged payload in its own way (KeyError, shape mismatch, ...)
        raise UserError(f"refusing checkpoint {spec}: it names family {family.name} but its weights do not load "
                        f"({type(exc).__name__}: {first_line(exc, default='no detail')}); "
                        "use a checkpoint written by 'mlip-exafs finetune'") from None
    return Potential(str(spec), identity, family, model, device, payload.get("metadata", {}))


def device_for(spec: str | Path, device: str | None = None) -> str:
    """The device a potential runs on, as runs record it: a ``python:`` callable chooses its own.

    The name asked for is still checked for a callable (a typo is refused), but not whether a GPU is
    there: a study's ``device`` reaches every step, and a callable beside GPU models passes its own.
    """
    if not is_callable_spec(str(spec)):
        return resolve_device(device)
    check_device_name(device)
    return CALLABLE_DEVICE


CALLABLE_DEVICE = "the callable's own"


def calculator_for(spec: str | Path, atoms: Atoms, threads: int | None = None, device: str | None = None) -> BaseCalculator:
    """Check the elements of ``atoms``, then the potential's general calculator: the usual entry point."""
    potential = load_potential(spec, device, threads)
    potential.check_elements(atoms)
    return potential.calculator()


def md_calculator_for(spec: str | Path, atoms: Atoms, threads: int | None = None, device: str | None = None) -> BaseCalculator:
    """Like :func:`calculator_for`, with the family's fast MD path where it has one."""
    potential = load_potential(spec, device, threads)
    potential.check_elements(atoms)
    return potential.md_calculator()


def get_calculator(spec: str | Path, threads: int | None = None, device: str | None = None) -> BaseCalculator:
    """The general calculator without an element check (for a caller that checks later or has no structure)."""
    return load_potential(spec, device, threads).calculator()


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(potential: Potential, path: str | Path, metadata: dict) -> None:
    """The model's plain weights, its family and ``metadata``, atomically."""
    import torch  # lazy: torch, seconds; potentials is imported by every stage

    family = potential.family
    payload = {"format": family.checkpoint_format, "family": family.name, **family.checkpoint_payload(potential.model), "metadata": metadata}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def family_of_payload(payload: dict, path: str | Path) -> ModelFamily:
    """The family a checkpoint names: its ``family`` key, or (older checkpoints) its ``format``."""
    by_format = {family.checkpoint_format: family for family in FAMILIES.values()}
    family = FAMILIES.get(payload.get("family")) or by_format.get(payload.get("format"))
    if family is None:
        raise UserError(f"refusing checkpoint {path}: not an mlip-exafs checkpoint of a known family; use one written by 'mlip-exafs finetune'")
    return family


def _load_payload(path: str | Path) -> dict:
    import torch  # lazy: torch, seconds; potentials is imported by every stage

    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; give a .pt written by 'mlip-exafs finetune'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = first_line(exc).split(". ")[0]
        raise UserError(
            f"refusing checkpoint {path}: it is corrupted or not a plain-weights file ({first}); "
            "use a checkpoint written by 'mlip-exafs finetune'"
        ) from None
    if not isinstance(payload, dict):
        raise UserError(f"refusing checkpoint {path}: not an mlip-exafs checkpoint; use one written by 'mlip-exafs finetune'")
    family_of_payload(payload, path)
    return payload


def checkpoint_metadata(path: str | Path) -> dict:
    return _load_payload(path).get("metadata", {})
