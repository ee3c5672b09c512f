"""Validate a potential against DFT labels: errors, softening, parity plots.

Metrics (all over the test structures):

* ``energy_mae_mev_atom``: MAE of energies per atom after adding a constant
  reference per element to the predictions. The references are fitted by least
  squares to ``E_dft - E_pred`` over the test set; with a single composition
  (e.g. only WS2) the element references cannot be separated, so the fit falls
  back to one constant per atom. This measures *relative* energies: CP2K's
  pseudopotential scale (~ -800 eV/atom) and the model's MPtrj scale differ by
  a constant that carries no physics.
* ``force_mae_ev_a`` / ``force_rmse_ev_a``: over all Cartesian force components.
* ``stress_mae_gpa``: over the six Voigt components (null without DFT stress).
* ``softening_slope``: least-squares slope of predicted vs DFT force components
  through the origin (Deng et al. 2025); < 1 means the potential is too soft.
* ``cmae_ev_a``: force MAE after dividing the predictions by that slope.

``validate_by_group.json`` splits the force and stress errors by how each test
structure was made (``md 450 K``, ``strained 1000 K``, ``rattled``, …): a test
set that mixes 450 K and 1000 K snapshots averages errors that differ by 2×,
and the room-temperature MD of an EXAFS study lives in the cooler group.

The files a validation writes are named in :class:`OutFiles`; other stages read
its result with :func:`read_result`.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlip_exafs.dataset import load_structures
from mlip_exafs.errors import UserError
from mlip_exafs.files import check_output_folder, read_json, write_json
from mlip_exafs.plots import plt, save_figure
from mlip_exafs.potentials import load_potential, pins_content, potential_id
from mlip_exafs.provenance import provenance
from mlip_exafs.units import MEV_PER_EV, ase_stress_to_gpa, matrix_to_voigt

METRIC_KEYS = (
    "energy_mae_mev_atom",
    "force_mae_ev_a",
    "force_rmse_ev_a",
    "stress_mae_gpa",
    "softening_slope",
    "cmae_ev_a",
    "n_test_structures",
)


@dataclass
class Labels:
    """Energies, forces and stresses of a list of structures, in validation units."""

    energy_ev: np.ndarray  # (n_structures,)
    forces_ev_a: np.ndarray  # (n_atoms_total, 3), structures concatenated
    stress_gpa: np.ndarray | None  # (n_structures, 6) Voigt, tensile positive; None if missing (DFT) or not predicted (a calculator without stress)


def n_atoms_of(frames: list[Atoms]) -> np.ndarray:
    return np.array([len(a) for a in frames], dtype=float)


def dft_labels(frames: list[Atoms]) -> Labels:
    """The labels stored on each frame's SinglePointCalculator."""
    results = [a.calc.results for a in frames]
    has_stress = all("stress" in r for r in results)
    return Labels(
        energy_ev=np.array([float(r["energy"]) for r in results]),
        forces_ev_a=np.concatenate([np.asarray(r["forces"]) for r in results]),
        stress_gpa=np.array([ase_stress_to_gpa(r["stress"]) for r in results]) if has_stress else None,
    )


PREDICT_BATCH = 8  # structures per batch prediction: the progress bar moves once per batch


def predict_labels(potential: str | Path, frames: list[Atoms], threads: int = 1, advance=None, device: str | None = None) -> Labels:
    """Evaluate ``potential`` on every frame with its family's batch prediction (elements checked first)."""

    with contextlib.redirect_stdout(None):  # models print banners on load; keep stdout for results
        loaded = load_potential(potential, device, threads)
    for atoms in frames:
        loaded.check_elements(atoms)
    preds = []
    for start in range(0, len(frames), PREDICT_BATCH):
        batch = frames[start:start + PREDICT_BATCH]
        preds += loaded.predict_efs(batch)
        for _ in batch if advance else ():
            advance()
    return Labels(
        energy_ev=np.array([float(p["e"]) * len(a) for p, a in zip(preds, frames)]),
        forces_ev_a=np.concatenate([np.asarray(p["f"], dtype=float) for p in preds]),
        stress_gpa=None if any(p["s"] is None for p in preds) else np.array([matrix_to_voigt(p["s"]) for p in preds]),
    )


def composition_matrix(frames: list[Atoms]) -> tuple[list[str], np.ndarray]:
    """Element symbols and the (n_structures, n_elements) count matrix."""
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    counts = np.array([[a.get_chemical_symbols().count(el) for el in elements] for a in frames], dtype=float)
    return elements, counts


def fit_element_offsets_ev(frames: list[Atoms], residual_ev: np.ndarray) -> tuple[dict[str, float], str]:
    """Per-element constants mu with ``residual ~ counts @ mu`` (least squares).

    When the compositions do not determine every element (one composition, or
    fewer structures than elements) the same constant is used for every atom.
    """
    elements, counts = composition_matrix(frames)
    if np.linalg.matrix_rank(counts) == len(elements):
        mu, *_ = np.linalg.lstsq(counts, residual_ev, rcond=None)
        return dict(zip(elements, map(float, mu))), "least squares per element"
    per_atom = counts.sum(axis=1)
    constant = float(per_atom @ residual_ev / (per_atom @ per_atom))
    return {el: constant for el in elements}, "one constant per atom (compositions cannot separate the elements)"


def offset_energy_ev(frames: list[Atoms], offsets_ev: dict[str, float]) -> np.ndarray:
    """Sum of the per-element constants of each structure."""
    return np.array([sum(offsets_ev[s] for s in a.get_chemical_symbols()) for a in frames])


def softening_slope(predicted, reference) -> float:
    """Slope of predicted vs reference force components, fitted through the origin."""
    p = np.ravel(predicted)
    r = np.ravel(reference)
    denom = float(r @ r)
    if denom == 0.0:
        raise UserError("all reference forces are zero, so the softening slope is undefined; use structures away from equilibrium")
    return float(p @ r / denom)


def corrected_force_mae(predicted, reference, slope: float) -> float:
    """Force MAE after removing a uniform softening (predictions divided by the slope)."""
    return float(np.mean(np.abs(np.ravel(predicted) / slope - np.ravel(reference))))


def energy_mae_mev_atom(frames: list[Atoms], dft: Labels, pred: Labels) -> tuple[float | None, dict[str, float], str]:
    """Energy MAE after the fitted per-element constants; None when the test set has no more structures than
    constants fitted (one structure: the constant absorbs its whole error, a 'perfect' 0 that says nothing)."""
    offsets, method = fit_element_offsets_ev(frames, dft.energy_ev - pred.energy_ev)
    n_constants = 1 if method.startswith("one constant") else len(offsets)
    if len(frames) <= n_constants:
        return None, offsets, f"{method}; energy MAE not judged: {len(frames)} structure(s) for {n_constants} fitted constant(s)"
    aligned_ev = pred.energy_ev + offset_energy_ev(frames, offsets)
    mae = float(np.mean(np.abs((aligned_ev - dft.energy_ev) / n_atoms_of(frames)))) * MEV_PER_EV
    return mae, offsets, method


def compute_metrics(frames: list[Atoms], dft: Labels, pred: Labels) -> tuple[dict, dict]:
    """The metrics in METRIC_KEYS, plus how the energy reference was set (for provenance)."""
    e_mae, offsets, method = energy_mae_mev_atom(frames, dft, pred)
    diff = pred.forces_ev_a - dft.forces_ev_a
    slope = softening_slope(pred.forces_ev_a, dft.forces_ev_a)
    stress_mae = None if dft.stress_gpa is None or pred.stress_gpa is None else float(np.mean(np.abs(pred.stress_gpa - dft.stress_gpa)))
    metrics = {
        "energy_mae_mev_atom": e_mae,
        "force_mae_ev_a": float(np.mean(np.abs(diff))),
        "force_rmse_ev_a": float(np.sqrt(np.mean(diff**2))),
        "stress_mae_gpa": stress_mae,
        "softening_slope": slope,
        "cmae_ev_a": corrected_force_mae(pred.forces_ev_a, dft.forces_ev_a, slope),
        "n_test_structures": len(frames),
    }
    return metrics, {"energy_offsets_ev": offsets, "energy_offset_method": method}


BY_GROUP_FILE = "validate_by_group.json"
PARITY_QUANTITIES = ("energy", "forces", "stress")


@dataclass(frozen=True)
class OutFiles:
    """What a validation writes into its folder; the one place that names these files."""

    out: Path

    @property
    def metrics(self) -> Path:
        """validate.json: the metrics of METRIC_KEYS (written last: its presence means the validation finished)."""
        return self.out / "validate.json"

    @property
    def provenance(self) -> Path:
        """validate.provenance.json: the inputs hash that a rerun compares, energy reference, timing."""
        return self.out / "validate.provenance.json"

    @property
    def by_group(self) -> Path:
        """Force and stress errors per kind of test structure (:func:`errors_by_group`)."""
        return self.out / BY_GROUP_FILE

    def parity_plot(self, quantity: str) -> Path:  # one of PARITY_QUANTITIES
        """Parity plot of ``energy``, ``forces`` or ``stress``."""
        return self.out / f"parity_{quantity}.png"


def read_result(folder: str | Path) -> dict | None:
    """The metrics a finished validation recorded in its folder; None for a folder without them."""
    path = OutFiles(Path(folder)).metrics
    return read_json(path) if path.exists() else None


def group_of(atoms: Atoms) -> str:
    """How a structure was made, from the info that ``sample`` stores: 'md 450 K', 'rattled', …"""
    method = atoms.info.get("method")
    if not method:
        return "not recorded"
    temperature = atoms.info.get("temperature_k")
    return f"{method} {temperature:g} K" if temperature is not None else str(method)


def errors_by_group(frames: list[Atoms], dft: Labels, pred: Labels) -> dict:
    """Force (eV/Å) and stress (GPa) errors per group of ``group_of``, with the mean DFT |force| for scale."""
    frame_group = np.array([group_of(a) for a in frames])
    atom_group = np.repeat(frame_group, [len(a) for a in frames])
    result = {}
    for group in sorted(set(frame_group)):
        f_dft, f_pred = dft.forces_ev_a[atom_group == group], pred.forces_ev_a[atom_group == group]
        diff = f_pred - f_dft
        stress_mae = None if dft.stress_gpa is None or pred.stress_gpa is None else float(np.mean(np.abs(pred.stress_gpa - dft.stress_gpa)[frame_group == group]))
        result[group] = {
            "n_test_structures": int(np.sum(frame_group == group)),
            "force_mae_ev_a": float(np.mean(np.abs(diff))),
            "force_rmse_ev_a": float(np.sqrt(np.mean(diff**2))),
            "softening_slope": softening_slope(f_pred, f_dft) if np.any(f_dft) else None,  # a group of perfect cells
            "stress_mae_gpa": stress_mae,
            "mean_abs_dft_force_ev_a": float(np.mean(np.abs(f_dft))),
        }
    return result


def labels_hash(frames: list[Atoms]) -> str:
    """Content hash of structures and labels: stable while a database grows elsewhere."""
    digest = hashlib.sha256()
    for atoms in sorted(frames, key=lambda a: str(a.info.get("uid", ""))):
        digest.update(str(atoms.info.get("uid", "")).encode())
        for array in (atoms.numbers, atoms.positions, atoms.cell.array):
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        for key in ("energy", "forces", "stress"):
            if key in atoms.calc.results:
                digest.update(np.ascontiguousarray(atoms.calc.results[key], dtype=float).tobytes())
    return digest.hexdigest()


def plot_parity(reference, predicted, quantity: str, unit: str, path: Path, slope: float | None = None) -> None:
    """One parity plot; the softening slope is drawn when given."""
    ref = np.ravel(reference)
    pred = np.ravel(predicted)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    if slope is not None:
        ax.plot([lo, hi], [slope * lo, slope * hi], "r-", lw=0.8, label=f"slope {slope:.3f}")
    ax.scatter(ref, pred, s=4, alpha=0.5)
    ax.set_xlabel(f"DFT {quantity} ({unit})")
    ax.set_ylabel(f"predicted {quantity} ({unit})")
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def write_parity_plots(frames: list[Atoms], dft: Labels, pred: Labels, offsets_ev: dict, slope: float, files: OutFiles) -> None:
    per_atom = n_atoms_of(frames)
    aligned = (pred.energy_ev + offset_energy_ev(frames, offsets_ev)) / per_atom
    # DFT energies sit on the code's pseudopotential scale (~1e3 eV/atom): show both relative to the DFT mean
    zero = np.mean(dft.energy_ev / per_atom)
    plot_parity(1e3 * (dft.energy_ev / per_atom - zero), 1e3 * (aligned - zero),
                "energy − ⟨E_DFT⟩", "meV/atom", files.parity_plot("energy"))
    plot_parity(dft.forces_ev_a, pred.forces_ev_a, "force components", "eV/Å", files.parity_plot("forces"), slope)
    if dft.stress_gpa is not None and pred.stress_gpa is not None:
        plot_parity(dft.stress_gpa, pred.stress_gpa, "stress (Voigt)", "GPa", files.parity_plot("stress"))


def previous_result(files: OutFiles, inputs_hash: str) -> dict | None:
    """A finished validation with the same inputs, so reruns cost nothing."""
    if files.metrics.exists() and files.provenance.exists() and files.by_group.exists() and read_json(files.provenance).get("inputs_hash") == inputs_hash:
        return read_json(files.metrics)
    return None


def validate(potential: str | Path, test: str | Path, out: str | Path, threads: int = 1, advance=None, device: str | None = None) -> dict:
    """Validate ``potential`` on the test split of ``test``; writes the files of :class:`OutFiles` into ``out``, the metrics last."""
    files = OutFiles(check_output_folder(out))
    frames = load_structures(test, "test")
    pot_id = potential_id(potential)
    inputs_hash = hashlib.sha256(f"{pot_id}|{labels_hash(frames)}".encode()).hexdigest()
    cached = previous_result(files, inputs_hash) if pins_content(pot_id) else None  # python: code can change under its name
    if cached is not None:
        return cached
    for stale in (files.metrics, *(files.parity_plot(q) for q in PARITY_QUANTITIES)):  # a rerun without stress leaves no old stress plot
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    dft = dft_labels(frames)
    pred = predict_labels(potential, frames, threads, advance, device)
    metrics, energy_reference = compute_metrics(frames, dft, pred)
    seconds = time.perf_counter() - start
    write_parity_plots(frames, dft, pred, energy_reference["energy_offsets_ev"], metrics["softening_slope"], files)
    write_json(files.by_group, errors_by_group(frames, dft, pred))
    inputs = {"potential": pot_id, "test": str(test), "test_uids": [a.info.get("uid") for a in frames]}
    write_json(files.provenance, {
        "inputs_hash": inputs_hash,
        **energy_reference,
        "seconds": round(seconds, 2),
        "provenance": provenance(inputs),
    })
    write_json(files.metrics, metrics)
    return metrics
