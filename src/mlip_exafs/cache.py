"""The user's cache: results that are pure functions of their inputs, shared by every run on this machine.

A temperature series runs one MD and one EXAFS per potential and temperature,
and several of their costly parts do not depend on the temperature: the FEFF8L
potentials of one reference cluster, the highest vibrational frequency of one
potential at one structure. Each is stored once under the hash of everything it
depends on (inputs and package versions), so the second step finds it instead
of computing it again. ``MLIP_EXAFS_CACHE`` moves the cache (default
``~/.cache/mlip-exafs``); deleting it costs only time. A cache that cannot be
written is not used, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from mlip_exafs.files import sha256_text, write_json
from mlip_exafs.provenance import package_versions

KEY_CHARS = 24


def cache_dir() -> Path:
    return Path(os.environ.get("MLIP_EXAFS_CACHE", Path.home() / ".cache" / "mlip-exafs"))


def entry_path(kind: str, key: Any) -> Path:
    """Where the result of ``kind`` for ``key`` (any JSON-able value) lives; package versions are part of the key."""
    text = json.dumps({"key": key, "versions": package_versions()}, sort_keys=True)
    return cache_dir() / kind / sha256_text(text)[:KEY_CHARS]


def cached_json(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-able value, computed once per key."""
    path = entry_path(kind, key).with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # missing or unreadable: compute it again
        return json.loads(path.read_text())["value"]
    value = compute()
    with contextlib.suppress(OSError):  # an unwritable cache: the value is simply not kept
        write_json(path, {"value": value})
    return value


def cached_files(kind: str, key: Any) -> Path | None:
    """The cache folder of ``key`` if a finished one exists."""
    folder = entry_path(kind, key)
    return folder if folder.is_dir() else None


def store_files(kind: str, key: Any, files: list[Path]) -> None:
    """Copy finished files into the cache folder of ``key``; it appears whole or not at all (first writer wins)."""
    folder = entry_path(kind, key)
    if folder.is_dir():
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    except OSError:  # a read-only or full cache: the result simply is not shared
        return
    try:
        for path in files:
            shutil.copy(path, tmp / path.name)
        os.rename(tmp, folder)
    except OSError:  # a full disk, or another writer's folder arrived first
        shutil.rmtree(tmp, ignore_errors=True)
