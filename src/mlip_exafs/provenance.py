"""What every output records about how it was made, so a result can be reproduced."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from typing import Any

import mlip_exafs

TRACKED_PACKAGES = (
    "ase",
    "chgnet",
    "sevenn",
    "torch",
    "numpy",
    "scipy",
    "pymatgen",
    "xraylarch",
    "dask",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    versions = {"mlip-exafs": mlip_exafs.__version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A block to put under ``"provenance"`` in every JSON output."""
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "packages": package_versions(),
        "inputs": inputs or {},
    }
