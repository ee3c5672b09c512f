"""Label structures with CP2K and store them in an ASE SQLite database.

Units in the database (ASE conventions, stated once here and in docs/datasets.md):
energy eV (CP2K's pseudopotential scale), forces eV/Å, stress eV/Å^3 in Voigt
order (xx, yy, zz, yz, xz, xy) with positive = tensile (ASE's sign; VASP prints
the opposite sign in kbar).

Resumable: each finished structure is one committed row, keyed by its ``uid``;
a rerun skips rows that exist, and a ``kill -9`` loses only the structure in
flight. A structure whose SCF did not converge is stored with
``scf_converged=False`` and never used for training or validation.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip_exafs.cp2k import Cp2kSettings, cp2k_version, kpoint_mesh, make_calculator, scf_converged
from mlip_exafs.errors import UserError

UNITS = {
    "energy": "eV",
    "forces": "eV/Å",
    "stress": "eV/Å^3, Voigt (xx, yy, zz, yz, xz, xy), positive = tensile (ASE convention)",
}
INFO_KEYS = ("method", "temperature_k", "rattle_a", "seed", "sample_potential")


def read_structures(path: Path) -> list[Atoms]:
    """Structures to label; each needs a unique ``uid`` (``mlip-exafs sample`` writes one)."""
    import ase.io

    if not path.exists():
        raise UserError(f"structures file {path} does not exist; write one with 'mlip-exafs sample'")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:
        raise UserError(f"cannot read structures from {path} ({type(exc).__name__}: {exc}); give an extxyz file") from None
    if not frames:
        raise UserError(f"{path} holds no structures; sample some with 'mlip-exafs sample'")
    for i, atoms in enumerate(frames):
        atoms.info.setdefault("uid", f"{path.stem}-{i:04d}")
    uids = [a.info["uid"] for a in frames]
    if len(set(uids)) != len(uids):
        raise UserError(f"{path} has duplicate 'uid' values; give every structure a unique uid")
    return frames


def finished_uids(db_path: Path) -> set[str]:
    import ase.db

    if not db_path.exists():
        return set()
    with ase.db.connect(db_path) as db:
        return {row.uid for row in db.select(columns=["key_value_pairs"]) if "uid" in row}


def label_structures(
    structures: Path,
    db_path: Path,
    settings: Cp2kSettings,
    mpi_ranks: int = 2,
    limit: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Label every structure not yet in ``db_path``; returns counts and timings."""
    frames = read_structures(structures)
    version = cp2k_version()  # fails clearly, before anything is written, if CP2K is missing
    ensure_settings(db_path, settings)
    done = finished_uids(db_path)
    todo = [a for a in frames if a.info["uid"] not in done][:limit]
    failures = db_path.parent / f"{db_path.stem}-cp2k-failures"
    times: list[float] = []
    for i, atoms in enumerate(todo):
        elapsed = _label_one(atoms, db_path, settings, version, failures / atoms.info["uid"], mpi_ranks)
        times.append(elapsed)
        if on_progress:
            on_progress(i + 1, len(todo), elapsed)
    return {"total": len(frames), "already_done": len(done & {a.info["uid"] for a in frames}), "labelled": len(todo), "seconds": times}


def ensure_settings(db_path: Path, settings: Cp2kSettings) -> None:
    """Record the CP2K settings in the database; refuse to mix levels of theory in one file."""
    import ase.db

    db_path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(db_path) as db:
        meta = db.metadata
        old = meta.get("settings_hash")
        if old is None:
            db.metadata = {
                "dft_code": {"name": "CP2K", "version": cp2k_version()},
                "settings": settings.model_dump(),
                "settings_hash": settings.settings_hash(),
                "units": UNITS,
            }
        elif old != settings.settings_hash():
            raise UserError(
                f"{db_path} was labelled with other CP2K settings (hash {old}); "
                "use the same settings to resume, or write to a new --db"
            )


def _label_one(atoms: Atoms, db_path: Path, settings: Cp2kSettings, version: str, keep_dir: Path, mpi_ranks: int) -> float:
    """Run CP2K on one structure and commit one row (or raise, writing nothing).

    CP2K runs in a short temporary folder: it aborts on a PROJECT path longer
    than 80 characters. On failure its output is kept in ``keep_dir``.
    """
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="mlx-cp2k-", dir="/tmp" if Path("/tmp").is_dir() else None))
    work = atoms.copy()
    calc = make_calculator(settings, work, workdir, mpi_ranks)
    start = time.perf_counter()
    try:
        work.calc = calc
        energy = work.get_potential_energy()
        forces = work.get_forces()
        stress = work.get_stress(voigt=True)
    except Exception as exc:
        calc.close()
        _keep_output(workdir, keep_dir)
        raise UserError(f"CP2K failed on structure {atoms.info['uid']} ({type(exc).__name__}); see {keep_dir / 'cp2k.out'}") from None
    calc.close()
    elapsed = time.perf_counter() - start
    converged = scf_converged(workdir / "cp2k.out")
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        converged = False
    if not converged:
        _keep_output(workdir, keep_dir)
    data = {"strain_voigt": np.asarray(atoms.info["strain_voigt"])} if "strain_voigt" in atoms.info else None
    write_row(db_path, atoms, energy, forces, stress, _cp2k_row_keys(atoms, converged, elapsed, version, settings), data)
    shutil.rmtree(workdir, ignore_errors=True)
    return elapsed


def _keep_output(workdir: Path, keep_dir: Path) -> None:
    keep_dir.mkdir(parents=True, exist_ok=True)
    for name in ("cp2k.out", "cp2k.inp"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, keep_dir / name)
    shutil.rmtree(workdir, ignore_errors=True)


def write_row(db_path: Path, atoms: Atoms, energy: float, forces, stress, keys: dict, data: dict | None = None) -> None:
    """One committed row per structure (an ASE db write is one transaction).

    ``keys`` must hold ``uid`` and ``scf_converged``; energy eV, forces eV/Å,
    stress eV/Å^3 in ASE's sign convention (positive = tensile).
    """
    import ase.db

    clean = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    results = {"energy": float(energy), "forces": np.asarray(forces, dtype=float)}
    if stress is not None:
        results["stress"] = np.asarray(stress, dtype=float)
    clean.calc = SinglePointCalculator(clean, **results)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(db_path) as db:
        db.write(clean, key_value_pairs=keys, data=data or {})


def _cp2k_row_keys(atoms: Atoms, converged: bool, wall_time_s: float, version: str, settings: Cp2kSettings) -> dict:
    keys = {
        "uid": atoms.info["uid"],
        "scf_converged": bool(converged),
        "wall_time_s": round(float(wall_time_s), 2),
        "dft_code": "CP2K",
        "cp2k_version": f"v{version}",  # ase.db refuses float-like strings
        "settings_hash": settings.settings_hash(),
        "kpts": "x".join(str(k) for k in kpoint_mesh(atoms, settings.kspacing_inv_a)),
    }
    for key in INFO_KEYS:
        if key in atoms.info:
            keys[key] = atoms.info[key]
    return keys
