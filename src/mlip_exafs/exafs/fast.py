"""Configuration-averaged χ(k) from FEFF path functions and path-length histograms.

Single scattering: FEFF's curved-wave amplitude and phase are tabulated on a
0.1 Å grid of distances and interpolated at each instantaneous distance.
Multiple scattering: each instance keeps its path type's amplitude and phase
(ideal angles) at its instantaneous half path length, except near-collinear
(focusing) types, whose forward-scattering amplitude changes within degrees:
their instances are binned by their instantaneous largest scattering angle too,
and each angle node gets FEFF's amplitude of the path bent to it. The instantaneous
lengths of all absorbers and frames are binned (0.002 Å) and χ(k) is evaluated
once per occupied bin, at the bin's mean length: the cost grows with the
number of path instances, not with instances × k points. There is no
Debye-Waller factor: the disorder is in the snapshots — except the quantum
zero-point part that classical MD lacks: with ``extra_sigma2`` set (nuclei
``corrected``, see mlip_exafs.quantum.PathCorrections) each bin is damped by
exp(−2k²Δσ²), Δσ² of its scatterer's shell at its length (single scattering)
or of the shell at its half length (multiple scattering).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline

from mlip_exafs.exafs.feff import PathSignal, onepath
from mlip_exafs.exafs.paths import PathInstances, PathType

K_STEP_INV_A = 0.05
K_MAX_INV_A = 20.0
BIN_A = 0.002
SS_TABLE_STEP_A = 0.1  # FEFF's SS amplitude and phase are smooth in R: 0.1 Å gave the same R-factor as 0.02 Å
MS_HALF_SPAN_A = 0.6  # MS bins reach this far from the ideal half length (outliers go to the edge bins)
FOCUS_MIN_DEG = 150.0  # an MS type with a scattering angle this near forward gets its amplitude by angle
FOCUS_STEP_DEG = 1.0  # angle nodes 180°, 179°, …: thermal bends are a few degrees, and focusing narrows with k
FOCUS_NODES = 41  # down to 140°; instances bent further take the last node
CHUNK_BINS = 4000


def k_grid() -> np.ndarray:
    """FEFF's chi.dat grid without k = 0: 0.05 … 20 Å⁻¹."""
    return K_STEP_INV_A * np.arange(1, int(round(K_MAX_INV_A / K_STEP_INV_A)) + 1)


@dataclass(frozen=True)
class OnGrid:
    """A path's amplitude, phase and mean free path on the output k grid."""

    amp: np.ndarray
    phase: np.ndarray
    lambda_a: np.ndarray


def on_grid(signal: PathSignal, k: np.ndarray) -> OnGrid:
    """Cubic-spline FEFF's k grid onto ``k`` (as larch does), as one matrix product."""
    matrix = _spline_matrix(tuple(signal.k_inv_a), tuple(k))
    return OnGrid(matrix @ signal.amp, matrix @ np.unwrap(signal.phase), matrix @ signal.lambda_a)


@lru_cache(maxsize=8)
def _spline_matrix(k_from: tuple, k_to: tuple) -> np.ndarray:
    """Cubic-spline interpolation is linear in the data: interpolate the identity once."""
    return CubicSpline(np.array(k_from), np.eye(len(k_from)))(np.array(k_to))


def path_chi(k: np.ndarray, amp: np.ndarray, phase: np.ndarray, lambda_a: np.ndarray, r_a: np.ndarray) -> np.ndarray:
    """FEFF's EXAFS equation without σ²: amp/(kR²) e^(−2R/λ) sin(2kR + φ), one row per R."""
    r = r_a[:, None]
    return amp / (k * r * r) * np.exp(-2.0 * r / lambda_a) * np.sin(2.0 * k * r + phase)


@dataclass
class Histogram:
    """Weighted counts and summed lengths per bin, one row of counts per frame block."""

    counts: np.ndarray  # (n_blocks, n_bins)
    sum_r: np.ndarray  # (n_bins,)

    @classmethod
    def empty(cls, n_blocks: int, n_bins: int) -> "Histogram":
        return cls(np.zeros((n_blocks, n_bins)), np.zeros(n_bins))

    def add(self, block: int, bins: np.ndarray, r_a: np.ndarray, weights: np.ndarray) -> None:
        n = self.sum_r.size
        self.counts[block] += np.bincount(bins, weights=weights, minlength=n)
        self.sum_r += np.bincount(bins, weights=weights * r_a, minlength=n)

    def occupied(self) -> tuple[np.ndarray, np.ndarray]:
        """Occupied bin indices and their mean lengths."""
        total = self.counts.sum(axis=0)
        idx = np.flatnonzero(total > 0)
        return idx, self.sum_r[idx] / total[idx]


class FastEngine:
    """Accumulate path-length histograms frame by frame, then evaluate χ(k) per block."""

    def __init__(self, paths: PathInstances, phase_pad: Path, rmax_a: float, n_blocks: int, scatterers: tuple[str, ...]):
        self.paths, self.phase_pad, self.rmax_a = paths, phase_pad, rmax_a
        self.scatterers = scatterers  # element of FEFF potential 1, 2, … (feff.Potentials): the shell of an SS path's Δσ²
        self.n_ss_pot = int(paths.ss_ipot.max()) + 1 if len(paths.ss_ipot) else 1
        self.n_ss_bins = int(np.ceil((rmax_a + 1.0) / BIN_A)) + 1
        self.n_ms_bins = 2 * int(np.ceil(MS_HALF_SPAN_A / BIN_A)) + 1
        self.ms_reff = np.array([t.reff_a for t in paths.types])
        # MS slots: one per type, FOCUS_NODES per focusing type (its angle nodes)
        self.focusing = np.array([vertex_angles_deg(type_legs(t)).max() >= FOCUS_MIN_DEG for t in paths.types], dtype=bool)
        self.slot_base = np.concatenate([[0], np.cumsum(np.where(self.focusing, FOCUS_NODES, 1))]).astype(np.int64)
        self.focus_rows = {nleg: np.flatnonzero(self.focusing[types]) for nleg, types in paths.ms_type.items()}
        self.ss_hist = Histogram.empty(n_blocks, self.n_ss_pot * self.n_ss_bins)
        self.ms_hist = Histogram.empty(n_blocks, max(1, int(self.slot_base[-1])) * self.n_ms_bins)
        self.extra_sigma2 = None  # (half path length (Å), scatterer element or None) -> extra Debye–Waller σ² (Å²), or None

    def add_frame(self, block: int, frac: np.ndarray, cell: np.ndarray) -> None:
        vectors = self.paths.pairs.vectors_a(frac, cell)
        lengths = np.linalg.norm(vectors, axis=-1)
        self._add_ss(block, lengths)
        for nleg, legs in self.paths.ms_legs.items():
            node = np.zeros(len(legs), dtype=np.int64)
            rows = self.focus_rows[nleg]
            if len(rows):
                node[rows] = angle_node(vertex_angles_deg(vectors[legs[rows]]).max(axis=1))
            self._add_ms(block, 0.5 * lengths[legs].sum(axis=1), self.paths.ms_type[nleg], node, self.paths.ms_weight[nleg])

    def _add_ss(self, block: int, lengths: np.ndarray) -> None:
        r = lengths[self.paths.ss_pair]
        keep = r <= self.rmax_a
        r, ipot = r[keep], self.paths.ss_ipot[keep]
        bins = ipot * self.n_ss_bins + np.minimum((r / BIN_A).astype(np.int64), self.n_ss_bins - 1)
        self.ss_hist.add(block, bins, r, np.ones_like(r))

    def _add_ms(self, block: int, half_length: np.ndarray, types: np.ndarray, node: np.ndarray, weights: np.ndarray) -> None:
        keep = half_length <= self.rmax_a
        r, t, node, w = half_length[keep], types[keep], node[keep], weights[keep]
        offset = np.rint((r - self.ms_reff[t]) / BIN_A).astype(np.int64) + self.n_ms_bins // 2
        bins = (self.slot_base[t] + node) * self.n_ms_bins + np.clip(offset, 0, self.n_ms_bins - 1)
        self.ms_hist.add(block, bins, r, w)

    def chi_blocks(self, k: np.ndarray) -> np.ndarray:
        """Σ over occupied bins of count × path χ, per block (not yet normalised)."""
        return self._ss_chi(k) + self._ms_chi(k)

    def _ss_chi(self, k: np.ndarray) -> np.ndarray:
        idx, r_mean = self.ss_hist.occupied()
        ipot = idx // self.n_ss_bins
        out = np.zeros((self.ss_hist.counts.shape[0], k.size))
        for pot in np.unique(ipot):
            sel = ipot == pot
            table = SingleScatteringTable(self.phase_pad, int(pot), r_mean[sel], k)
            for chunk in _chunks(np.flatnonzero(sel)):
                amp, phase = table.at(r_mean[chunk])
                signal = self._damped(k, r_mean[chunk], path_chi(k, amp, phase, table.lambda_a, r_mean[chunk]), self._element(int(pot)))
                out += self.ss_hist.counts[:, idx[chunk]] @ signal
        return out

    def _ms_chi(self, k: np.ndarray) -> np.ndarray:
        idx, r_mean = self.ms_hist.occupied()
        slot_of_bin = idx // self.n_ms_bins
        out = np.zeros((self.ms_hist.counts.shape[0], k.size))
        for slot in np.unique(slot_of_bin):
            sel = np.flatnonzero(slot_of_bin == slot)
            t = int(np.searchsorted(self.slot_base, slot, side="right")) - 1
            ptype = self.paths.types[t]
            scatterers, ipots = ptype.scatterers_a, np.array(ptype.ipots)
            if self.focusing[t]:
                scatterers, ipots = bent_to(ptype, 180.0 - FOCUS_STEP_DEG * (slot - self.slot_base[t]))
            g = on_grid(onepath(self.phase_pad, scatterers, ipots), k)
            for chunk in _chunks(sel):
                signal = self._damped(k, r_mean[chunk], path_chi(k, g.amp, g.phase, g.lambda_a, r_mean[chunk]))
                out += self.ms_hist.counts[:, idx[chunk]] @ signal
        return out

    def _damped(self, k: np.ndarray, r_a: np.ndarray, signal: np.ndarray, element: str | None = None) -> np.ndarray:
        """The extra Debye–Waller factor exp(−2k²Δσ²) of each row's path (its length, its scatterer's element), when there is one."""
        if self.extra_sigma2 is None:
            return signal
        return signal * np.exp(-2.0 * np.outer(self.extra_sigma2(r_a, element), k * k))

    def _element(self, ipot: int) -> str | None:
        return self.scatterers[ipot - 1] if 1 <= ipot <= len(self.scatterers) else None

    @property
    def n_ms_types(self) -> int:
        return len(self.paths.types)

    @property
    def n_focusing_types(self) -> int:
        return int(self.focusing.sum())


def type_legs(ptype: PathType) -> np.ndarray:
    """The leg vectors (nleg, 3) of a path type's ideal geometry, absorber at the origin, along the path."""
    nodes = np.vstack([np.zeros(3), ptype.scatterers_a])
    return np.roll(nodes, -1, axis=0) - nodes


def vertex_angles_deg(legs: np.ndarray) -> np.ndarray:
    """The angle (degrees) at each scatterer of paths given by their leg vectors (…, nleg, 3): between the
    directions back to the previous atom and on to the next; 180° is scattering straight forward through it."""
    back, on = -legs[..., :-1, :], legs[..., 1:, :]
    cos = (back * on).sum(-1) / (np.linalg.norm(back, axis=-1) * np.linalg.norm(on, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def angle_node(angle_deg: np.ndarray) -> np.ndarray:
    """The index of the angle node nearest each angle (node j at 180° − j·FOCUS_STEP_DEG)."""
    return np.clip(np.rint((180.0 - angle_deg) / FOCUS_STEP_DEG).astype(np.int64), 0, FOCUS_NODES - 1)


def bent_to(ptype: PathType, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Scatterer positions and ipots of a path type bent at its most forward scatterer to ``angle_deg``.

    The atoms after that scatterer turn rigidly about it (the legs keep their lengths); a path whose most
    forward scatterer is its last is reversed first (the same path). Atoms on the pivot or the absorber stay.
    """
    nodes = np.vstack([np.zeros(3), ptype.scatterers_a])
    ipots = np.array(ptype.ipots)
    angles = vertex_angles_deg(type_legs(ptype))
    pivot, current_deg = 1 + int(np.argmax(angles)), float(angles.max())
    if pivot == len(nodes) - 1:
        nodes, ipots = np.vstack([nodes[:1], nodes[:0:-1]]), ipots[::-1]
        pivot = 1
    centre = nodes[pivot]
    back, on = nodes[pivot - 1] - centre, nodes[pivot + 1] - centre
    axis = np.cross(back, on)
    if np.linalg.norm(axis) < 1e-9 * np.linalg.norm(back) * np.linalg.norm(on):  # straight: any axis normal to the line
        axis = np.cross(on, [1.0, 0.0, 0.0] if abs(on[0]) < 0.9 * np.linalg.norm(on) else [0.0, 1.0, 0.0])
    turn = np.radians(angle_deg - current_deg)
    moved = nodes.copy()
    for i in range(pivot + 1, len(nodes)):
        if not (np.allclose(nodes[i], centre) or np.allclose(nodes[i], 0.0)):
            moved[i] = centre + _rotated(nodes[i] - centre, axis / np.linalg.norm(axis), turn)
    return moved[1:], ipots


def _rotated(v: np.ndarray, axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' rotation of ``v`` about the unit ``axis``."""
    return v * np.cos(angle_rad) + np.cross(axis, v) * np.sin(angle_rad) + axis * (axis @ v) * (1.0 - np.cos(angle_rad))


class SingleScatteringTable:
    """FEFF single-scattering amplitude/phase on a 0.1 Å grid of distances, only where needed."""

    def __init__(self, phase_pad: Path, ipot: int, r_needed_a: np.ndarray, k: np.ndarray):
        lower = np.floor(r_needed_a / SS_TABLE_STEP_A).astype(np.int64)
        self.nodes = np.unique(np.concatenate([lower, lower + 1]))
        grids = [on_grid(onepath(phase_pad, np.array([[0.0, 0.0, n * SS_TABLE_STEP_A]]), np.array([ipot])), k) for n in self.nodes]
        self.amp = np.array([g.amp for g in grids])
        self.phase = np.array([g.phase for g in grids])
        self.lambda_a = grids[0].lambda_a

    def at(self, r_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear interpolation in R; the upper node's phase is brought within π of the lower's."""
        lower = np.floor(r_a / SS_TABLE_STEP_A).astype(np.int64)
        i0 = np.searchsorted(self.nodes, lower)
        i1 = np.searchsorted(self.nodes, lower + 1)
        frac = (r_a / SS_TABLE_STEP_A - lower)[:, None]
        p0, p1 = self.phase[i0], self.phase[i1]
        p1 = p1 - 2 * np.pi * np.rint((p1 - p0) / (2 * np.pi))
        return (1 - frac) * self.amp[i0] + frac * self.amp[i1], (1 - frac) * p0 + frac * p1


def _chunks(indices: np.ndarray):
    for start in range(0, len(indices), CHUNK_BINS):
        yield indices[start : start + CHUNK_BINS]
