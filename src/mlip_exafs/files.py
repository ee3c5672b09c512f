"""Write outputs so that a crash never leaves a half-written file behind.

Every file is written to a temporary sibling and renamed into place: readers
see the old file or the complete new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlip_exafs.errors import UserError


UMASK = os.umask(0o022)
os.umask(UMASK)  # reading the umask means setting it; put it back at once


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600 files; outputs get the permissions any new file would
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {exc.strerror or exc}; free disk space or choose another output folder") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def db_write_guard(path: str | Path) -> Iterator[None]:
    """Writes to an ASE SQLite database: a full disk is a one-line error, not a traceback.

    Each ASE write is one transaction, so an existing database keeps every
    committed row; a database that this block created is removed again.
    """
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
        if not existed:
            for leftover in (path, path.with_name(path.name + "-journal")):
                leftover.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc)
        full = getattr(exc, "errno", None) == errno.ENOSPC or "full" in reason or "disk" in reason  # SQLite: "disk I/O error" at a size limit
        raise UserError(f"could not write {path}: {reason}; {'free disk space or ' if full else ''}choose another database file") from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_jsonable, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; run the step that writes it first") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); delete it and rerun the step that writes it") from None


def save_figure(fig, path: str | Path, vector: bool = False) -> None:
    """Save a matplotlib figure atomically and close it; ``vector``: also an SVG beside it, for a paper."""
    import matplotlib.pyplot as plt  # lazy: matplotlib; files is imported at CLI start, keeps --help fast

    path = Path(path)
    targets = [path, path.with_suffix(".svg")] if vector and path.suffix != ".svg" else [path]
    for target in targets:
        fmt = target.suffix.lstrip(".") or "png"
        svg = {"metadata": {"Date": None}} if fmt == "svg" else {}  # with a fixed hash salt: the same figure, the same file
        with atomic_path(target) as tmp, plt.rc_context({"svg.hashsalt": "mlip-exafs"}):
            fig.savefig(tmp, format=fmt, dpi=200 if vector else 110, bbox_inches="tight", **svg)
    plt.close(fig)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a finished temporary folder into place, replacing an older result."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Refuse an output folder that cannot be created or written, before any work starts.

    ``what`` names it in plain words (not a CLI flag: a study's steps call this too).

    An existing file at ``path`` (or on its way), or a read-only parent, would
    otherwise surface hours later as a traceback from the first write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is an existing file, not a folder; give a folder path (it is created if missing)")
    _check_creatable(path, path, what)
    return path


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_output_file(path: str | Path, what: str, example: str) -> Path:
    """Like :func:`check_output_folder`, for an output that is one file: not a folder, and creatable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; give a file path, e.g. {path / example}")
    _check_creatable(path, path.parent, what)
    return path


def check_output_database(path: str | Path, what: str = "database file") -> Path:
    """:func:`check_output_file` for an ASE SQLite database: the .db suffix, and no other kind of file overwritten."""
    path = check_output_file(path, what, example="train.db")
    if path.suffix != ".db":
        raise UserError(f"{what} {path} needs the .db suffix (an ASE SQLite database); e.g. {path.with_suffix('.db')}")
    if path.is_file() and path.stat().st_size and not _is_sqlite(path):
        raise UserError(f"{what} {path} exists and is not an SQLite database; choose another {what}")
    return path


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _check_creatable(path: Path, folder: Path, what: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path} cannot be created: {existing} is a file, not a folder; choose another {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be written: {existing} is read-only for this user; choose another {what}")


def _created_folders(folder: Path) -> list[Path]:
    """Make ``folder`` (and missing parents); return the ones this call created, deepest first."""
    created = []
    missing = folder
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def writer_lock(folder: str | Path, verb: str, name: str | None = None, what: str = "output folder",
                hint: str | None = None) -> Iterator[None]:
    """One process writing into ``folder`` at a time: two would interleave frames, epochs or rows.

    A kernel lock (``flock``) is released when its process dies, even by
    ``kill -9``, so a killed run never blocks the rerun that resumes it. The lock
    file is removed on a normal exit, and so is a folder the lock had to create
    if nothing was written into it: a refused run leaves nothing behind.
    """
    folder = check_output_folder(folder, what)
    lock_path = folder / (name or f".{verb}.lock")
    created = _created_folders(folder)
    handle = _acquire(lock_path, verb, folder, hint or f"wait for it to finish or stop it, or choose another {what}")
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still holding it: a waiting opener sees a stale inode and retries
        handle.close()
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty


def lock_holder(lock_path: Path) -> str | None:
    """The pid in a writer lock that a live process holds; None when it is absent or free (a killed writer's is free)."""
    try:
        handle = open(lock_path)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
    return None


def _acquire(lock_path: Path, verb: str, folder: Path, hint: str):
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"another {verb} (pid {holder}) is running into {folder}; {hint}") from None
        try:
            same_file = os.fstat(handle.fileno()).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # else the holder removed it between our open and our lock: lock the new file
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            return handle
        handle.close()
