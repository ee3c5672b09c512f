"""Learning curve: how many DFT structures does fine-tuning need?

For every N and seed: fine-tune on N structures drawn by the seed, validate on
the test set, and check forgetting on a structure outside the training
chemistry (bcc W for a WS2 model: fine-tuned vs base model, no DFT needed).
With ``forgetting_test`` (a DFT dataset of that other chemistry, e.g.
``datasets/w-bcc``) each model is also validated on it. Runs live in
``out/n{N}-s{seed}/`` and finished ones are reused on rerun.

Epochs per N follow :func:`mlip_exafs.finetune.epochs_for_n` unless the
recipe fixes them: 100 epochs up to N = 25, then ~2500 structure-passes
(50 epochs at N = 50, 40 at N = 100).

``recommended_n`` is the smallest N whose seed-averaged results pass every
criterion in :data:`DEFAULT_CRITERIA`; each criterion is a small pure function
of (summary at N, summary at the largest N), so a later EXAFS criterion is
one more function in that tuple.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from mlip_exafs.errors import UserError
from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune
from mlip_exafs.units import MEV_PER_EV

Criterion = Callable[[dict, dict], bool]


class LearningCurveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    potential: str = "chgnet"
    train: str
    test: str
    ns: list[int] = Field(min_length=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    recipe: FinetuneRecipe = FinetuneRecipe()
    forgetting_structure: str = "w-bcc"
    forgetting_test: str | None = None  # optional DFT dataset outside the training chemistry (e.g. datasets/w-bcc)
    threads: int = Field(1, ge=1)


def force_mae_within(fraction: float = 0.10) -> Criterion:
    """Mean force MAE at N within ``fraction`` of the value at the largest N."""
    return lambda at_n, at_max: at_n["force_mae_ev_a_mean"] <= (1.0 + fraction) * at_max["force_mae_ev_a_mean"]


SLOPE_TOLERANCE = 0.03  # |softening slope - 1| that counts as "as stiff as DFT"


def slope_within(tolerance: float = SLOPE_TOLERANCE) -> Criterion:
    """Mean softening slope at N within ``tolerance`` of 1."""
    return lambda at_n, at_max: abs(at_n["softening_slope_mean"] - 1.0) <= tolerance


DEFAULT_CRITERIA: tuple[Criterion, ...] = (force_mae_within(0.10), slope_within(SLOPE_TOLERANCE))
RULE_TEXT = "smallest N with mean force MAE <= 1.10 x that at the largest N and |mean softening slope - 1| <= 0.03"


def recommend_n(summary: list[dict], criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA) -> int | None:
    """Smallest N whose summary passes every criterion; None if none does."""
    if not summary:
        return None
    ordered = sorted(summary, key=lambda s: s["n"])
    at_max = ordered[-1]
    for at_n in ordered:
        if all(criterion(at_n, at_max) for criterion in criteria):
            return at_n["n"]
    return None


def summarize_by_n(rows: list[dict], keys=("force_mae_ev_a", "softening_slope", "energy_mae_mev_atom", "cmae_ev_a")) -> list[dict]:
    """Mean and standard deviation over seeds for each N."""
    summary = []
    for n in sorted({r["n"] for r in rows}):
        at_n = [r for r in rows if r["n"] == n]
        entry = {"n": n, "n_seeds": len(at_n)}
        for key in keys:
            values = np.array([r[key] for r in at_n], dtype=float)
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_std"] = float(values.std())
        summary.append(entry)
    return summary


def forgetting_structures(name: str) -> list[Atoms]:
    """A rattled 3x3x3 supercell and a 2 %-compressed copy: forces and stress are non-zero."""
    from mlip_exafs.structures import load_structure

    rng = np.random.default_rng(0)
    rattled = load_structure(name, "3x3x3")
    rattled.positions += rng.normal(scale=0.05, size=rattled.positions.shape)
    compressed = rattled.copy()
    compressed.set_cell(rattled.cell.array * 0.98, scale_atoms=True)
    return [rattled, compressed]


def model_difference(frames: list[Atoms], reference, other) -> dict:
    """How far ``other`` moved from ``reference`` (both validate.Labels) on ``frames``."""
    n_atoms = np.array([len(a) for a in frames], dtype=float)
    return {
        "energy_shift_mev_atom": float(np.mean((other.energy_ev - reference.energy_ev) / n_atoms) * MEV_PER_EV),
        "force_mad_ev_a": float(np.mean(np.abs(other.forces_ev_a - reference.forces_ev_a))),
        "stress_mad_gpa": float(np.mean(np.abs(other.stress_gpa - reference.stress_gpa))),
        "force_slope_vs_base": float(
            other.forces_ev_a.ravel() @ reference.forces_ev_a.ravel() / (reference.forces_ev_a.ravel() @ reference.forces_ev_a.ravel())
        ),
    }


def check_pool_sizes(settings: LearningCurveSettings) -> None:
    """Fail before hours of training if the largest N cannot be drawn, or the test set shares structures with the pool."""
    from mlip_exafs.dataset import assert_disjoint, load_structures

    frames = load_structures(settings.train, "train")
    pool = len(frames)
    too_big = [n for n in settings.ns if n > pool]
    if too_big:
        raise UserError(f"the training pool has {pool} usable structures but --n asks for {too_big}; drop those N or label more structures")
    assert_disjoint(frames, load_structures(settings.test, "test"))


def run_one(settings: LearningCurveSettings, n: int, seed: int, out: Path, forgetting) -> dict:
    """Fine-tune, validate and check forgetting for one (N, seed)."""
    from mlip_exafs.files import read_json
    from mlip_exafs.validate import predict_labels, validate

    run_dir = out / f"n{n}-s{seed}"
    ft = FinetuneSettings(potential=settings.potential, train=settings.train, n=n, seed=seed, recipe=settings.recipe, threads=settings.threads)
    model = finetune(ft, run_dir)
    metrics = validate(model, settings.test, run_dir / "validate", settings.threads)
    record = read_json(run_dir / "finetune.json")
    frames, base_labels = forgetting
    moved = model_difference(frames, base_labels, predict_labels(model, frames, settings.threads))
    if settings.forgetting_test:
        moved["dft"] = validate(model, settings.forgetting_test, run_dir / "validate-forgetting", settings.threads)
    return {
        "n": n,
        "seed": seed,
        **metrics,
        "epochs": record["epochs"],
        "seconds_per_structure_epoch": record["seconds_per_structure_epoch"],
        "training_seconds": record["training_seconds"],
        "forgetting": moved,
        "model": str(model),
    }


def plot_learning_curve(rows: list[dict], summary: list[dict], baseline: dict, path: Path) -> None:
    """Force MAE and softening slope vs N: seeds as dots, mean +- std as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlip_exafs.files import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")  # a journal page's width
    for ax, key, label in ((axes[0], "force_mae_ev_a", "force MAE (eV/Å)"), (axes[1], "softening_slope", "softening slope")):
        ns = [s["n"] for s in summary]
        ax.errorbar(ns, [s[f"{key}_mean"] for s in summary], yerr=[s[f"{key}_std"] for s in summary], marker="o", capsize=3, label="fine-tuned (mean ± std)")
        ax.scatter([r["n"] for r in rows], [r[key] for r in rows], s=10, color="gray", alpha=0.6, label="single seeds")
        ax.axhline(baseline[key], color="r", ls="--", lw=1, label="pretrained")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training structures N")
        ax.set_ylabel(label)
    axes[1].axhline(1.0, color="k", lw=0.6)
    axes[0].legend(fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def learning_curve(settings: LearningCurveSettings, out: str | Path, advance=None) -> dict:
    """All N x seeds runs, the summary, the plot and ``learning_curve.json``."""
    from mlip_exafs.files import write_json
    from mlip_exafs.provenance import provenance
    from mlip_exafs.validate import predict_labels, validate

    out = Path(out)
    check_pool_sizes(settings)
    baseline = validate(settings.potential, settings.test, out / "pretrained" / "validate", settings.threads)
    frames = forgetting_structures(settings.forgetting_structure)
    forgetting = (frames, predict_labels(settings.potential, frames, settings.threads))
    forgetting_dft = None
    if settings.forgetting_test:
        forgetting_dft = validate(settings.potential, settings.forgetting_test, out / "pretrained" / "validate-forgetting", settings.threads)
    rows = []
    for n in sorted(settings.ns):
        for seed in settings.seeds:
            rows.append(run_one(settings, n, seed, out, forgetting))
            if advance:
                advance()
    summary = summarize_by_n(rows)
    plot_learning_curve(rows, summary, baseline, out / "learning_curve.png")
    result = {
        "runs": rows,
        "summary": summary,
        "pretrained": baseline,
        "pretrained_forgetting_dft": forgetting_dft,
        "recommended_n": recommend_n(summary),
        "recommended_n_rule": RULE_TEXT,
        "forgetting_structure": f"{settings.forgetting_structure} 3x3x3, rattled 0.05 Å, and a 2 %-compressed copy; fine-tuned vs base model",
        "provenance": provenance(settings.model_dump()),
    }
    write_json(out / "learning_curve.json", result)
    return result
