"""Crystal structures: built-in named crystals, files, and supercells.

Every verb that takes a STRUCTURE accepts either a built-in name (``ws2``,
``mos2``, ``w-bcc``, ``srtio3``) or a file ASE can read (CIF, POSCAR/CONTCAR, extxyz, ...)
with a full 3D cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from mlip_exafs.errors import UserError, first_line
from mlip_exafs.settings import BUILTIN_STRUCTURES


def dichalcogenide_2h(metal: str, a: float, c: float, z_s: float, name: str) -> Atoms:
    """The 2Hc MX2 structure type (P6_3/mmc): metal at 2c (1/3, 2/3, 1/4), S at 4f (1/3, 2/3, z_s)."""
    atoms = crystal([metal, "S"], basis=[(1 / 3, 2 / 3, 1 / 4), (1 / 3, 2 / 3, z_s)], spacegroup=194, cellpar=[a, a, c, 90, 90, 120])
    del atoms.arrays["spacegroup_kinds"]
    atoms.info = {"name": name}
    return atoms


def ws2_2h() -> Atoms:
    """2H-WS2 (tungstenite), P6_3/mmc: a = 3.1532 Å, c = 12.323 Å, S z = 0.6225."""
    return dichalcogenide_2h("W", 3.1532, 12.323, 0.6225, "ws2")


def mos2_2h() -> Atoms:
    """2Hc-MoS2 (molybdenite-2H), P6_3/mmc: a = 3.1604 Å, c = 12.295 Å (Wildervanck & Jellinek,
    Z. anorg. allg. Chem. 328 (1964) 309), S z = 0.621 (Bronsema, de Boer & Jellinek, Z. anorg. allg.
    Chem. 540 (1986) 15): Mo–S 2.418 Å ×6, Mo–Mo 3.160 Å ×6. The WS2 structure type, a lighter metal."""
    return dichalcogenide_2h("Mo", 3.1604, 12.295, 0.621, "mos2")


def w_bcc() -> Atoms:
    """bcc W, conventional cubic cell (2 atoms), a = 3.165 Å."""
    atoms = bulk("W", "bcc", a=3.165, cubic=True)
    atoms.info["name"] = "w-bcc"
    return atoms


def srtio3_cubic() -> Atoms:
    """Cubic perovskite SrTiO3, Pm-3m, a = 3.905 Å (room temperature; γ-ray diffraction gives 3.9053 Å at 293 K,
    IUCr paper sh5025, https://scripts.iucr.org/cgi-bin/paper?sh5025):
    Sr at 1a (0, 0, 0), Ti at 1b (½, ½, ½), O at 3c (0, ½, ½). Around Sr: 12 O at a/√2 = 2.761 Å, 8 Ti at
    a√3/2 = 3.382 Å, 6 Sr at a. Below ≈ 105 K the real crystal is tetragonal (TiO6 octahedra tilted about c):
    an MD started from this cell finds that phase only if its potential has it."""
    atoms = crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.5)], spacegroup=221, cellpar=[3.905, 3.905, 3.905, 90, 90, 90])
    del atoms.arrays["spacegroup_kinds"]
    atoms.info = {"name": "srtio3"}
    return atoms


BUILTIN: dict[str, Callable[[], Atoms]] = dict(zip(BUILTIN_STRUCTURES, (ws2_2h, mos2_2h, w_bcc, srtio3_cubic), strict=True))


LARGEST_SUPERCELL_ATOMS = 1_000_000  # ASE alone needs ~0.5 kB per atom, an ML potential's graph ~100x more: beyond, no run fits in memory


def parse_supercell(text: str | None, atoms_in_cell: int | None = None) -> tuple[int, int, int]:
    """'3x3x1' -> (3, 3, 1); a supercell of more than a million atoms (``atoms_in_cell`` per cell, at least 1) is refused before it is built."""
    if text is None or text == "":
        return (1, 1, 1)
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        reps = tuple(int(p) for p in parts)
    except ValueError:
        reps = ()
    if len(reps) != 3 or min(reps) < 1:
        raise UserError(f"supercell '{text}' is not of the form NxMxL with positive integers; use e.g. 3x3x1")
    n_atoms = reps[0] * reps[1] * reps[2] * (atoms_in_cell or 1)
    if n_atoms > LARGEST_SUPERCELL_ATOMS:
        held = f"{n_atoms:,} atoms" if atoms_in_cell else f"at least {n_atoms:,} atoms ({n_atoms:,} cells)"
        raise UserError(f"supercell '{text}' would hold {held}, more than fit in memory (at most {LARGEST_SUPERCELL_ATOMS:,}); use a smaller supercell")
    return reps  # type: ignore[return-value]


OCCUPANCY_TOLERANCE = 0.01  # a CIF's occupancies of 0.999 are full sites written to three digits


def load_structure(name_or_path: str | Path, supercell: str | None = None) -> Atoms:
    """A built-in crystal or the first frame of a structure file, optionally repeated."""
    key = str(name_or_path).strip().lower()
    if not key:
        raise UserError(f"no structure given; name a built-in crystal ({', '.join(BUILTIN)}) or a CIF, POSCAR or extxyz file")
    if key in BUILTIN:
        atoms = BUILTIN[key]()
    else:
        atoms = _read_structure_file(Path(name_or_path))
    reps = parse_supercell(supercell, len(atoms))
    if reps != (1, 1, 1):
        info = dict(atoms.info)
        atoms = atoms.repeat(reps)
        atoms.info.update(info)
        atoms.info["supercell"] = "x".join(map(str, reps))
    return atoms


def _read_structure_file(path: Path) -> Atoms:
    if not path.is_file():
        known = ", ".join(BUILTIN)
        raise UserError(f"structure '{path}' is neither a file nor a built-in crystal ({known}); check the path")
    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ASE raises many types for unreadable files
        first = first_line(exc, default="")
        reason = f"{type(exc).__name__}: {first}" if first else f"{type(exc).__name__}, not a format ASE recognises"
        raise UserError(f"cannot read structure file {path} ({reason}); give a CIF, POSCAR or extxyz file") from None
    if len(atoms) == 0:
        raise UserError(f"structure file {path} contains no atoms; give a CIF, POSCAR or extxyz file with atoms")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise UserError(f"structure in {path} is not a 3D periodic crystal; give a file with a full unit cell")
    if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.cell.array).all():
        raise UserError(f"structure file {path} has non-finite positions or cell; fix the file")
    if abs(atoms.cell.volume) < MIN_CELL_VOLUME_A3:
        raise UserError(f"structure in {path} has a cell of zero volume (its three cell vectors lie in a plane); fix the cell")
    _check_ordered(atoms, path)
    _check_no_overlaps(atoms, path)
    atoms.info.setdefault("name", path.stem)
    return atoms


MIN_CELL_VOLUME_A3 = 1e-6  # ASE's cell rank counts non-zero vectors, not independent ones
MIN_DISTANCE_A = 0.5  # below the shortest real bond (H2, 0.74 Å): a duplicated site, where the models give NaN


def _check_no_overlaps(atoms: Atoms, path: Path) -> None:
    """Two atoms on (almost) one site, periodic images included: duplicated CIF sites, a wrong symmetry setting."""
    i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE_A)
    if len(d):
        k = int(np.argmin(d))
        raise UserError(f"structure file {path}: atoms {i[k]} ({atoms[i[k]].symbol}) and {j[k]} ({atoms[j[k]].symbol}) are {d[k]:.2f} Å apart "
                        f"(closer than {MIN_DISTANCE_A} Å: a duplicated site?); fix the file")


def _check_ordered(atoms: Atoms, path: Path) -> None:
    """One atom per site (every stage computes on the atoms as given): ASE puts the majority species on a partially occupied CIF site, a different
    crystal from the one the file describes (Fe0.5Ni0.5O would run as NiO)."""
    for site, species in (atoms.info.get("occupancy") or {}).items():
        total = sum(species.values())
        if len(species) > 1 or abs(total - 1.0) > OCCUPANCY_TOLERANCE:
            held = " + ".join(f"{symbol} {occ:g}" for symbol, occ in species.items())
            raise UserError(f"structure file {path} has a partially occupied site ({held}); a potential needs one atom per site: "
                            "give an ordered supercell (e.g. a special quasirandom structure) of the composition")


def min_image_half_width(atoms: Atoms) -> float:
    """Largest radius for which minimum-image distances are unique (half the shortest cell height)."""
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    heights = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return 0.5 * min(heights)
