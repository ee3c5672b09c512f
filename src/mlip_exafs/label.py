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

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip_exafs.cp2k import (SOLVER_ONLY, Cp2kSettings, abort_reason, check_can_label, check_start_moments, cp2k_version, kpoint_mesh,
                             make_calculator, scf_converged, scf_steps, site_kinds, spin_moments)
from mlip_exafs.dataset import structure_fingerprint
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_database, db_write_guard, lock_holder, writer_lock
from mlip_exafs.processes import process_alive

UNITS = {
    "energy": "eV",
    "forces": "eV/Å",
    "stress": "eV/Å^3, Voigt (xx, yy, zz, yz, xz, xy), positive = tensile (ASE convention)",
}
INFO_KEYS = ("method", "temperature_k", "rattle_a", "seed", "sample_potential")


def read_structures(path: Path) -> list[Atoms]:
    """Structures to label; each needs a unique ``uid`` (``mlip-exafs sample`` writes one)."""
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
    check_output_database(db_path)  # a folder or a path below a file: one line, not ASE's ValueError
    if not db_path.exists():
        return set()
    with ase.db.connect(db_path) as db:
        return {row.uid for row in db.select(columns=["key_value_pairs"]) if "uid" in row}


def labelled_geometries(db_path: Path) -> dict[str, str]:
    """uid -> geometry fingerprint of every row: resuming by uid alone would skip a structure the file now holds
    with another geometry (a structure file re-sampled or edited after labelling)."""
    check_output_database(db_path)
    if not db_path.exists():
        return {}
    with ase.db.connect(db_path) as db:
        return {row.uid: structure_fingerprint(row.toatoms()) for row in db.select() if "uid" in row}


def check_same_geometries(frames: list[Atoms], labelled: dict[str, str], structures: Path, db_path: Path) -> None:
    changed = [a.info["uid"] for a in frames if a.info["uid"] in labelled and labelled[a.info["uid"]] != structure_fingerprint(a)]
    if changed:
        raise UserError(f"{len(changed)} structure(s) of {structures} (first: {changed[0]}) differ from the rows of the same uid in {db_path}: "
                        "the structures changed since they were labelled; label them into a new database file, or restore the structures file")


def label_structures(
    structures: Path,
    db_path: Path,
    settings: Cp2kSettings,
    mpi_ranks: int = 2,
    limit: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    reverse: bool = False,
) -> dict:
    """Label every structure not yet in ``db_path``; returns counts and timings.

    ``reverse`` works from the end of the file, so a second labeller on the same
    file and database meets the first in the middle; each structure is skipped if
    another labeller finished it meanwhile.
    """
    check_output_database(db_path)
    direction = "reverse" if reverse else "forward"  # one labeller per direction: the two meet in the middle
    with writer_lock(Path(db_path).parent, "label", _lock_name(Path(db_path), direction), "database file's folder",
                     hint=f"wait for it to finish, or run this labeller with{'out' if reverse else ''} {setting('reverse')}"):
        return _label_structures(structures, Path(db_path), settings, mpi_ranks, limit, on_progress, reverse)


def _lock_name(db_path: Path, direction: str) -> str:
    return f".{db_path.name}.{direction}.lock"


def running_labeller(db_path: Path) -> str | None:
    """The pid of a labeller still writing ``db_path`` (either direction), or None: a copy taken now could be torn."""
    for direction in ("forward", "reverse"):
        holder = lock_holder(db_path.parent / _lock_name(db_path, direction))
        if holder is not None:
            return holder
    return None


def _label_structures(structures: Path, db_path: Path, settings: Cp2kSettings, mpi_ranks: int, limit: int | None,
                      on_progress: Callable[[int, int, float], None] | None, reverse: bool) -> dict:
    frames = read_structures(structures)
    version = cp2k_version()  # fails clearly, before anything is written, if CP2K is missing
    check_can_label(settings, {symbol for atoms in frames for symbol in atoms.get_chemical_symbols()})
    check_start_moments(settings, frames)
    with db_write_guard(db_path):  # a new database that cannot be written is not left behind
        ensure_settings(db_path, settings)
    labelled = labelled_geometries(db_path)
    check_same_geometries(frames, labelled, structures, db_path)
    done = set(labelled)
    todo = group_by_cell([a for a in (frames[::-1] if reverse else frames) if a.info["uid"] not in done])[:limit]
    failures = db_path.parent / f"{db_path.stem}-cp2k-failures"
    times: list[float] = []
    with Cp2kSession(settings, mpi_ranks) as session:
        for i, atoms in enumerate(todo):
            elapsed = _label_one(session, atoms, db_path, failures, version, settings)
            if elapsed is not None:
                times.append(elapsed)
            if on_progress:
                on_progress(i + 1, len(todo), elapsed or 0.0)
    return {"total": len(frames), "already_done": len(done & {a.info["uid"] for a in frames}), "labelled": len(times), "seconds": times}


def cell_key(atoms: Atoms) -> tuple:
    """What a running CP2K is tied to: species order and cell (grids and k-points follow the cell)."""
    return (tuple(atoms.numbers), tuple(np.round(atoms.cell.array, 8).ravel()))


def group_by_cell(frames: list[Atoms]) -> list[Atoms]:
    """Structures sharing a cell next to each other, groups in order of first appearance.

    Each change of cell restarts CP2K; within a group one CP2K keeps running
    (see :class:`Cp2kSession`). The sampled files interleave MD snapshots with
    strained cells, so file order would restart CP2K far more often.
    """
    first_seen: dict[tuple, int] = {}
    for atoms in frames:
        first_seen.setdefault(cell_key(atoms), len(first_seen))
    return sorted(frames, key=lambda atoms: first_seen[cell_key(atoms)])  # stable: file order within a cell


def _label_one(session: "Cp2kSession", atoms: Atoms, db_path: Path, failures: Path, version: str, settings: Cp2kSettings) -> float | None:
    """CP2K on one structure and its row; None when another labeller on the same database has it (first row kept)."""
    uid = atoms.info["uid"]
    if uid in finished_uids(db_path):
        return None
    start = time.perf_counter()
    label = session.evaluate(atoms, failures / uid)
    elapsed = time.perf_counter() - start
    data = {"strain_voigt": np.asarray(atoms.info["strain_voigt"])} if "strain_voigt" in atoms.info else {}
    if label.spin_moments_mub is not None:
        data["spin_moments_mub"] = label.spin_moments_mub
        data["start_moments_mub"] = np.array([kind.moment_mub for kind in site_kinds(settings, atoms)])
    keys = _cp2k_row_keys(atoms, label, elapsed, version, settings)
    if uid in finished_uids(db_path):
        return None
    with db_write_guard(db_path):  # disk full: one-line error, every committed row kept
        write_row(db_path, atoms, label.energy_ev, label.forces_ev_a, label.stress_ev_a3, keys, data)
    return elapsed


class Cp2kSession:
    """One running CP2K, reused while consecutive structures share species and cell.

    Reuse only moves the atoms and saves CP2K's start-up. With k-points CP2K
    cannot extrapolate the wavefunction (its default, ASPC, is not available
    for k-points; the output says "Extrapolation method: initial_guess"), so
    each SCF starts from the atomic guess; starting from the previous density
    matrix (USE_PREV_P) was measured not to converge faster (MoS2 54 atoms:
    26 SCF steps against 23-26 cold, docs/datasets.md). A new cell or new species
    starts a fresh CP2K, so grids and k-points always belong to the structure.
    CP2K runs in a short temporary folder: it aborts on a PROJECT path longer
    than 80 characters.
    """

    def __init__(self, settings: Cp2kSettings, mpi_ranks: int):
        self.settings, self.mpi_ranks = settings, mpi_ranks
        self.calc = None
        self.workdir: Path | None = None
        self.key: tuple | None = None

    def __enter__(self) -> "Cp2kSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.calc is not None:
            self.calc.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.calc, self.workdir, self.key = None, None, None

    def _calculator_for(self, atoms: Atoms):
        key = (cell_key(atoms), tuple(site_kinds(self.settings, atoms)))  # kinds are in CP2K's input, not moved with the atoms
        if key != self.key:
            self.close()
            self.workdir = new_workdir(WORKDIR_PARENT)
            self.calc = make_calculator(self.settings, atoms, self.workdir, self.mpi_ranks)
            self.key = key
        return self.calc

    def evaluate(self, atoms: Atoms, keep_dir: Path) -> "Cp2kLabel":
        """Energy, forces, stress, whether the SCF converged and in how many steps."""
        try:
            calc = self._calculator_for(atoms)
        except UserError:
            raise
        except Exception as exc:  # cp2k_shell died at start-up (MPI, missing data files, killed)
            self.close()
            raise UserError(f"CP2K did not start for structure {atoms.info['uid']} ({type(exc).__name__}); check that 'cp2k_shell' runs on its own") from None
        output = self.workdir / "cp2k.out"
        offset = output.stat().st_size if output.exists() else 0
        work = atoms.copy()
        work.calc = calc
        try:
            energy = work.get_potential_energy()
            forces = work.get_forces()
            stress = work.get_stress(voigt=True)
        except Exception as exc:
            reason = abort_reason(output, offset) or type(exc).__name__
            _keep_output(self.workdir, keep_dir)
            self.close()
            raise UserError(f"CP2K failed on structure {atoms.info['uid']} ({reason}); see {keep_dir / 'cp2k.out'}") from None
        converged = scf_converged(output, offset)
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
            converged = False
        steps = scf_steps(output, offset)
        spins = spin_moments(output, offset)
        if not converged:  # keep the evidence, and do not start the next SCF from this one
            _keep_output(self.workdir, keep_dir)
            self.close()
        return Cp2kLabel(float(energy), forces, stress, converged, steps, spins)


class Cp2kLabel(NamedTuple):
    """One structure's CP2K result; stress in ASE's sign convention (positive = tensile)."""

    energy_ev: float
    forces_ev_a: np.ndarray
    stress_ev_a3: np.ndarray
    scf_converged: bool
    scf_steps: int | None
    spin_moments_mub: np.ndarray | None = None  # Mulliken, per atom; spin-polarised labels only


def ensure_settings(db_path: Path, settings: Cp2kSettings) -> None:
    """Record the CP2K settings in the database; refuse to mix levels of theory in one file."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(db_path) as db:
        meta = db.metadata
        old = meta.get("settings_hash")
        if meta.get("settings", {}).get("imported"):
            raise UserError(f"{db_path} holds imported {meta.get('dft_code', {}).get('name', '')} labels; a database never "
                            "mixes levels of theory: label into a new database file")
        if old is None:
            db.metadata = {
                "dft_code": {"name": "CP2K", "version": cp2k_version()},
                "settings": settings.level_of_theory(),  # rows record their solver
                "settings_hash": settings.settings_hash(),
                "units": UNITS,
            } | ({"nonmagnetic_acknowledged": True} if settings.nonmagnetic else {})  # spin-restricted labels of Cr/Mn/Fe/Co/Ni, by choice
        elif old != settings.settings_hash():
            raise UserError(
                f"{db_path} was labelled with other CP2K settings (hash {old}); "
                "use the same settings to resume, or write to a new database file"
            )


WORKDIR_PARENT = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
WORKDIR_PREFIX = "mlx-cp2k-"


def new_workdir(parent: Path) -> Path:
    """A short folder for one CP2K run, marked with our pid; stale ones of killed runs are removed first."""
    remove_stale_workdirs(parent)
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
    (workdir / "owner.pid").write_text(str(os.getpid()))
    return workdir


def remove_stale_workdirs(parent: Path) -> list[Path]:
    """Remove CP2K folders whose labelling process is gone.

    A killed run (session end, ``kill -9``) never reaches its cleanup, and each
    54-atom WS2 folder holds ~1.7 GB of wavefunctions: hours of resumed
    labelling would fill the disk. Folders without an owner file are left alone.
    """
    removed = []
    for workdir in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            pid = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not process_alive(pid):
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(workdir)
    return removed


def _keep_output(workdir: Path, keep_dir: Path) -> None:
    keep_dir.mkdir(parents=True, exist_ok=True)
    for name in ("cp2k.out", "cp2k.inp"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, keep_dir / name)


def write_row(db_path: Path, atoms: Atoms, energy: float, forces, stress, keys: dict, data: dict | None = None) -> None:
    """One committed row per structure (an ASE db write is one transaction).

    ``keys`` must hold ``uid`` and ``scf_converged``; energy eV, forces eV/Å,
    stress eV/Å^3 in ASE's sign convention (positive = tensile).
    """
    clean = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    results = {"energy": float(energy), "forces": np.asarray(forces, dtype=float)}
    if stress is not None:
        results["stress"] = np.asarray(stress, dtype=float)
    clean.calc = SinglePointCalculator(clean, **results)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(db_path) as db:
        db.write(clean, key_value_pairs=keys, data=data or {})


def _cp2k_row_keys(atoms: Atoms, label: Cp2kLabel, wall_time_s: float, version: str, settings: Cp2kSettings) -> dict:
    keys = {
        "uid": atoms.info["uid"],
        "scf_converged": bool(label.scf_converged),
        "wall_time_s": round(float(wall_time_s), 2),
        "dft_code": "CP2K",
        "cp2k_version": f"v{version}",  # ase.db refuses float-like strings
        "settings_hash": settings.settings_hash(),
        "kpts": "x".join(str(k) for k in kpoint_mesh(atoms, settings.kspacing_inv_a)),
        **{name: getattr(settings, name) for name in sorted(SOLVER_ONLY)},  # the hash leaves them out
    }
    if label.scf_steps is not None:
        keys["scf_steps"] = label.scf_steps
    if label.spin_moments_mub is not None:
        keys["magnetic_moment_mub"] = round(float(label.spin_moments_mub.sum()), 4)  # the cell's; per atom in the row's data
    for key in INFO_KEYS:
        if key in atoms.info:
            keys[key] = atoms.info[key]
    return keys
