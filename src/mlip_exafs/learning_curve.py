"""Learning curve: how many DFT structures does fine-tuning need?

A thin wrapper over the study's steps: the fine-tunes of every N and seed and
the validations (of the pretrained model and of each fine-tuned one) are the
steps ``study --only learning-curve`` runs, built by the study's pipeline and
cached in ``out/steps/<step>/`` as a study caches them, so the two share
results (a study folder's steps are reused here and the other way round) and
independent steps run side by side on the cores.

On top of the steps this verb checks forgetting on a structure outside the
training chemistry (bcc W for a WS2 model: fine-tuned vs base model, no DFT
needed) and, with ``forgetting_test`` (a DFT dataset of that other chemistry,
e.g. ``datasets/w-bcc``), validates each model on it into ``out/forgetting/``.
``learning_curve.json`` and its plot sum it up; the recommendation rule is
:mod:`mlip_exafs.recommend`.

Epochs per N follow :func:`mlip_exafs.finetune.epochs_for_n` unless the
recipe fixes them: 100 epochs up to N = 25, then ~2500 structure-passes
(50 epochs at N = 50, 40 at N = 100).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from ase import Atoms

from mlip_exafs import finetune
from mlip_exafs.config import validate_model
from mlip_exafs.dataset import assert_disjoint, load_structures
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_folder, write_json
from mlip_exafs.finetune import FinetuneRecipe
from mlip_exafs.plots import plot_learning_curve
from mlip_exafs.potentials import REGISTRY
from mlip_exafs.potentials.runtime import THREADS_ENV
from mlip_exafs.provenance import provenance
from mlip_exafs.recommend import (DEFAULT_CRITERIA, RULE_TEXT, SLOPE_TOLERANCE, Criterion, force_mae_within, recommend_n, slope_within,
                                  summarize_by_n)
from mlip_exafs.settings import LearningCurveSettings  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.structures import load_structure
from mlip_exafs.study import ONLY, study_lock
from mlip_exafs.study.config import FinetunePlan, StudyConfig
from mlip_exafs.study.executor import run_local
from mlip_exafs.study.pipeline import build_steps, find_step, finetuned_name, with_dependencies
from mlip_exafs.study.steps import Step
from mlip_exafs.units import MEV_PER_EV
from mlip_exafs.validate import Labels, predict_labels, validate

__all__ = ["LearningCurveSettings", "learning_curve", "recommend_n", "summarize_by_n", "force_mae_within", "slope_within", "plot_learning_curve",
           "Criterion", "DEFAULT_CRITERIA", "RULE_TEXT", "SLOPE_TOLERANCE"]

STEPS_FOLDER = "steps"  # as in a study folder: the same steps, the same cache
FORGETTING_FOLDER = "forgetting"
SUMMARY_FILE = "learning_curve.json"
PLOT_FILE = "learning_curve.png"
STUDY_RECIPE = {"freeze", "epochs"}  # what the study's fine-tune steps take of a recipe (mlip_exafs.study.config.FinetunePlan)


def study_config(settings: LearningCurveSettings) -> StudyConfig:
    """The study whose ``--only learning-curve`` steps are this learning curve.

    Its fine-tunes train on the train split and its validations use the test split of
    one dataset, with the recipe's ``freeze`` and ``epochs``: settings the study cannot
    express are refused here, before any work, rather than silently dropped.
    ``structure`` and ``absorber`` name the MD half of a study, which is not run:
    the steps run here do not depend on them.
    """
    entry = REGISTRY.get(settings.potential.lower())
    if entry is None or entry.family not in finetune.TRAINERS:
        raise UserError(f"potential '{settings.potential}' is not a registered CHGNet or SevenNet name, and the study's steps are named after their "
                        "potential; start the learning curve from one (see 'mlip-exafs potentials'), or fine-tune a checkpoint with 'mlip-exafs finetune' per N")
    if Path(settings.test).resolve() != Path(settings.train).resolve() and settings.test != settings.train:
        raise UserError(f"test set '{settings.test}' is not the training dataset '{settings.train}': the learning curve runs the study's steps, "
                        "which validate on the test split of the dataset they train on; give the same dataset to both")
    changed = sorted(key for key in settings.recipe.model_fields_set - STUDY_RECIPE
                     if getattr(settings.recipe, key) != FinetuneRecipe.model_fields[key].default)
    if changed:
        raise UserError(f"recipe setting {', '.join(changed)} cannot be given to the learning curve (it runs the study's fine-tune steps, "
                        "which take freeze and epochs only); leave it at its default or run 'mlip-exafs finetune' per N")
    plan = FinetunePlan(base=settings.potential, n=sorted(settings.ns), seeds=list(settings.seeds), freeze=settings.recipe.freeze,
                        epochs=settings.recipe.epochs)
    forgetting = load_structure(settings.forgetting_structure)
    data = {"name": "learning-curve", "structure": settings.forgetting_structure, "absorber": forgetting.get_chemical_symbols()[0],
            "dataset": settings.train, "pristine": [settings.potential], "finetune": plan}
    return validate_model(StudyConfig, data, "learning curve", keys_are_settings=False)


def learning_curve_steps(config: StudyConfig) -> list[Step]:
    """The fine-tunes and validations of the study, with what they depend on (``study --only learning-curve``)."""
    steps = build_steps(config)
    return with_dependencies(steps, [s.name for s in steps if ONLY["learning-curve"](config, s)])


def forgetting_structures(name: str) -> list[Atoms]:
    """A rattled 3x3x3 supercell and a 2 %-compressed copy: forces and stress are non-zero."""
    rng = np.random.default_rng(0)
    rattled = load_structure(name, "3x3x3")
    rattled.positions += rng.normal(scale=0.05, size=rattled.positions.shape)
    compressed = rattled.copy()
    compressed.set_cell(rattled.cell.array * 0.98, scale_atoms=True)
    return [rattled, compressed]


def model_difference(frames: list[Atoms], reference: Labels, other: Labels) -> dict:
    """How far ``other`` moved from ``reference`` on ``frames``."""
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
    """Fail before hours of training if the largest N cannot be drawn, the test set shares structures with the pool,
    or the forgetting test (used only after every fine-tune) cannot be read."""
    frames = load_structures(settings.train, "train")
    pool = len(frames)
    too_big = [n for n in settings.ns if n > pool]
    if too_big:
        raise UserError(f"the training pool has {pool} usable structures but {setting('ns')} asks for {too_big}; drop those N or label more structures")
    assert_disjoint(frames, load_structures(settings.test, "test"))
    if settings.forgetting_test:
        load_structures(settings.forgetting_test, "test")


@contextmanager
def _step_threads(threads: int) -> Iterator[None]:
    """The torch threads of every step's child process (``MLIP_EXAFS_THREADS``, as the study's ``threads``), restored after."""
    saved = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved


def run_steps(settings: LearningCurveSettings, config: StudyConfig, out: Path, advance=None) -> tuple[list[Step], dict[str, dict]]:
    """Run (or find cached) the learning curve's steps in ``out/steps``; ``advance()`` once per validated fine-tune."""
    steps = learning_curve_steps(config)
    by_name = {s.name: s for s in steps}

    def on_step(name: str, cached: bool) -> None:
        if advance and by_name[name].action == "validate" and by_name[name].n is not None:
            advance()

    with _step_threads(settings.threads):
        results = run_local(steps, out / STEPS_FOLDER, on_step=on_step)
    return steps, results


def run_row(settings: LearningCurveSettings, config: StudyConfig, steps: list[Step], results: dict[str, dict], n: int, seed: int, out: Path,
            forgetting: tuple[list[Atoms], Labels]) -> dict:
    """One (N, seed): the validation of its model, its training record, and how far it moved from the base model."""
    name = finetuned_name(config, n, seed)
    trained, validated = find_step(steps, "finetune", name), find_step(steps, "validate", name)
    model = results[trained.name]["model"]
    record = finetune.read_result(out / STEPS_FOLDER / trained.name)
    frames, base_labels = forgetting
    moved = model_difference(frames, base_labels, predict_labels(model, frames, settings.threads))
    if settings.forgetting_test:
        moved["dft"] = validate(model, settings.forgetting_test, out / FORGETTING_FOLDER / name, settings.threads)
    return {
        "n": n,
        "seed": seed,
        **results[validated.name],
        "epochs": record["epochs"],
        "seconds_per_structure_epoch": record["seconds_per_structure_epoch"],
        "training_seconds": record["training_seconds"],
        "forgetting": moved,
        "model": str(model),
    }


def learning_curve(settings: LearningCurveSettings, out: str | Path, advance=None) -> dict:
    """All N x seeds steps, the forgetting checks, the summary, the plot and ``learning_curve.json``."""
    out = check_output_folder(out)
    check_pool_sizes(settings)
    config = study_config(settings)
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out):  # a study and a learning curve in one folder would run the same steps at once
        steps, results = run_steps(settings, config, out, advance)
        baseline = results[find_step(steps, "validate", settings.potential).name]
        frames = forgetting_structures(settings.forgetting_structure)
        forgetting = (frames, predict_labels(settings.potential, frames, settings.threads))
        forgetting_dft = None
        if settings.forgetting_test:
            forgetting_dft = validate(settings.potential, settings.forgetting_test, out / FORGETTING_FOLDER / settings.potential, settings.threads)
        rows = [run_row(settings, config, steps, results, n, seed, out, forgetting) for n in sorted(settings.ns) for seed in settings.seeds]
        summary = summarize_by_n(rows)
        plot_learning_curve(rows, summary, baseline, out / PLOT_FILE)
        result = {
            "runs": rows,
            "summary": summary,
            "pretrained": baseline,
            "pretrained_forgetting_dft": forgetting_dft,
            "recommended_n": recommend_n(summary),
            "recommended_n_rule": RULE_TEXT,
            "forgetting_structure": f"{settings.forgetting_structure} 3x3x3, rattled 0.05 Å, and a 2 %-compressed copy; fine-tuned vs base model",
            "steps": {"folder": str(out / STEPS_FOLDER), "names": [s.name for s in steps]},
            "provenance": provenance(settings.model_dump()),
        }
        write_json(out / SUMMARY_FILE, result)
    return result
