"""Coordination shells of an ideal crystal and the gaps between them.

One place for the shell geometry that the analysis stage (which shells to
report, how to group distances) and the EXAFS stage (where to cut the path
sum) both need. A shell is a group of ideal distances with no jump larger
than a tolerance inside it; a gap is the empty interval between two shells.
A cut at a distance closer to a shell than thermal motion moves its atoms
would keep a different part of that shell in every frame, so cuts go into
gaps, never through shells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from mlip_exafs.errors import UserError

if TYPE_CHECKING:  # ase is imported where it is used: the CLI reads SHELL_TOL_A at start-up
    from ase import Atoms

# Ideal distances closer than this belong to one shell. Not smaller: a reference averaged from MD frames and
# symmetrized splits one shell by up to ~0.06 Å (WS2's 6 W-S2 at 3.95/4.01 Å, fine-tuned CHGNet, 4x4x1 MD), and
# 0.1 Å still keeps pyrite's 5.15/5.26 Å Fe-S shells apart.
SHELL_TOL_A = 0.1
CUT_MARGIN_A = 0.15  # a cut this close to a shell trims it: ≈ 2-3 σ of a pair distance in a solid at room temperature
LOOK_BEYOND_A = 1.5  # distances are listed this far past a cut, to know the shell above it


@dataclass(frozen=True)
class DistanceShell:
    """One group of ideal distances (Å) around the centre atoms."""

    r_lo_a: float
    r_hi_a: float
    r_mean_a: float
    per_center: float  # atoms of the shell per centre atom


@dataclass(frozen=True)
class Cut:
    """Where a radial cut (EXAFS rmax) sits with respect to the shells."""

    requested_a: float
    rmax_a: float
    gap_a: Optional[tuple[float, float]]  # the gap holding the cut (None: beyond the listed shells)
    note: Optional[str]  # why the cut moved, or why it is still close to a shell; None when it is clear of both


def split_at_gaps(distances: np.ndarray, tol_a: float) -> np.ndarray:
    """Group label per distance: a new group starts where sorted distances jump by more than ``tol_a``."""
    distances = np.asarray(distances, dtype=float)
    order = np.argsort(distances)
    jumps = np.concatenate([[0], np.diff(distances[order]) > tol_a]).cumsum()
    groups = np.empty(len(distances), dtype=int)
    groups[order] = jumps
    return groups


def group_shells(distances: np.ndarray, n_centers: int, tol_a: float = SHELL_TOL_A) -> list[DistanceShell]:
    """Shells of a list of centre-neighbour distances, nearest first."""
    distances = np.asarray(distances, dtype=float)
    groups = split_at_gaps(distances, tol_a)
    shells = []
    for g in np.unique(groups):
        d = distances[groups == g]
        shells.append(DistanceShell(float(d.min()), float(d.max()), float(d.mean()), len(d) / max(n_centers, 1)))
    return sorted(shells, key=lambda s: s.r_lo_a)


def neighbour_distances(reference: Atoms, centers: np.ndarray, cutoff_a: float) -> np.ndarray:
    """Ideal distances from every centre atom to every atom (periodic images included) up to ``cutoff_a``."""
    from ase.neighborlist import neighbor_list  # lazy: shells is imported at CLI start, keeps --help fast

    i, d = neighbor_list("id", reference, cutoff_a)
    return d[np.isin(i, centers)]


def shells_around(reference: Atoms, centers: np.ndarray, cutoff_a: float, tol_a: float = SHELL_TOL_A) -> list[DistanceShell]:
    """Shells (all neighbour elements together) around ``centers`` up to ``cutoff_a``."""
    return group_shells(neighbour_distances(reference, centers, cutoff_a), len(centers), tol_a)


def check_within_half_cell(reference: Atoms, r_a: float, name: str) -> float:
    """A radius beyond half the cell width would count periodic images of one atom as distinct neighbours.

    ``name`` is the radius's setting, marked with :func:`mlip_exafs.errors.setting`.
    """
    from mlip_exafs.structures import min_image_half_width  # lazy: structures loads ase.build and scipy; keeps --help fast

    half = min_image_half_width(reference)
    if r_a > half + 1e-9:
        raise UserError(f"{name} {r_a:g} Å exceeds half the supercell width ({half:.2f} Å); use a larger MD supercell or {name} ≤ {half:.2f}")
    return half


def cut_between_shells(reference: Atoms, centers: np.ndarray, rmax_a: float, limit_a: float,
                       tol_a: float = SHELL_TOL_A, margin_a: float = CUT_MARGIN_A) -> Cut:
    """``rmax_a`` kept when it is at least ``margin_a`` from every shell, else moved to the middle of a gap.

    The gap is the one holding ``rmax_a`` (for a cut inside a shell: the gap above it, which keeps the
    whole shell). Where the middle lies beyond ``limit_a`` (half the cell width) the cut is ``limit_a``
    if that is still ``margin_a`` clear of the shell below it, else it goes to the gap below.
    """
    shells = shells_around(reference, centers, max(rmax_a, limit_a) + LOOK_BEYOND_A, tol_a)
    gaps = [(a.r_hi_a, b.r_lo_a) for a, b in zip(shells, shells[1:])]
    near = [s for s in shells if s.r_lo_a - margin_a < rmax_a < s.r_hi_a + margin_a]
    if not near:
        return Cut(rmax_a, rmax_a, _gap_holding(gaps, rmax_a), None)
    shell = min(near, key=lambda s: _distance_to(s, rmax_a))
    for gap in _candidate_gaps(gaps, shell, rmax_a):
        cut = min(round(0.5 * (gap[0] + gap[1]), 3), np.floor(limit_a * 1000) / 1000)
        if cut - gap[0] >= min(margin_a, 0.5 * (gap[1] - gap[0]) - 1e-3):
            return Cut(rmax_a, float(cut), gap, _moved_note(rmax_a, float(cut), shell, gap, margin_a))
    raise UserError(f"rmax {rmax_a:g} Å cuts the shell at {shell.r_mean_a:.3f} Å and no gap between shells lies below half the "
                    f"supercell width ({limit_a:.2f} Å); use a larger MD supercell")


def _distance_to(shell: DistanceShell, r_a: float) -> float:
    return max(shell.r_lo_a - r_a, r_a - shell.r_hi_a, 0.0)


def _gap_holding(gaps: list[tuple[float, float]], r_a: float) -> Optional[tuple[float, float]]:
    return next((g for g in gaps if g[0] <= r_a <= g[1]), None)


def _candidate_gaps(gaps: list[tuple[float, float]], shell: DistanceShell, r_a: float) -> list[tuple[float, float]]:
    """The gaps next to ``shell``: on the side of ``r_a`` first (above when ``r_a`` is inside the shell)."""
    above = [g for g in gaps if g[0] == shell.r_hi_a]
    below = [g for g in gaps if g[1] == shell.r_lo_a]
    return below + above if r_a < shell.r_lo_a else above + below


def _moved_note(requested_a: float, rmax_a: float, shell: DistanceShell, gap: tuple[float, float], margin_a: float) -> str:
    where = "inside" if shell.r_lo_a <= requested_a <= shell.r_hi_a else f"{_distance_to(shell, requested_a):.3f} Å from"
    place = "the middle of" if abs(rmax_a - 0.5 * (gap[0] + gap[1])) < 1e-3 else "half the cell width, in"
    note = (f"rmax {requested_a:g} Å lay {where} the shell at {shell.r_mean_a:.3f} Å ({shell.per_center:g} atoms per absorber); "
            f"moved to {rmax_a:.3f} Å, {place} the {gap[0]:.3f}-{gap[1]:.3f} Å gap")
    if gap[1] - gap[0] < 2 * margin_a:
        note += f" (a narrow gap: thermal motion may still carry atoms across {rmax_a:.3f} Å)"
    return note
