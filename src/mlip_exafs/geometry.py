"""Trajectory geometry that the analysis and EXAFS stages share.

MD snapshots in, a reference structure and per-frame fractional positions
unwrapped onto it out (:class:`Snapshots`); atom pairs fixed on the reference
and followed through the frames (:class:`PairList`, :func:`pair_lengths_a`);
the coordination shells of an absorber as such pairs (:func:`find_shells`:
analysis, the quantum correction and the experiment's shell fit name shells
alike). How distances group into shells and where a radial cut may go is
:mod:`mlip_exafs.shells`; the half cell width :mod:`mlip_exafs.structures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from ase.spacegroup.symmetrize import check_symmetry, refine_symmetry

from mlip_exafs.errors import UserError, setting
from mlip_exafs.md import OutFiles as MdFiles
from mlip_exafs.shells import LOOK_BEYOND_A, SHELL_TOL_A, check_within_half_cell, split_at_gaps

SYMPREC_A = (0.1, 0.2, 0.3)
LIGHTEST_DEFAULT_ABSORBER_Z = 19  # elements up to Ar (Z 18: O, S, Cl ...) are rarely the absorber when a heavier one is present


# ---------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshots:
    """Frames as fractional positions relative to a reference, unwrapped to the nearest image."""

    reference: Atoms
    frac: np.ndarray  # (n_frames, n_atoms, 3), continuous with the reference
    cells: np.ndarray  # (n_frames, 3, 3) Å

    @property
    def n_frames(self) -> int:
        return len(self.frac)


def read_frames(traj: str | Path) -> list[Atoms]:
    """All frames of an extxyz/.traj file, or of the snapshots inside an md folder."""
    path = trajectory_path(traj)
    frames = _read(path, ":")
    if not frames:
        raise UserError(f"trajectory {path} has no frames; rerun the MD that writes it")
    _check_same_topology(frames, path)
    return frames


def trajectory_symbols(traj: str | Path) -> list[str]:
    """The chemical symbols of the first frame (read alone: trajectories can be large)."""
    return _read(trajectory_path(traj), 0).get_chemical_symbols()


def trajectory_path(traj: str | Path) -> Path:
    path = Path(traj)
    if path.is_dir():
        path = MdFiles(path).snapshots
    if not path.exists():
        raise UserError(f"trajectory {path} does not exist; give an extxyz/.traj file or the md output folder")
    return path


def _read(path: Path, index):
    try:
        return ase.io.read(path, index=index)
    except Exception as exc:  # ASE raises many types for unreadable files
        raise UserError(f"cannot read trajectory {path} ({type(exc).__name__}: {exc}); give an extxyz or ASE .traj file") from None


def _check_same_topology(frames: list[Atoms], path: Path) -> None:
    first = frames[0].get_chemical_symbols()
    for n, atoms in enumerate(frames):
        if atoms.get_chemical_symbols() != first:
            raise UserError(f"frame {n} of {path} has different atoms than frame 0; all snapshots must share one atom list")
        if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):  # spglib segfaults on NaN
            raise UserError(f"frame {n} of {path} has NaN or infinite positions or cell (the MD blew up); "
                            "keep only the frames before it, or rerun the MD with a smaller timestep")
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise UserError(f"frame {n} of {path} is not a 3D periodic cell; write the MD snapshots with their cell")


def snapshots_from_frames(frames: list[Atoms], ideal: Atoms | None) -> Snapshots:
    """Unwrap every frame onto the reference: the ideal structure if given, else the average one."""
    cells = np.array([f.cell.array for f in frames])
    frac = np.array([f.get_scaled_positions(wrap=False) for f in frames])
    anchor = frames[0].get_scaled_positions(wrap=False) if ideal is None else _ideal_frac(ideal, frames[0])
    frac = anchor + _wrap_half(frac - anchor)
    if ideal is None:
        reference = frames[0].copy()
        reference.calc = None
        reference.cell = cells.mean(axis=0)
        reference.set_scaled_positions(frac.mean(axis=0))
        reference.info["reference"] = symmetrize(reference)
    else:
        reference = ideal.copy()
        _check_frames_sit_on_ideal(frac, cells, reference)
    _check_no_overlaps(frames, reference)
    return Snapshots(reference, frac, cells)


IDEAL_MEAN_SHIFT_A = 0.5  # thermal displacements are ~0.05-0.2 Å; an atom order or origin other than the MD's moves atoms by bonds
OVERLAP_FRACTION = 0.5  # of the reference's shortest distance: two atoms closer than this in a frame mean a broken frame


def _check_frames_sit_on_ideal(frac: np.ndarray, cells: np.ndarray, ideal: Atoms) -> None:
    """The snapshots' atoms about the ideal structure's sites: an ideal of the same elements in another order
    (or with another origin) passes the element check and gives a χ(k) without meaning."""
    shift_a = np.linalg.norm(np.einsum("ai,ij->aj", frac[0] - ideal.get_scaled_positions(wrap=False), cells[0]), axis=1)
    if shift_a.mean() > IDEAL_MEAN_SHIFT_A:
        raise UserError(f"the snapshots' atoms lie {shift_a.mean():.2f} Å from the ideal structure's sites on average ({setting('ideal')}): "
                        "it has the same elements in another atom order or with another origin; give the supercell the MD started from")


def _check_no_overlaps(frames: list[Atoms], reference: Atoms) -> None:
    """No two atoms of a frame closer than half the reference's shortest distance: FEFF would stop the process (an
    atom on the absorber) or sum paths of absurd amplitude (k²χ ~ 1e19) without a word."""
    nearest = neighbor_list("d", reference, 4.0)
    if nearest.size == 0:
        return
    limit_a = OVERLAP_FRACTION * float(nearest.min())
    for n, atoms in enumerate(frames):
        i, j, d = neighbor_list("ijd", atoms, limit_a)
        if d.size:
            k = int(np.argmin(d))
            raise UserError(f"frame {n} has atoms {i[k]} and {j[k]} {d[k]:.2f} Å apart (the reference's shortest distance is "
                            f"{nearest.min():.2f} Å): the MD blew up or the frame is broken; keep only the frames before it")


def symmetrize(atoms: Atoms) -> str:
    """Snap the average structure onto its space group (in place); says what was done.

    Thermal noise in an MD average splits symmetry-equivalent paths into
    thousands of path types; the symmetrized average restores the degeneracy.
    """
    for symprec in SYMPREC_A:  # the tightest tolerance that finds more than P1
        trial = atoms.copy()  # spglib can fail half way through a refinement: never on the average itself
        try:
            found = check_symmetry(trial, symprec).number
            if found <= 1:
                continue
            refine_symmetry(trial, symprec=symprec, verbose=False)
            refined = check_symmetry(trial, 1e-5).number
        except Exception:  # spglib failure: try the next tolerance
            continue
        if refined == found and _largest_shift_a(atoms, trial) <= REFINED_SHIFT_FACTOR * symprec:
            atoms.set_cell(trial.cell.array, scale_atoms=False)
            atoms.positions = trial.positions
            return f"average of the frames, symmetrized to space group {refined} (symprec {symprec} Å)"
    return "average of the frames (no symmetry found up to 0.3 Å; MS path types may be many: consider giving the ideal structure)"


REFINED_SHIFT_FACTOR = 2.0  # a refinement that moves an atom (or a cell vector) further than this × symprec made another structure


def _largest_shift_a(before: Atoms, after: Atoms) -> float:
    """The largest move of an atom (minimum image) or of a cell vector between two versions of one structure."""
    dfrac = _wrap_half(after.get_scaled_positions(wrap=False) - before.get_scaled_positions(wrap=False))
    atoms_a = np.linalg.norm(dfrac @ before.cell.array, axis=1).max()
    cell_a = np.linalg.norm(after.cell.array - before.cell.array, axis=1).max()
    return float(max(atoms_a, cell_a))


def _ideal_frac(ideal: Atoms, frame: Atoms) -> np.ndarray:
    if ideal.get_chemical_symbols() != frame.get_chemical_symbols():
        raise UserError(f"the ideal structure ({setting('ideal')}) has {ideal.get_chemical_formula()} but the snapshots have {frame.get_chemical_formula()} (or another atom order); give the same supercell as the MD")
    return ideal.get_scaled_positions(wrap=False)


def _wrap_half(dfrac: np.ndarray) -> np.ndarray:
    return dfrac - np.rint(dfrac)


def absorber_indices(reference: Atoms, absorber: str) -> np.ndarray:
    symbols = np.array(reference.get_chemical_symbols())
    idx = np.flatnonzero(symbols == absorber)
    if len(idx) == 0:
        present = ", ".join(sorted(set(symbols)))
        raise UserError(f"absorber '{absorber}' is not in the structure (it has {present}); choose {setting('absorber')} among those")
    return idx


def default_absorber(symbols: list[str]) -> str:
    """The absorber when none is given: the only element, else the only one heavier than Ar.

    Sulfides, oxides and halides are measured at their metal's edge (W in WS2, Fe in FeS2,
    As in As2S3); with two heavier elements (SrTiO3: Sr and Ti) there is no safe guess.
    """
    elements = sorted(set(symbols), key=lambda e: atomic_numbers[e])
    heavy = [e for e in elements if atomic_numbers[e] >= LIGHTEST_DEFAULT_ABSORBER_Z]
    if len(elements) == 1:
        return elements[0]
    if len(heavy) == 1:
        return heavy[0]
    candidates = ", ".join(heavy or elements)
    raise UserError(f"cannot tell the absorber among {candidates}; give {setting('absorber')} (one of them)")


# ---------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PairList:
    """Directed atom pairs (i -> j + image shift) up to a cutoff, on the reference."""

    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray  # (n, 3) integer cell shifts of j
    ideal_a: np.ndarray  # (n,) reference lengths

    def vectors_a(self, frac_positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Pair vectors (…, n, 3) for fractional positions (…, n_atoms, 3) and a cell (…, 3, 3)."""
        dfrac = frac_positions[..., self.j, :] - frac_positions[..., self.i, :] + self.shift
        return np.einsum("...pa,...ab->...pb", dfrac, cell)

    def subset(self, mask: np.ndarray) -> PairList:
        return PairList(self.i[mask], self.j[mask], self.shift[mask], self.ideal_a[mask])


def build_pairs(reference: Atoms, cutoff_a: float) -> PairList:
    """Every directed pair of the reference up to ``cutoff_a`` (periodic images included), in a fixed order."""
    i, j, shift, dist = neighbor_list("ijSd", reference, cutoff_a)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    return PairList(i[order], j[order], shift[order].astype(np.int64), dist[order])


def pair_lengths_a(pairs: PairList, snapshots: Snapshots) -> np.ndarray:
    """(n_frames, n_pairs) instantaneous lengths of fixed reference pairs."""
    return np.linalg.norm(pairs.vectors_a(snapshots.frac, snapshots.cells), axis=-1)


# ---------------------------------------------------------------- shells


@dataclass(frozen=True)
class Shell:
    """One coordination shell around the absorber species (W-S1, W-W1, ...), as pairs of the reference."""

    label: str
    neighbor: str
    pairs: PairList
    n_absorbers: int

    @property
    def coordination(self) -> float:
        return len(self.pairs.i) / self.n_absorbers

    @property
    def r_ideal_a(self) -> float:
        return float(self.pairs.ideal_a.mean())


def find_shells(reference: Atoms, absorber: str, rmax_a: float, tol_a: float = SHELL_TOL_A) -> list[Shell]:
    """Distance shells around every ``absorber`` atom, per neighbour element, nearest first.

    Whole shells only (grouped by :func:`mlip_exafs.shells.split_at_gaps`): pairs are listed past
    ``rmax_a`` so that a shell is never split; it is reported when its mean distance is ≤ ``rmax_a``.
    The analysis stage passes :func:`mlip_exafs.analysis.shell_cut`'s radius, which lies in a gap: its shells lie wholly inside it.
    """
    absorbers = absorber_indices(reference, absorber)
    check_within_half_cell(reference, rmax_a, setting("shell_rmax_a"))
    pairs = build_pairs(reference, rmax_a + LOOK_BEYOND_A)
    pairs = pairs.subset(np.isin(pairs.i, absorbers))
    symbols = np.array(reference.get_chemical_symbols())
    shells = []
    for element in sorted(set(symbols[pairs.j])):
        of_element = pairs.subset(symbols[pairs.j] == element)
        groups = split_at_gaps(of_element.ideal_a, tol_a)
        for number, group in enumerate(np.unique(groups), start=1):
            shell = of_element.subset(groups == group)
            if shell.ideal_a.mean() <= rmax_a:
                shells.append(Shell(f"{absorber}-{element}{number}", element, shell, len(absorbers)))
    return sorted(shells, key=lambda s: s.r_ideal_a)
