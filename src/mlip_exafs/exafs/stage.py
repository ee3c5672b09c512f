"""The exafs stage: configuration-averaged χ(k) of MD snapshots.

``run_exafs(settings, traj, out)`` reads the snapshots, computes FEFF8L
potentials once for the reference (ideal or average) structure, averages χ(k)
over every absorber of every frame with the chosen engine, and writes the
files of :class:`OutFiles` (χ(k), convergence diagnostics, plots, the record)
to ``out``. Other stages read an exafs folder through :class:`OutFiles`,
:func:`read_result` and :func:`read_chi_csv`, never by file name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from mlip_exafs.cache import cached_files, store_files
from mlip_exafs.errors import UserError, setting
from mlip_exafs.exafs.fast import FastEngine, k_grid
from mlip_exafs.exafs.feff import FEFF_EDGES, POTENTIAL_FILES, Cluster, Potentials, compute_potentials, feff_input
from mlip_exafs.exafs.paths import enumerate_paths
from mlip_exafs.exafs.persnapshot import cluster_of, feff_chi_blocks
from mlip_exafs.files import check_output_folder, write_json, write_text
from mlip_exafs.geometry import Snapshots, absorber_indices, build_pairs, default_absorber, read_frames, snapshots_from_frames
from mlip_exafs.plots import plot_chi, plot_ft
from mlip_exafs.provenance import provenance
from mlip_exafs.quantum import PathCorrections, exafs_correction
from mlip_exafs.settings import DEFAULT_RMAX_A, ExafsEngine, ExafsSettings, FTWindowSettings  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.shells import Cut, check_within_half_cell, cut_between_shells, shells_around
from mlip_exafs.spectra import default_edge, edge_energy_ev, k_weighted_r_factor
from mlip_exafs.structures import load_structure

Progress = Callable[[str, int], ContextManager[Callable[[], None]]]
Say = Callable[[str], None]  # one line of news for the user (the CLI prints it on stderr)
PATH_MARGIN_A = 0.3  # paths are enumerated this far beyond rmax; the cut is applied per snapshot, as FEFF does
POTENTIAL_CLUSTER_EXTRA_A = 1.5  # atoms beyond the SCF radius that still shape the potentials
POTENTIALS_CACHE = "feff-potentials"  # the user cache's folder of FEFF8L potentials, keyed by their feff.inp


@dataclass(frozen=True)
class OutFiles:
    """What an exafs run writes into its folder; the one place that names these files."""

    out: Path

    @property
    def chi(self) -> Path:
        """k,chi: the configuration-averaged χ(k)."""
        return self.out / "chi.csv"

    @property
    def convergence(self) -> Path:
        """χ(k) with the two halves of the frames and the block standard error."""
        return self.out / "convergence.csv"

    @property
    def chi_plot(self) -> Path:
        return self.out / "chi_k2.png"

    @property
    def ft_plot(self) -> Path:
        return self.out / "ft.png"

    @property
    def summary(self) -> Path:
        """exafs.json: settings as used, the rmax cut, convergence, timing, provenance (written last)."""
        return self.out / "exafs.json"

    @property
    def potentials(self) -> Path:
        """FEFF potentials of the reference structure, reused while their input is unchanged."""
        return self.out / "potentials"


def read_result(folder: str | Path) -> dict | None:
    """What an exafs run recorded in its folder (``exafs.json``); None for a folder without one."""
    path = OutFiles(Path(folder)).summary
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Prepared:
    """Everything both engines need, checked once."""

    settings: ExafsSettings  # absorber, edge and rmax_a resolved
    cut: Cut
    snapshots: Snapshots
    frames: np.ndarray  # indices of the frames used
    absorbers: np.ndarray
    potentials: Potentials
    ipot_of_atom: np.ndarray
    phase_pad: Path
    block_of_frame: np.ndarray  # block of each used frame
    extra_sigma2: Optional[PathCorrections] = None  # quantum Δσ² of each path (nuclei: corrected)
    quantum: Optional[dict] = None  # the kind of nuclei and the correction, for exafs.json


@dataclass(frozen=True)
class AveragedChi:
    k_inv_a: np.ndarray
    chi: np.ndarray
    first_half: np.ndarray
    second_half: np.ndarray
    stderr: np.ndarray
    n_blocks: int


def run_exafs(settings: ExafsSettings, traj: str | Path, out: str | Path, progress: Progress | None = None, say: Say | None = None) -> Path:
    """Snapshots on disk -> ``out/chi.csv`` (+ diagnostics, plots, exafs.json). Returns the chi.csv path.

    ``progress(description, total)`` is a context manager yielding ``advance()``
    (e.g. :func:`mlip_exafs.progress.progress_bar`); none by default. ``say(line)``
    reports each setup stage (FEFF potentials and path tables take minutes on big cells).
    """
    out = check_output_folder(out)  # before minutes of FEFF, not at the first write
    say = say or (lambda line: None)
    t0 = time.perf_counter()
    prepared = prepare(settings, traj, out, say)
    prepared = quantum_corrected(prepared, traj)
    t_setup = time.perf_counter() - t0
    steps = len(prepared.frames) * (1 if settings.engine == "fast" else len(prepared.absorbers))
    with (progress or _silent)(f"EXAFS, {settings.engine} engine", steps) as advance:
        averaged, engine_info = average_chi(prepared, advance, say)
    elapsed = time.perf_counter() - t0
    files = OutFiles(out)
    write_outputs(prepared, averaged, engine_info, traj, files, {"setup_s": t_setup, "engine_s": elapsed - t_setup, "total_s": elapsed})
    return files.chi


@contextlib.contextmanager
def _silent(description: str, total: int) -> Iterator[Callable[[], None]]:
    yield lambda: None


def prepare(settings: ExafsSettings, traj: str | Path, out: Path, say: Say) -> Prepared:
    if settings.absorber:
        check_edge(settings.absorber, settings.edge or default_edge(settings.absorber))
    ideal = load_structure(settings.ideal, settings.ideal_supercell) if settings.ideal else None
    snapshots = snapshots_from_frames(read_frames(traj), ideal)
    absorber = settings.absorber or default_absorber(snapshots.reference.get_chemical_symbols())
    edge = settings.edge or default_edge(absorber)
    check_edge(absorber, edge)
    absorbers = absorber_indices(snapshots.reference, absorber)
    cut = choose_rmax(snapshots.reference, absorbers, settings.rmax_a)
    settings = settings.model_copy(update={"absorber": absorber, "edge": edge, "rmax_a": cut.rmax_a})
    # news only once the input is known to be good: a user error stays the one line on stderr
    say(f"{snapshots.n_frames} frames of {len(snapshots.reference)} atoms; reference: {snapshots.reference.info.get('reference', settings.ideal)}")
    say(f"absorber {absorber}, {edge} edge, rmax {cut.rmax_a:g} Å" + (f" ({cut.note})" if cut.note else ""))
    frames = subsample(snapshots.n_frames, settings.max_frames)
    absorbers = absorbers[subsample(len(absorbers), settings.max_absorbers)]
    potentials = Potentials(absorber, tuple(sorted(set(snapshots.reference.get_chemical_symbols()))))
    ipot_of_atom = np.array([potentials.ipot_of(s) for s in snapshots.reference.get_chemical_symbols()])
    phase_pad = cached_potentials(snapshots.reference, int(absorbers[0]), potentials, ipot_of_atom, settings, OutFiles(out).potentials, say)
    n_blocks = even_blocks(len(frames), settings.n_blocks)
    block_of_frame = np.concatenate([np.full(len(b), i) for i, b in enumerate(np.array_split(np.arange(len(frames)), n_blocks))])
    return Prepared(settings, cut, snapshots, frames, absorbers, potentials, ipot_of_atom, phase_pad, block_of_frame)


def choose_rmax(reference: Atoms, absorbers: np.ndarray, rmax_a: float | None) -> Cut:
    """The cut of the path sum: the given one (at most half the cell width) or the default, never through a shell.

    A cut just past a shell keeps a different part of it in every frame (thermal motion
    carries its atoms across), which distorts χ(k) without a word: the cut moves to the
    middle of the gap between shells (:func:`mlip_exafs.shells.cut_between_shells`).
    """
    if rmax_a is not None:
        half = check_within_half_cell(reference, rmax_a, setting("rmax_a"))
    else:
        half = check_within_half_cell(reference, 0.0, setting("rmax_a"))
        rmax_a = min(DEFAULT_RMAX_A, half)
    cut = cut_between_shells(reference, absorbers, rmax_a, half)
    first = shells_around(reference, absorbers, half)[:1]
    if first and cut.rmax_a < first[0].r_lo_a:  # χ(k) would be zero everywhere, and its convergence R 0/0
        raise UserError(f"{setting('rmax_a')} {rmax_a:g} Å keeps no path: the first shell around {reference.get_chemical_symbols()[absorbers[0]]} "
                        f"is at {first[0].r_mean_a:.3f} Å; give an rmax beyond it")
    return cut


def quantum_corrected(prepared: Prepared, traj: str | Path) -> Prepared:
    """Snapshots of ``corrected`` nuclei get each path's quantum Δσ² (mlip_exafs.quantum); others pass unchanged."""
    extra, info = exafs_correction(prepared.snapshots, prepared.settings.absorber, prepared.settings.rmax_a, prepared.settings.engine, traj)
    return replace(prepared, extra_sigma2=extra, quantum=info)


def check_edge(element: str, edge: str) -> None:
    if element not in chemical_symbols[1:]:
        raise UserError(f"absorber '{element}' is not a chemical element symbol; give e.g. {setting('absorber')} W")
    if edge not in FEFF_EDGES:
        raise UserError(f"edge '{edge}' is not one FEFF8L can compute; use one of {', '.join(FEFF_EDGES)}")
    edge_energy_ev(element, edge)


def subsample(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spread indices out of ``n`` (all when no limit)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def even_blocks(n_frames: int, wanted: int) -> int:
    """An even number of frame blocks (halves are unions of blocks); 1 for a single frame."""
    n = min(wanted, n_frames)
    return n - (n % 2) if n >= 2 else 1


MAX_POTENTIAL_RADIUS_A = 15.0  # beyond this the cluster is left as it is and FEFF names the missing potential


def cluster_with_every_potential(reference: Atoms, absorber: int, ipot_of_atom: np.ndarray, radius_a: float) -> Cluster:
    """The atoms within ``radius_a`` of the absorber, grown 1 Å at a time until they hold one of every potential.

    FEFF8L stops ("Cannot calculate potentials") when a declared potential has no atom in the cluster: a minority
    element, or the absorber's own element, may lie beyond the radius (SrTiO3's Sr–Sr at 3.9 Å, GaAs's As–As at 4.0 Å).
    """
    frac = reference.get_scaled_positions(wrap=False)
    wanted = set(np.unique(ipot_of_atom[ipot_of_atom > 0]))
    while True:
        cluster = cluster_of(build_pairs(reference, radius_a), absorber, frac, reference.cell.array, ipot_of_atom)
        if set(np.unique(cluster.ipots[1:])) >= wanted or radius_a > MAX_POTENTIAL_RADIUS_A:
            return cluster
        radius_a += 1.0


def cached_potentials(reference: Atoms, absorber: int, potentials: Potentials, ipot_of_atom: np.ndarray, settings: ExafsSettings, folder: Path,
                      say: Say = lambda line: None) -> Path:
    """FEFF potentials of the reference structure, reused while their input is unchanged."""
    radius = max(settings.rmax_a, settings.scf_radius_a or 0.0) + POTENTIAL_CLUSTER_EXTRA_A
    cluster = _round_cluster(cluster_with_every_potential(reference, absorber, ipot_of_atom, radius))
    text = feff_input(cluster, potentials, settings.edge, 1.0, 2, settings.scf_radius_a)
    stamp = folder / "feff_pot.inp"
    if stamp.exists() and stamp.read_text() == text and (folder / "phase.pad").exists():
        say(f"FEFF8L potentials: reusing {folder / 'phase.pad'}")
        return folder / "phase.pad"
    shared = cached_files(POTENTIALS_CACHE, text)
    if shared is not None:
        say(f"FEFF8L potentials: reusing those of the same cluster from {shared}")
        folder.mkdir(parents=True, exist_ok=True)
        for name in POTENTIAL_FILES:
            shutil.copy(shared / name, folder / name)
    else:
        scf = f"SCF radius {settings.scf_radius_a:g} Å" if settings.scf_radius_a else "no SCF"
        say(f"FEFF8L potentials of a {len(cluster.ipots)}-atom cluster ({scf}; about a minute with SCF) ...")
        compute_potentials(cluster, potentials, settings.edge, settings.scf_radius_a, folder)
        store_files(POTENTIALS_CACHE, text, [folder / name for name in POTENTIAL_FILES])
    write_text(stamp, text)
    return folder / "phase.pad"


def _round_cluster(cluster: Cluster) -> Cluster:
    """Positions rounded as in feff.inp and atoms in a canonical order, so equal clusters give equal keys.

    The frames' average of another MD (another temperature, another potential) lists the atoms of
    a shell in another order; FEFF's potentials do not depend on it, the cache key must not either.
    """
    positions = np.round(cluster.positions_a, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    distance = np.round(np.linalg.norm(positions, axis=1), 4)
    order = np.lexsort((positions[:, 2], positions[:, 1], positions[:, 0], cluster.ipots, distance))
    return Cluster(positions[order], np.asarray(cluster.ipots)[order])


def average_chi(prepared: Prepared, advance: Callable[[], None], say: Say = lambda line: None) -> tuple[AveragedChi, dict]:
    k = k_grid()
    if prepared.settings.engine == "fast":
        raw, info = _fast_blocks(prepared, k, advance, say)
    else:
        raw, info = _feff_blocks(prepared, k, advance)
    frames_per_block = np.bincount(prepared.block_of_frame)
    return summarize(k, raw, frames_per_block, len(prepared.absorbers)), info


def _fast_blocks(prepared: Prepared, k: np.ndarray, advance: Callable[[], None], say: Say) -> tuple[np.ndarray, dict]:
    s = prepared.settings
    say(f"enumerating paths of up to {s.nleg} legs to {s.rmax_a + PATH_MARGIN_A:g} Å for {len(prepared.absorbers)} absorbers ...")
    paths = enumerate_paths(prepared.snapshots.reference, prepared.absorbers, prepared.ipot_of_atom, s.rmax_a, s.nleg, PATH_MARGIN_A)
    say(f"{paths.n_instances} path instances, {len(paths.types)} MS path types: tabulating FEFF amplitudes and phases ...")
    engine = FastEngine(paths, prepared.phase_pad, s.rmax_a, int(prepared.block_of_frame.max()) + 1, prepared.potentials.scatterers)
    engine.extra_sigma2 = prepared.extra_sigma2
    snaps = prepared.snapshots
    for i, f in enumerate(prepared.frames):
        engine.add_frame(prepared.block_of_frame[i], snaps.frac[f], snaps.cells[f])
        advance()
    raw = engine.chi_blocks(k)
    return raw, {"path_instances": paths.n_instances, "ms_path_types": engine.n_ms_types, "focusing_path_types": engine.n_focusing_types}


def _feff_blocks(prepared: Prepared, k: np.ndarray, advance: Callable[[], None]) -> tuple[np.ndarray, dict]:
    s = prepared.settings
    pairs = build_pairs(prepared.snapshots.reference, s.rmax_a + PATH_MARGIN_A)
    raw = feff_chi_blocks(prepared, pairs, k, advance)
    return raw, {"absorber_frames": len(prepared.frames) * len(prepared.absorbers)}


def summarize(k: np.ndarray, raw_blocks: np.ndarray, frames_per_block: np.ndarray, n_absorbers: int) -> AveragedChi:
    """Mean χ, the two halves of the frames, and the standard error of the block means."""
    n_blocks = len(frames_per_block)
    per_block = raw_blocks / (frames_per_block[:, None] * n_absorbers)
    chi = raw_blocks.sum(axis=0) / (frames_per_block.sum() * n_absorbers)
    if n_blocks < 2:
        nan = np.full_like(chi, np.nan)
        return AveragedChi(k, chi, nan, nan, nan, n_blocks)
    half = n_blocks // 2
    halves = [raw_blocks[sl].sum(axis=0) / (frames_per_block[sl].sum() * n_absorbers) for sl in (slice(0, half), slice(half, None))]
    stderr = per_block.std(axis=0, ddof=1) / np.sqrt(n_blocks)
    return AveragedChi(k, chi, halves[0], halves[1], stderr, n_blocks)


# ---------------------------------------------------------------- outputs

def write_outputs(prepared: Prepared, avg: AveragedChi, engine_info: dict, traj: str | Path, files: OutFiles, timing: dict) -> None:
    s = prepared.settings
    window = s.ft.window()
    write_text(files.chi, _csv("k,chi", avg.k_inv_a, avg.chi))
    write_text(files.convergence, _csv("k,chi,chi_first_half,chi_second_half,chi_stderr", avg.k_inv_a, avg.chi, avg.first_half, avg.second_half, avg.stderr))
    half_r = k_weighted_r_factor(avg.k_inv_a, avg.first_half, avg.second_half, window) if avg.n_blocks >= 2 else None
    half_r = half_r if half_r is None or np.isfinite(half_r) else None  # JSON has no NaN
    plot_chi(avg, window, files.chi_plot)
    plot_ft(avg, window, files.ft_plot)
    summary = {
        "absorber": s.absorber,
        "edge": s.edge,
        "rmax": {"requested_a": prepared.cut.requested_a, "used_a": s.rmax_a, "gap_a": list(prepared.cut.gap_a) if prepared.cut.gap_a else None, "note": prepared.cut.note},
        "settings": s.model_dump(),
        "engine": s.engine,
        "n_frames": int(len(prepared.frames)),
        "n_frames_in_file": int(prepared.snapshots.n_frames),
        "n_absorbers": int(len(prepared.absorbers)),
        "n_blocks": avg.n_blocks,
        "half_vs_half_r_factor": half_r,
        "half_vs_half_note": f"R of k^{window.kweight}·χ, first vs second half of the frames, k = {window.kmin_inv_a:g}-{window.kmax_inv_a:g} 1/Å",
        "timing_s": timing,
        "engine_info": engine_info,
        "nuclei": prepared.quantum,
        "reference_structure": prepared.snapshots.reference.info.get("reference", s.ideal),
        "potentials": str(prepared.phase_pad.parent),
        "provenance": provenance({"trajectory": str(traj)}),
    }
    write_json(files.summary, summary)


def _csv(header: str, *columns: np.ndarray) -> str:
    rows = "\n".join(",".join(f"{v:.8g}" for v in row) for row in zip(*columns))
    return f"{header}\n{rows}\n"


def read_chi_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A chi.csv written by this stage (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = OutFiles(path).chi
    if not path.exists():
        raise UserError(f"{path} does not exist; run 'mlip-exafs exafs' first or give its chi.csv")
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise UserError(f"{path} is not a k,chi CSV ({str(exc).splitlines()[0]}); give the chi.csv written by 'mlip-exafs exafs'") from None
    if data.shape[1] < 2 or len(data) < 20:
        raise UserError(f"{path} needs a header line and at least 20 rows of k,chi; give the chi.csv written by 'mlip-exafs exafs'")
    return data[:, 0], data[:, 1]


def exafs_record(theory: str | Path) -> dict:
    """The exafs.json beside a chi.csv (or in its folder); {} without one (a chi.csv from elsewhere) or an unreadable one."""
    folder = Path(theory) if Path(theory).is_dir() else Path(theory).parent
    try:
        return read_result(folder) or {}
    except (OSError, ValueError):
        return {}


def theory_absorber_edge(theory: str | Path) -> tuple[str | None, str | None]:
    """(absorber, edge) recorded in the theory's exafs.json; (None, None) without one."""
    record = exafs_record(theory)
    settings = record.get("settings", {})  # exafs.json before absorber/edge were top-level fields
    return record.get("absorber", settings.get("absorber")), record.get("edge", settings.get("edge"))
