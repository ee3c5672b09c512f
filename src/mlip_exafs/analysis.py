"""The analysis stage: what the MD says about local structure, in EXAFS terms.

For each trajectory: partial RDFs; for every coordination shell around the
absorber species (W–S1, W–W1, W–S2, … found as distance shells of the
reference structure) the mean distance and the mean-square relative
displacement σ² (MSRD, Å²) with block-averaging errors; bond-angle
distributions around each species' nearest neighbours (S–W–S, W–S–W, …).
Several trajectories (one per potential) are compared in the same plots.

Shells are reported up to the cut the EXAFS stage would make at the same
radius (:func:`shell_cut`): never through a shell, never past half the cell
width, where periodic images of one atom would count as distinct neighbours.

Shells are pair lists fixed on the reference (the ideal structure, or the
symmetrized average of the frames), so each pair is followed through the
trajectory: σ² is the variance of the shell's pair-length distribution over
all pairs and frames, the quantity an EXAFS fit calls σ². This assumes a
solid (no diffusion), as the EXAFS stage does; the RDFs use a fresh
neighbour list per frame and have no such assumption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ase import Atoms
from pymatgen.optimization.neighbors import find_points_in_spheres

from mlip_exafs import md
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_folder, write_json, write_text
from mlip_exafs.geometry import (PairList, Shell, Snapshots, absorber_indices, build_pairs, default_absorber, find_shells, pair_lengths_a,
                                 read_frames, snapshots_from_frames, trajectory_symbols)
from mlip_exafs.plots import plt, save_figure
from mlip_exafs.provenance import provenance
from mlip_exafs.quantum import QuantumInput, quantum_input_of, quantum_sigma2_fields
from mlip_exafs.settings import DEFAULT_SHELL_RMAX_A, AnalysisSettings  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.shells import Cut, check_within_half_cell, cut_between_shells, split_at_gaps
from mlip_exafs.structures import load_structure

IDEAL_ANGLE_TOL_DEG = 2.0  # reference angles closer than this are listed as one
MIN_BLOCKS = 8  # blocking levels with fewer blocks give too noisy an error estimate
UNITS = {"r_ideal": "Å", "r_mean": "Å", "r_mean_err": "Å", "sigma2": "Å²", "sigma2_classical": "Å²", "sigma2_err": "Å²", "angles": "degrees"}


@dataclass(frozen=True)
class OutFiles:
    """What an analysis writes into its folder; the one place that names these files."""

    out: Path

    @property
    def summary(self) -> Path:
        """analysis.json: settings, and per trajectory its shells (r, σ²), angles and reference (written last)."""
        return self.out / "analysis.json"

    @property
    def rdf(self) -> Path:
        return self.out / "rdf.csv"

    @property
    def rdf_plot(self) -> Path:
        return self.out / "rdf.png"

    @property
    def shells_plot(self) -> Path:
        return self.out / "shells.png"

    @property
    def angles_plot(self) -> Path:
        return self.out / "angles.png"


def read_result(folder: str | Path) -> dict | None:
    """What an analysis recorded in its folder (``analysis.json``); None for a folder without one."""
    path = OutFiles(Path(folder)).summary
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------- shells and σ²


def distinct_values(values: np.ndarray, tol: float) -> list[float]:
    """Means of the groups that ``split_at_gaps`` finds, ascending (rounded to 0.01)."""
    groups = split_at_gaps(values, tol)
    return sorted(round(float(values[groups == g].mean()), 2) for g in np.unique(groups))


def shell_cut(reference: Atoms, absorber: str, rmax_a: float | None, tol_a: float) -> Cut:
    """How far out shells are reported: ``rmax_a`` (default 4.5 Å, at most half the cell width) moved into a gap.

    The EXAFS stage cuts its path sum the same way (:func:`mlip_exafs.exafs.stage.choose_rmax`),
    so both report the same shells at the same radius: a shell that reaches past half the cell
    width holds periodic images of one atom counted as distinct neighbours (wrong coordination,
    correlated σ²), and a shell cut through is half a shell.
    """
    half = check_within_half_cell(reference, rmax_a or 0.0, setting("shell_rmax_a"))
    requested = rmax_a if rmax_a is not None else min(DEFAULT_SHELL_RMAX_A, half)
    return cut_between_shells(reference, absorber_indices(reference, absorber), requested, half, tol_a)


def blocking_error(series: np.ndarray) -> float:
    """Standard error of the mean of a correlated series (Flyvbjerg & Petersen 1989).

    Neighbouring values are averaged pairwise until fewer than ``MIN_BLOCKS``
    blocks remain; the largest standard error over those levels is returned,
    which does not underestimate the error of a time-correlated series.
    """
    x = np.asarray(series, dtype=float)
    if len(x) < 2:
        return float("nan")
    errors = [x.std(ddof=1) / np.sqrt(len(x))]
    while len(x) // 2 >= MIN_BLOCKS:
        x = 0.5 * (x[0 : 2 * (len(x) // 2) : 2] + x[1 : 2 * (len(x) // 2) : 2])
        errors.append(x.std(ddof=1) / np.sqrt(len(x)))
    return float(max(errors))


def shell_statistics(shell: Shell, snapshots: Snapshots, nuclei: Optional[QuantumInput] = None) -> dict:
    """Mean distance and σ² (variance of the shell's pair lengths over pairs and frames), with errors.

    ``sigma2`` is the quantum σ² when ``nuclei`` says the frames are corrected
    classical MD or path-integral beads; ``sigma2_classical`` the classical one
    (None for path-integral beads, which have none).
    """
    lengths = pair_lengths_a(shell.pairs, snapshots)
    r_mean = float(lengths.mean())
    per_frame_sigma2 = ((lengths - r_mean) ** 2).mean(axis=1)
    stats = {
        "label": shell.label,
        "neighbor": shell.neighbor,
        "n": round(shell.coordination, 3),
        "r_ideal": round(shell.r_ideal_a, 5),
        "r_mean": round(r_mean, 5),
        "r_mean_err": _rounded(blocking_error(lengths.mean(axis=1)), 6),
        "sigma2": round(float(per_frame_sigma2.mean()), 6),
        "sigma2_err": _rounded(blocking_error(per_frame_sigma2), 6),
    }
    stats.update(quantum_sigma2_fields(lengths, float(per_frame_sigma2.mean()), nuclei or QuantumInput(), shell.label))
    return stats


def _rounded(value: float, digits: int) -> float | None:
    return round(value, digits) if np.isfinite(value) else None


# ---------------------------------------------------------------- partial RDFs


def partial_rdfs(snapshots: Snapshots, symbols: list[str], rmax_a: float, bin_a: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """g_AB(r) for every element pair, from a neighbour list of each frame (diffusion allowed)."""
    symbols_arr = np.array(symbols)
    elements = sorted(set(symbols))
    edges = np.arange(0.0, rmax_a + bin_a / 2, bin_a)
    r = 0.5 * (edges[1:] + edges[:-1])
    counts = {(a, b): np.zeros(len(r)) for a in elements for b in elements if a <= b}
    for frac, cell in zip(snapshots.frac, snapshots.cells):
        cart = np.ascontiguousarray(frac @ cell)
        i, j, _, d = find_points_in_spheres(cart, cart, r=float(rmax_a), pbc=np.ones(3, dtype=np.int64), lattice=np.ascontiguousarray(cell), tol=1e-8)
        keep = d > 1e-8
        for (a, b), hist in counts.items():
            sel = keep & (symbols_arr[i] == a) & (symbols_arr[j] == b)
            hist += np.histogram(d[sel], bins=edges)[0]
    shell_volume = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = np.abs(np.linalg.det(snapshots.cells)).mean()
    n_of = {e: int((symbols_arr == e).sum()) for e in elements}
    g = {}
    for (a, b), hist in counts.items():
        partners = n_of[b] - (1 if a == b else 0)
        density = max(partners, 1) / volume
        g[f"{a}-{b}"] = hist / (snapshots.n_frames * n_of[a] * density * shell_volume)
    return r, g


# ---------------------------------------------------------------- bond angles


@dataclass(frozen=True)
class AngleType:
    """Angles neighbour–centre–neighbour over each centre's nearest-neighbour shell."""

    label: str
    first: PairList  # centre -> neighbour 1
    second: PairList  # centre -> neighbour 2 (same centre)
    per_center: float


def nearest_neighbour_angles(reference: Atoms, tol_a: float) -> list[AngleType]:
    """One angle type per element: the angles each of its atoms' nearest-neighbour shell makes at it (each atom's own
    shell: an element on inequivalent sites, such as spinel's tetrahedral and octahedral Fe, keeps all its angles)."""
    symbols = np.array(reference.get_chemical_symbols())
    pairs = _pairs_reaching_nearest_shells(reference, tol_a)
    nearest_a = _nearest_of_each_atom(pairs, len(reference))
    types = []
    for center in sorted(set(symbols)):
        of_center = pairs.subset(symbols[pairs.i] == center)
        first_shell = of_center.subset(of_center.ideal_a <= nearest_a[of_center.i] + tol_a)
        a, b = _same_center_pairs(first_shell.i)
        if len(a) == 0:
            continue
        neighbor = "/".join(sorted(set(symbols[first_shell.j])))
        per_center = len(a) / len(np.unique(first_shell.i))
        types.append(AngleType(f"{neighbor}-{center}-{neighbor}", first_shell.subset(a), first_shell.subset(b), per_center))
    return types


def _nearest_of_each_atom(pairs: PairList, n_atoms: int) -> np.ndarray:
    """Each atom's nearest-neighbour distance in the reference (inf for an atom without pairs)."""
    nearest = np.full(n_atoms, np.inf)
    np.minimum.at(nearest, pairs.i, pairs.ideal_a)
    return nearest


def _pairs_reaching_nearest_shells(reference: Atoms, tol_a: float) -> PairList:
    """Reference pairs out to the nearest-neighbour shell (+ tol) of every atom."""
    cutoff = 3.0
    while cutoff < 20.0:
        pairs = build_pairs(reference, cutoff)
        nearest = _nearest_of_each_atom(pairs, len(reference))
        if np.isfinite(nearest).all() and nearest.max() + tol_a <= cutoff:
            return pairs
        cutoff = max(1.5 * cutoff, nearest[np.isfinite(nearest)].max(initial=0.0) + tol_a)
    raise UserError("some atom has no neighbour within 20 Å; the trajectory is not a condensed phase the analysis can handle")


def _same_center_pairs(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (p, q), p < q, of pairs that share their centre atom."""
    p, q = np.triu_indices(len(centers), k=1)
    same = centers[p] == centers[q]
    return p[same], q[same]


def angles_deg(angle: AngleType, frac: np.ndarray, cells: np.ndarray) -> np.ndarray:
    u = angle.first.vectors_a(frac, cells)
    v = angle.second.vectors_a(frac, cells)
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def angle_statistics(angle: AngleType, snapshots: Snapshots, bin_deg: float) -> dict:
    """Distribution of one angle type and its RMS deviation from each triplet's ideal angle."""
    ref = snapshots.reference
    ideal = angles_deg(angle, ref.get_scaled_positions(wrap=False)[None], ref.cell.array[None])[0]
    values = angles_deg(angle, snapshots.frac, snapshots.cells)
    edges = np.arange(0.0, 180.0 + bin_deg / 2, bin_deg)
    density, _ = np.histogram(values, bins=edges, density=True)
    return {
        "label": angle.label,
        "per_center": round(angle.per_center, 3),
        "ideal_deg": distinct_values(ideal, IDEAL_ANGLE_TOL_DEG),
        "rms_deviation_deg": round(float(np.sqrt(((values - ideal) ** 2).mean())), 4),
        "histogram": {"bin_center_deg": (0.5 * (edges[1:] + edges[:-1])).round(3).tolist(), "density_per_deg": density.round(6).tolist()},
    }


# ---------------------------------------------------------------- the stage


@dataclass(frozen=True)
class TrajectoryResult:
    label: str
    path: str
    snapshots: Snapshots
    shells: list[dict]
    angles: list[dict]
    rdf_r_a: np.ndarray
    rdfs: dict[str, np.ndarray]
    nuclei: str = "classical"
    cut: Optional[Cut] = None  # how far out shells are reported


def analyze(trajs: list[str | Path], settings: AnalysisSettings, out: str | Path) -> dict:
    """Trajectories on disk -> the files of :class:`OutFiles` in ``out`` (the record, RDFs, comparison PNGs). Returns the record."""
    if not trajs:
        raise UserError("no trajectory given; pass snapshots.extxyz files or md output folders")
    out = check_output_folder(out)
    labels = trajectory_labels(trajs, settings.labels)
    if settings.absorber is None:
        settings = settings.model_copy(update={"absorber": default_absorber(trajectory_symbols(trajs[0]))})
    ideal = _reference(settings)
    results = [analyze_one(traj, label, ideal, settings) for traj, label in zip(trajs, labels)]
    files = OutFiles(out)
    write_rdf_csv(results, files.rdf)
    plot_rdfs(results, settings.absorber, files.rdf_plot)
    plot_shells(results, files.shells_plot)
    plot_angles(results, files.angles_plot)
    summary = {
        "settings": settings.model_dump(),
        "units": UNITS,
        "trajectories": [
            {"label": r.label, "path": r.path, "n_frames": r.snapshots.n_frames, "n_atoms": len(r.snapshots.reference),
             "reference": r.snapshots.reference.info.get("reference", f"ideal structure {settings.reference}"), "nuclei": r.nuclei,
             "shell_rmax": {"requested_a": r.cut.requested_a, "used_a": r.cut.rmax_a, "note": r.cut.note}, "shells": r.shells, "angles": r.angles}
            for r in results
        ],
        "files": {"rdf": files.rdf.name, "plots": [files.rdf_plot.name, files.shells_plot.name, files.angles_plot.name]},
        "provenance": provenance({"trajectories": [str(t) for t in trajs]}),
    }
    write_json(files.summary, summary)
    return summary


def analyze_one(traj: str | Path, label: str, ideal: Atoms | None, settings: AnalysisSettings) -> TrajectoryResult:
    frames = read_frames(traj)
    if ideal is not None and ideal.get_chemical_symbols() != frames[0].get_chemical_symbols():
        raise UserError(
            f"{setting('reference')} has {ideal.get_chemical_formula()} ({len(ideal)} atoms) but {traj} has {frames[0].get_chemical_formula()} "
            f"({len(frames[0])} atoms); give {setting('reference_supercell')} equal to the MD supercell"
        )
    snapshots = snapshots_from_frames(frames, ideal)
    cut = shell_cut(snapshots.reference, settings.absorber, settings.shell_rmax_a, settings.shell_tol_a)
    shells = find_shells(snapshots.reference, settings.absorber, cut.rmax_a, settings.shell_tol_a)
    if not shells:
        raise UserError(f"no whole shell of neighbours of {settings.absorber} within {cut.rmax_a:g} Å in {traj}; raise {setting('shell_rmax_a')} or use a larger MD supercell")
    angles = [angle_statistics(a, snapshots, settings.angle_bin_deg) for a in nearest_neighbour_angles(snapshots.reference, settings.shell_tol_a)]
    r, rdfs = partial_rdfs(snapshots, frames[0].get_chemical_symbols(), settings.rdf_rmax_a, settings.rdf_bin_a)
    nuclei = quantum_input(traj, frames)
    return TrajectoryResult(label, str(traj), snapshots, [shell_statistics(s, snapshots, nuclei) for s in shells], angles, r, rdfs, nuclei.nuclei, cut)


def quantum_input(traj: str | Path, frames: list[Atoms]) -> QuantumInput:
    """What the quantum σ² of these frames needs: their kind of nuclei (md.json), times and temperature."""
    return quantum_input_of(traj, frames)


def _reference(settings: AnalysisSettings) -> Atoms | None:
    return load_structure(settings.reference, settings.reference_supercell) if settings.reference else None


def trajectory_labels(trajs: list[str | Path], labels: list[str] | None) -> list[str]:
    """Given labels, else the md run's potential (from md.json) or the file/folder name; made unique."""
    if labels:
        if len(labels) != len(trajs):
            raise UserError(f"{len(labels)} {setting('labels')} for {len(trajs)} trajectories; give one label per trajectory or none")
        return list(labels)
    names = [_default_label(Path(t)) for t in trajs]
    return [f"{n} ({k + 1})" if names.count(n) > 1 else n for k, n in enumerate(names)]


def _default_label(path: Path) -> str:
    folder = path if path.is_dir() else path.parent
    try:
        settings = md.read_result(folder)["settings"]
        nuclei = settings.get("nuclei", "classical")
        return f"{Path(settings['potential']).stem} {settings['temperature_k']:g} K" + ("" if nuclei == "classical" else f" ({nuclei})")
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name if path.is_dir() or path == md.OutFiles(folder).snapshots else path.stem


# ---------------------------------------------------------------- outputs


def write_rdf_csv(results: list[TrajectoryResult], path: Path) -> None:
    r = results[0].rdf_r_a
    columns = {f"{res.label}:{pair}": g for res in results for pair, g in res.rdfs.items() if len(g) == len(r)}
    rows = [",".join([f"{x:.4f}"] + [f"{g[k]:.5f}" for g in columns.values()]) for k, x in enumerate(r)]
    write_text(path, ",".join(["r_a", *columns]) + "\n" + "\n".join(rows) + "\n")


def plot_rdfs(results: list[TrajectoryResult], absorber: str, path: Path) -> None:
    """One panel per element pair, one line per trajectory; reference shells of the absorber marked."""
    pairs = sorted({p for r in results for p in r.rdfs})
    fig, axes = plt.subplots(len(pairs), 1, figsize=(7, 2.4 * len(pairs)), sharex=True, squeeze=False)
    for ax, pair in zip(axes[:, 0], pairs):
        for k, res in enumerate(results):
            if pair in res.rdfs:
                ax.plot(res.rdf_r_a, res.rdfs[pair], color=f"C{k}", lw=1.0, label=res.label)
        for shell in results[0].shells:
            if pair in (f"{absorber}-{shell['neighbor']}", f"{shell['neighbor']}-{absorber}"):
                ax.axvline(shell["r_ideal"], color="0.6", ls=":", lw=0.8)
        ax.set_ylabel(f"g$_{{{pair}}}$(r)")
    axes[-1, 0].set_xlabel("r (Å)")
    axes[0, 0].legend(fontsize=8, title="dotted: reference shells", title_fontsize=7)
    save_figure(fig, path)


def plot_shells(results: list[TrajectoryResult], path: Path) -> None:
    """σ² and r_mean − r_ideal per shell, trajectories side by side."""
    labels = [s["label"] for s in results[0].shells]
    x = np.arange(len(labels))
    width = 0.8 / len(results)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(labels)), 6), sharex=True)
    for k, res in enumerate(results):
        by_label = {s["label"]: s for s in res.shells}
        shells = [by_label.get(name) for name in labels]
        xs = x + (k - (len(results) - 1) / 2) * width
        sigma2 = [s["sigma2"] if s else np.nan for s in shells]
        err = [(s["sigma2_err"] or 0.0) if s else 0.0 for s in shells]
        shift = [s["r_mean"] - s["r_ideal"] if s else np.nan for s in shells]
        ax1.bar(xs, sigma2, width, yerr=err, color=f"C{k}", capsize=2, label=res.label)
        ax2.bar(xs, shift, width, color=f"C{k}")
    ax1.set_ylabel("σ² (Å²)")
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_ylabel("r$_{mean}$ − r$_{ideal}$ (Å)")
    ax2.set_xticks(x, [f"{name}\n{s['r_ideal']:.2f} Å" for name, s in zip(labels, results[0].shells)], fontsize=8)
    save_figure(fig, path)


def plot_angles(results: list[TrajectoryResult], path: Path) -> None:
    kinds = sorted({a["label"] for r in results for a in r.angles})
    fig, axes = plt.subplots(max(1, len(kinds)), 1, figsize=(7, 2.4 * max(1, len(kinds))), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        for k, res in enumerate(results):
            for a in res.angles:
                if a["label"] == kind:
                    ax.plot(a["histogram"]["bin_center_deg"], a["histogram"]["density_per_deg"], color=f"C{k}", lw=1.0,
                            label=f"{res.label} (rms dev. {a['rms_deviation_deg']:.1f}°)")
                    for ideal in a["ideal_deg"]:
                        ax.axvline(ideal, color="0.6", ls=":", lw=0.8)
        ax.set_ylabel(f"P({kind}) (1/°)")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("angle (degrees); dotted: reference angles")
    save_figure(fig, path)
