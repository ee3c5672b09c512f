"""The reference engine: FEFF8L on every (frame, absorber) cluster, potentials fixed.

All paths up to NLEG legs are kept (``CRITERIA 0 0``): FEFF's default path
filter judges each distorted path alone and drops weak multiple-scattering
paths of disordered snapshots. Slow (seconds per absorber-frame): for validation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mlip_exafs.exafs.feff import Cluster, feff_chi
from mlip_exafs.geometry import PairList


def cluster_of(pairs: PairList, absorber: int, frac: np.ndarray, cell: np.ndarray, ipot_of_atom: np.ndarray) -> Cluster:
    """The absorber at the origin and every atom within the pair cutoff, at these positions."""
    sub = pairs.subset(pairs.i == absorber)
    vectors = sub.vectors_a(frac, cell)
    order = np.argsort(np.linalg.norm(vectors, axis=1))
    positions = np.vstack([np.zeros(3), vectors[order]])
    ipots = np.concatenate([[0], ipot_of_atom[sub.j[order]]])
    return Cluster(positions, ipots)


def feff_chi_blocks(prepared, pairs: PairList, k: np.ndarray, advance: Callable[[], None] = lambda: None) -> np.ndarray:
    """Σ over used frames and absorbers of FEFF's χ(k), one row per frame block (not normalised)."""
    s, snaps = prepared.settings, prepared.snapshots
    out = np.zeros((int(prepared.block_of_frame.max()) + 1, k.size))
    for i, f in enumerate(prepared.frames):
        for a in prepared.absorbers:
            cluster = cluster_of(pairs, a, snaps.frac[f], snaps.cells[f], prepared.ipot_of_atom)
            k_feff, chi = feff_chi(cluster, prepared.potentials, s.edge, s.rmax_a, s.nleg, prepared.phase_pad)
            out[prepared.block_of_frame[i]] += np.interp(k, k_feff, chi)
            advance()
    return out
