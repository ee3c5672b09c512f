"""Scattering-path instances of a periodic structure, found once on the reference.

A path instance is a closed walk absorber -> scatterers -> absorber whose legs
are atom pairs (with a periodic image). Enumerating instances once on the
reference (ideal or average) structure fixes the topology; each snapshot then
only changes the pair lengths. Multiple-scattering instances are typed by
their ideal geometry so that FEFF's amplitude is computed once per type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from mlip_exafs.geometry import PairList, build_pairs

TYPE_ROUND_A = 0.01  # ideal lengths closer than this share a path type


@dataclass(frozen=True)
class PathType:
    """One FEFF path geometry: scatterer positions around an absorber at the origin."""

    nleg: int
    scatterers_a: np.ndarray  # (nleg-1, 3)
    ipots: tuple[int, ...]
    reff_a: float


@dataclass(frozen=True)
class PathInstances:
    """All path instances of the chosen absorbers; legs index into ``pairs``."""

    pairs: PairList
    absorbers: np.ndarray
    ss_pair: np.ndarray  # (n_ss,) pair index absorber -> scatterer
    ss_ipot: np.ndarray  # (n_ss,) FEFF potential of the scatterer
    ms_legs: dict[int, np.ndarray]  # nleg -> (n, nleg) pair indices
    ms_type: dict[int, np.ndarray]  # nleg -> (n,) index into ``types``
    ms_weight: dict[int, np.ndarray]  # nleg -> (n,) 2 for a path and its reverse, else 1
    types: list[PathType]

    @property
    def n_instances(self) -> int:
        return len(self.ss_pair) + sum(len(v) for v in self.ms_legs.values())


def _pair_keys(i, j, shift, n_atoms: int) -> np.ndarray:
    """A sortable integer key per directed pair (shifts must lie within ±500)."""
    s = shift + 500
    return (((i.astype(np.int64) * n_atoms + j) * 1001 + s[..., 0]) * 1001 + s[..., 1]) * 1001 + s[..., 2]


class _PairLookup:
    """Find the pair index of (i, j, shift), or -1 when the pair is longer than the cutoff."""

    def __init__(self, pairs: PairList, n_atoms: int):
        self.n_atoms = n_atoms
        self.keys = _pair_keys(pairs.i, pairs.j, pairs.shift, n_atoms)

    def __call__(self, i, j, shift) -> np.ndarray:
        key = _pair_keys(np.asarray(i), np.asarray(j), np.asarray(shift), self.n_atoms)
        pos = np.clip(np.searchsorted(self.keys, key), 0, len(self.keys) - 1)
        return np.where(self.keys[pos] == key, pos, -1)


def enumerate_paths(reference: Atoms, absorbers: np.ndarray, ipot_of_atom: np.ndarray, rmax_a: float, nleg_max: int, margin_a: float) -> PathInstances:
    """Every path with up to ``nleg_max`` legs and ideal half length <= rmax + margin.

    Each leg of such a path is at most rmax + margin long, so one pair list with
    that cutoff holds every leg.
    """
    cutoff = rmax_a + margin_a
    pairs = build_pairs(reference, cutoff)
    lookup = _PairLookup(pairs, len(reference))
    ss_pair, ss_ipot, collected = [], [], {3: [], 4: []}
    for a in absorbers:
        nb = np.flatnonzero(pairs.i == a)
        ss_pair.append(nb)
        ss_ipot.append(ipot_of_atom[pairs.j[nb]])
        if nleg_max >= 3:
            _collect_ms(a, nb, pairs, lookup, cutoff, nleg_max, collected)
    legs, types_idx, weights, types = _type_ms_paths(collected, pairs, reference, ipot_of_atom)
    return PathInstances(pairs, np.asarray(absorbers), np.concatenate(ss_pair), np.concatenate(ss_ipot), legs, types_idx, weights, types)


def _collect_ms(a, nb, pairs, lookup, cutoff, nleg_max, collected) -> None:
    """3- and 4-leg paths of absorber ``a``; the absorber may be the middle atom of a 4-leg path."""
    n = len(nb)
    atom = np.concatenate([pairs.j[nb], [a]])  # node n is the absorber itself
    shift = np.concatenate([pairs.shift[nb], [[0, 0, 0]]])
    to_abs = np.concatenate([nb, [-1]])  # pair absorber -> node (length = node distance)
    from_node = lookup(pairs.j[nb], np.full(n, a), -pairs.shift[nb])  # pair node -> absorber
    from_node = np.concatenate([from_node, [-1]])
    dist = np.concatenate([pairs.ideal_a[nb], [0.0]])
    # node -> node pair indices (n+1, n+1)
    ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    leg = lookup(atom[ii], atom[jj], shift[jj] - shift[ii])
    leg[n, :n] = to_abs[:n]
    leg[:n, n] = from_node[:n]
    leg[ii == jj] = -1
    leg_len = np.where(leg >= 0, pairs.ideal_a[np.maximum(leg, 0)], np.inf)
    two_rmax = 2 * cutoff
    # 3 legs: a -> u -> v -> a, u < v (the reverse is the same path: weight 2)
    u, v = np.nonzero(dist[:n, None] + leg_len[:n, :n] + dist[None, :n] <= two_rmax)
    keep = u < v
    u, v = u[keep], v[keep]
    collected[3].append((a, np.stack([to_abs[u], leg[u, v], from_node[v]], 1), np.stack([u, v], 1), nb, atom, shift))
    if nleg_max < 4:
        return
    # 4 legs: a -> u -> w -> v -> a, w may be the absorber (node n); u <= v
    total = dist[:n, None, None] + leg_len[:n, :, None] + leg_len[None, :, :n] + dist[None, None, :n]
    u, w, v = np.nonzero(total <= two_rmax)
    keep = u <= v
    u, w, v = u[keep], w[keep], v[keep]
    collected[4].append((a, np.stack([to_abs[u], leg[u, w], leg[w, v], from_node[v]], 1), np.stack([u, w, v], 1), nb, atom, shift))


def _type_ms_paths(collected, pairs: PairList, reference: Atoms, ipot_of_atom: np.ndarray):
    """Group MS instances by (legs, ipots, diagonals) of their ideal geometry; time reversal folded in."""
    cell = reference.cell.array
    frac = reference.get_scaled_positions(wrap=False)
    legs_out, type_out, weight_out, types, key_to_type = {}, {}, {}, [], {}
    for nleg, chunks in collected.items():
        if not chunks:
            continue
        all_legs, all_type, all_weight = [], [], []
        for a, legs, nodes, nb, atom, shift in chunks:
            if len(legs) == 0:
                continue
            # node positions relative to the absorber (absorber node = origin)
            node_pos = np.concatenate([(frac[atom[:-1]] + shift[:-1] - frac[a]) @ cell, [[0.0, 0.0, 0.0]]])
            node_ipot = np.concatenate([ipot_of_atom[atom[:-1]], [0]])
            keys = _geometry_keys(node_pos[nodes], node_ipot[nodes])
            uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            ids = np.empty(len(uniq), dtype=np.int64)
            for u_idx, key in enumerate(map(tuple, uniq)):
                if key not in key_to_type:
                    key_to_type[key] = len(types)
                    scat = node_pos[nodes[first[u_idx]]]
                    ip = tuple(int(x) for x in node_ipot[nodes[first[u_idx]]])
                    types.append(PathType(nleg, scat, ip, 0.5 * float(pairs.ideal_a[legs[first[u_idx]]].sum())))
                ids[u_idx] = key_to_type[key]
            all_legs.append(legs)
            all_type.append(ids[inverse.ravel()])
            all_weight.append(np.where(nodes[:, 0] == nodes[:, -1], 1.0, 2.0))
        if all_legs:
            legs_out[nleg] = np.concatenate(all_legs).astype(np.int64)
            type_out[nleg] = np.concatenate(all_type)
            weight_out[nleg] = np.concatenate(all_weight)
    return legs_out, type_out, weight_out, types


def _geometry_keys(points: np.ndarray, ipots: np.ndarray) -> np.ndarray:
    """Integer keys that identify a closed path's shape up to rotation, reflection and reversal.

    All pairwise distances among absorber + scatterers (rounded) plus the
    potentials fix the shape; the key is the smaller of the path and its reverse.
    """
    n_inst, m, _ = points.shape
    full = np.concatenate([np.zeros((n_inst, 1, 3)), points], axis=1)
    iu = np.triu_indices(m + 1, 1)

    def key_of(pts, ip):
        d = np.linalg.norm(pts[:, :, None, :] - pts[:, None, :, :], axis=-1)[:, iu[0], iu[1]]
        return np.concatenate([np.rint(d / TYPE_ROUND_A).astype(np.int64), ip.astype(np.int64)], axis=1)

    forward = key_of(full, ipots)
    rev = np.concatenate([full[:, :1], full[:, 1:][:, ::-1]], axis=1)
    backward = key_of(rev, ipots[:, ::-1])
    use_back = _lexless(backward, forward)
    return np.where(use_back[:, None], backward, forward)


def _lexless(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a != b
    first = np.argmax(diff, axis=1)
    rows = np.arange(len(a))
    return diff.any(axis=1) & (a[rows, first] < b[rows, first])
