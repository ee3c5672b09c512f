"""Labelled datasets: where they live, how to load them, what they contain.

A dataset is a folder with ``train.db`` and ``test.db`` (ASE SQLite databases
written by ``mlip-exafs label`` or ``mlip-exafs import``) and ``dataset.json``
(how it was made). The shipped datasets (``ws2``, ``w-bcc``, ``mos2``) are stored
gzip-compressed inside the package and unpacked to a cache on first use.
Every verb that takes a DATASET accepts a shipped name, a dataset folder, or a
single ``.db`` file (then the split is the whole file).

Rows with ``scf_converged=False`` are never returned for training or testing.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sqlite3
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from mlip_exafs.cache import cache_dir
from mlip_exafs.errors import UserError
from mlip_exafs.files import atomic_path, read_json, sha256_file, write_json

Split = Literal["train", "test", "all"]
SHIPPED = ("ws2", "w-bcc", "mos2")  # mos2: packed once its labelling (datasets/label-all.sh) is finished


def shipped_dir(name: str) -> Path:
    return Path(str(resources.files("mlip_exafs") / "data" / "datasets" / name))


def packed_dir(name: str) -> Path:
    """A shipped dataset's packed files; a one-line error for a name whose labels are not packed yet."""
    src = shipped_dir(name)
    if not (src / "train.db.gz").exists():
        raise UserError(
            f"shipped dataset '{name}' is not packed into this installation yet (its CP2K labelling is in progress, "
            "see docs/datasets.md); give a labelled dataset folder instead"
        )
    return src


def _unpack_shipped(name: str) -> Path:
    """Decompress a shipped dataset into the cache (once per content version)."""
    src = packed_dir(name)
    tag = sha256_file(src / "train.db.gz")[:12] + sha256_file(src / "test.db.gz")[:12]
    dest = cache_dir() / "datasets" / f"{name}-{tag}"
    for split in ("train", "test"):
        target = dest / f"{split}.db"
        if not target.exists():
            with gzip.open(src / f"{split}.db.gz", "rb") as fin, atomic_path(target) as tmp:
                with open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
    if (src / "dataset.json").exists() and not (dest / "dataset.json").exists():
        shutil.copy(src / "dataset.json", dest / "dataset.json")
    return dest


def dataset_folder(spec: str | Path) -> Path | None:
    """The folder of a dataset name or folder path; None for a single .db file."""
    if str(spec) in SHIPPED and not Path(spec).exists():
        return _unpack_shipped(str(spec))
    path = Path(spec)
    if path.is_dir():
        if not (path / "train.db").exists() and not (path / "test.db").exists():
            raise UserError(f"dataset folder {path} has neither train.db nor test.db; label or import structures into it first")
        return path
    if path.suffix == ".db":
        if not path.exists():
            raise UserError(f"dataset file {path} does not exist; check the path")
        return None
    raise UserError(f"unknown dataset '{spec}'; use a shipped name ({', '.join(SHIPPED)}), a dataset folder or a .db file")


def resolve_db(spec: str | Path, split: Split) -> Path:
    folder = dataset_folder(spec)
    if folder is None:
        return Path(spec)
    if split == "all":
        raise UserError(f"dataset {spec} is a folder with splits; ask for 'train' or 'test'")
    db = folder / f"{split}.db"
    if not db.exists():
        raise UserError(f"dataset {spec} has no {split} split ({db} missing); label or import a {split} set")
    return db


def content_tag(spec: str | Path, split: Split) -> str:
    """A short hash of the file a split is read from, so cached results notice new or changed labels."""
    if str(spec) in SHIPPED and not Path(spec).exists():
        return sha256_file(packed_dir(str(spec)) / f"{split}.db.gz")[:16]
    return sha256_file(resolve_db(spec, split))[:16]


def load_structures(spec: str | Path, split: Split = "all", converged_only: bool = True) -> list[Atoms]:
    """Labelled structures with energy (eV), forces (eV/Å), stress (eV/Å^3, ASE sign) attached."""
    db_path = resolve_db(spec, split)  # a single .db file is the whole dataset, whatever the split
    frames = []
    with _connect_input(db_path) as db:
        for row in db.select():
            if converged_only and not is_converged(row, db_path):
                continue
            frames.append(_row_to_atoms(row, db_path))
    if not frames:
        raise UserError(f"dataset {spec} ({split}) holds no usable labelled structures; label or import some first")
    for atoms in frames:
        _check_finite(atoms, spec)
    return frames


def is_converged(row, db_path: Path) -> bool:
    """A row's ``scf_converged``: absent (imported labels) counts as converged; anything but true/false is refused.

    A text value ('yes', 'False') was counted as unconverged by ``dataset info`` but used for training
    by every other verb, since any non-empty text is true in Python.
    """
    value = row.get("scf_converged", True)
    if not isinstance(value, (bool, np.bool_)):
        raise UserError(f"{db_path}: row {row.id} has scf_converged = {value!r} ({type(value).__name__}), not true or false; "
                        "relabel it or set the key to a boolean")
    return bool(value)


def _row_to_atoms(row, db_path: Path) -> Atoms:
    missing = [key for key in ("energy", "forces") if row.get(key) is None]
    if missing:
        raise UserError(f"{db_path}: row {row.id} ({row.get('uid', 'no uid')}) has no {' and no '.join(missing)}, it is unlabelled; "
                        "label it with 'mlip-exafs label' or import labelled structures")
    atoms = row.toatoms()
    results = {"energy": row.energy, "forces": row.forces}
    if row.get("stress") is not None:
        results["stress"] = row.stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(row.key_value_pairs)
    atoms.info["row_id"] = row.id
    return atoms


def _check_finite(atoms: Atoms, spec) -> None:
    calc = atoms.calc
    values = [np.atleast_1d(calc.results[k]) for k in ("energy", "forces", "stress") if k in calc.results]
    if not all(np.isfinite(v).all() for v in values):
        uid = atoms.info.get("uid", atoms.info.get("row_id"))
        raise UserError(f"dataset {spec}: structure {uid} has NaN or infinite labels; remove it or relabel it")


def db_metadata(db_path: Path) -> dict:
    with _connect_input(db_path) as db:
        return dict(db.metadata)


def _connect_input(db_path: Path):
    """ASE database that is an input: checked read-only first, since ASE adds its tables to any SQLite file it opens."""
    import ase.db  # lazy: ase.db loads ase.io; dataset is imported at CLI start, keeps --help fast

    check_ase_database(db_path)
    return ase.db.connect(db_path, type="db")


@contextmanager
def _read_only(db_path: Path):
    """An SQLite connection that cannot create or change the file: checking a user's database never writes it."""
    con = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield con
    finally:
        con.close()


def check_ase_database(db_path: str | Path) -> None:
    """Refuse an empty file, a non-SQLite file or another program's SQLite file, without writing to it."""
    db_path = Path(db_path)
    try:
        with _read_only(db_path) as con:
            has_systems = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='systems'").fetchone()[0] > 0
    except sqlite3.Error as exc:
        raise UserError(f"{db_path} is not an SQLite database ({exc}); give an ASE database written by 'mlip-exafs label' or 'import'") from None
    if not has_systems:
        raise UserError(f"{db_path} is not an ASE database (it has no 'systems' table); give one written by 'mlip-exafs label' or 'import'")


def dataset_info(spec: str | Path) -> dict:
    """Counts, composition, label ranges and DFT settings of a dataset (for humans and for JSON)."""
    folder = dataset_folder(spec)
    splits = {"all": Path(spec)} if folder is None else {s: folder / f"{s}.db" for s in ("train", "test")}
    info: dict = {"dataset": str(spec)}
    meta: dict = {}
    for split, db_path in splits.items():
        if not db_path.exists():
            info[f"n_{split}"] = 0
            continue
        meta = meta or db_metadata(db_path)
        info[f"n_{split}"] = _count_rows(db_path)
        info[f"n_{split}_not_converged"] = _count_rows(db_path) - _count_rows(db_path, converged=True)
        if info[f"n_{split}"] > info[f"n_{split}_not_converged"]:
            info[f"{split}_summary"] = _summary(load_structures(db_path, "all"))
    if folder is not None and (folder / "dataset.json").exists():
        info["made_by"] = read_json(folder / "dataset.json")
    info["dft_code"] = meta.get("dft_code", {"name": "unknown", "version": "unknown"})
    info["settings"] = meta.get("settings", {})
    info["settings_hash"] = meta.get("settings_hash")
    info["units"] = meta.get("units", {})
    return info


def _count_rows(db_path: Path, converged: bool = False) -> int:
    """Rows, or converged rows by the same rule as :func:`load_structures` (was: rows without the key counted as unconverged)."""
    with _connect_input(db_path) as db:
        return sum(is_converged(row, db_path) for row in db.select()) if converged else db.count()


def _range(values: list) -> list[float] | None:
    """[min, max] over numbers or arrays; None for none."""
    return [float(np.min(values)), float(np.max(values))] if values else None


def _summary(frames: list[Atoms]) -> dict:
    energies = np.array([a.get_potential_energy() / len(a) for a in frames])
    fmax = np.array([np.abs(a.get_forces()).max() for a in frames])
    stress = [a.calc.results["stress"] / GPa for a in frames if "stress" in a.calc.results]
    methods: dict[str, int] = {}
    for a in frames:
        methods[a.info.get("method", "unknown")] = methods.get(a.info.get("method", "unknown"), 0) + 1
    return {
        "compositions": sorted({a.get_chemical_formula() for a in frames}),
        "n_atoms": sorted({len(a) for a in frames}),
        "methods": methods,
        "energy_ev_atom_range": [float(energies.min()), float(energies.max())],
        "max_abs_force_component_ev_a": float(fmax.max()),
        "mean_abs_force_component_ev_a": float(np.mean([np.abs(a.get_forces()).mean() for a in frames])),
        "stress_gpa_range": _range(stress),
        "magnetic_moment_mub_atom_range": _range([a.info["magnetic_moment_mub"] / len(a) for a in frames if "magnetic_moment_mub" in a.info]),
        **_solver_summary(frames),
    }


def _solver_summary(frames: list[Atoms]) -> dict:
    """Which solver-only CP2K settings the rows were labelled with, and their SCF steps (rows that record them).

    The database's settings are those of its first labelling run; a dataset continued with a faster solver
    (same hash) says so here.
    """
    from mlip_exafs.cp2k import SOLVER_ONLY  # lazy: mlip_exafs.cp2k loads ASE's CP2K calculator (0.5 s) at CLI start

    solver: dict[str, int] = {}
    for a in frames:
        for name in sorted(SOLVER_ONLY & a.info.keys()):
            key = f"{name}={a.info[name]}"
            solver[key] = solver.get(key, 0) + 1
    steps = [a.info["scf_steps"] for a in frames if "scf_steps" in a.info]
    return {"solver_rows": solver, "scf_steps_median": float(np.median(steps)) if steps else None}


def merge_label_databases(parts: list[Path], out: Path) -> Path:
    """One split's database from the databases of its labelling chunks (one level of theory, no duplicates)."""
    import ase.db  # lazy: ase.db loads ase.io; dataset is imported at CLI start, keeps --help fast

    metadata = [db_metadata(p) for p in parts]
    hashes = {m.get("settings_hash") for m in metadata}
    if len(hashes) != 1:
        raise UserError(f"the labelling chunks for {out.name} were made with different DFT settings; relabel them with one setting")
    seen: set[str] = set()
    with atomic_path(out) as tmp:
        with ase.db.connect(tmp, type="db") as target:
            for part in parts:
                with ase.db.connect(part) as source:
                    for row in source.select():
                        if row.uid not in seen:
                            seen.add(row.uid)
                            target.write(row)
        ase.db.connect(tmp, type="db").metadata = metadata[0]
    return out


def pack_dataset(source: Path, name: str, made_by: dict) -> Path:
    """Compress a labelled dataset folder into the package (how the shipped datasets are made)."""
    if name not in SHIPPED:
        raise UserError(f"'{name}' is not a shipped dataset name ({', '.join(SHIPPED)}): only those are looked up by name; "
                        f"give your own labels as their folder ({source}) wherever a dataset is asked for")
    for split in ("train", "test"):
        _check_packable(source / f"{split}.db", split)
    assert_disjoint(load_structures(source, "train"), load_structures(source, "test"))
    dest = shipped_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(source / f"{split}.db", "rb") as fin, atomic_path(dest / f"{split}.db.gz") as tmp:
            # no name and no time in the gzip header: the same labels pack to the same bytes, whose hash is what
            # a study's cached fine-tunes and validations were made from (a temporary file's name made every pack differ)
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fout:
                shutil.copyfileobj(fin, fout)
    write_json(dest / "dataset.json", made_by)
    for packed in dest.iterdir():
        packed.chmod(0o644)  # package data, readable by every user of an installation
    return dest


def _check_packable(db_path: Path, split: str) -> None:
    """A database is shipped only whole: present, no labeller writing it (a copy could be torn), SQLite intact."""
    from mlip_exafs.label import running_labeller  # lazy: label loads the CP2K calculator, only packing needs it

    if not db_path.exists():
        raise UserError(f"{db_path} is missing; label the {split} split before packing")
    holder = running_labeller(db_path)
    if holder is not None:
        raise UserError(f"a labeller (pid {holder}) is still writing {db_path}; pack when it has finished or stop it first")
    check_ase_database(db_path)
    with _read_only(db_path) as con:
        try:
            problems = [row[0] for row in con.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:  # damage SQLite meets before it can list it
            problems = [str(exc)]
    if problems != ["ok"]:
        raise UserError(f"{db_path} fails SQLite's integrity check ({problems[0]}); restore it from git before packing")


def structure_fingerprint(atoms: Atoms) -> str:
    """Identity of a structure's geometry (positions to 1e-4 Å, cell, species)."""
    payload = np.round(atoms.positions, 4).tobytes() + np.round(atoms.cell.array, 4).tobytes() + atoms.numbers.tobytes()
    return hashlib.sha256(payload).hexdigest()[:16]


def assert_disjoint(train: list[Atoms], test: list[Atoms]) -> None:
    """Refuse a test set that shares structures with the training pool (it would flatter the model)."""
    shared = {structure_fingerprint(a) for a in train} & {structure_fingerprint(a) for a in test}
    if shared:
        raise UserError(
            f"{len(shared)} structure(s) appear in both the training pool and the test set; "
            "use a test set sampled separately (another seed or temperature)"
        )
