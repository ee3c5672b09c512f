"""The study stage: one YAML -> every other stage, cached, locally or on Dask.

``run_study`` builds the steps from the config, runs what is not cached, and
writes ``summary.json`` and ``report.html``. Rerunning an unchanged study does
nothing; a changed setting reruns only the steps that depend on it; a killed
study resumes (finished steps are cached, MD resumes from its checkpoint).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from ase import Atoms

import mlip_exafs.study.actions  # noqa: F401  (registers the step actions)
from mlip_exafs.cp2k import check_can_label, check_start_moments
from mlip_exafs.dataset import assert_disjoint, dataset_folder, load_structures
from mlip_exafs.study.config import DatasetPlan, StudyConfig, load_study_config
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_folder, read_json, write_json, writer_lock
from mlip_exafs.potentials.runtime import DEVICE_ENV, THREADS_ENV, check_device_name, resolve_device
from mlip_exafs.processes import terminate_as_interrupt
from mlip_exafs.provenance import package_versions
from mlip_exafs.structures import load_structure, min_image_half_width
from mlip_exafs.study.checks import check_study
from mlip_exafs.study.executor import cached_names, run_dask, run_local
from mlip_exafs.study.pipeline import (RECORD_FILE, REPORT_FILE, STEPS_DIR, SUMMARY_FILE, SUMMARY_STEPS_KEY, build_steps, partial_learning_curve,
                                      steps_digest, summarize, with_dependencies)
from mlip_exafs.study.steps import RUN_FILE, STEP_FILE, Step, all_hashes

__all__ = ["StudyConfig", "load_study_config", "run_study"]


def run_study(
    config_path: Path,
    out: Path,
    profile: str | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    on_step: Callable[[str, bool], None] | None = None,
    only: str | None = None,
    device: str | None = None,
) -> dict | None:
    """Run the study into ``out``; returns the summary, or with ``only`` the part that ran.

    ``only="pristine"`` runs just the pretrained potentials' steps (validate, MD,
    analysis, EXAFS, compare). They do not depend on fine-tuning, so they can run
    while the training labels are still being made; returns None.
    ``only="finetuned"`` runs the rest: the fine-tunes and the fine-tuned
    potentials' steps, so their MD can have the cores first; returns None.
    ``only="learning-curve"`` runs just the fine-tunes and the validations (no MD):
    the DFT half of the study, hours shorter than the whole; returns the
    ``learning_curve`` and ``recommended_n`` of the summary (DFT criteria only).
    ``only="md"`` runs just the MD steps and the fine-tunes they need: the part
    a GPU machine speeds up; returns None. Selections join with commas, and a
    step runs if every one selects it: ``"pristine,md"`` is the pretrained
    potentials' MD alone, which needs neither labels nor FEFF.
    Either way a later full run finds these steps cached: a step's identity
    does not depend on which steps ran beside it.
    """
    check_output_folder(out)
    if scheduler:  # the workers of a scheduler started elsewhere would resolve a relative folder against their own
        out = Path(out).resolve()
    config = load_study_config(config_path, profile)
    runtime = runtime_environment(config, device, scheduler)
    os.environ.update(runtime)  # inherited by every step's child process here (and by local Dask workers)
    selections = only_selections(only)  # a misspelt selection first: before the dataset is looked for
    all_steps = build_steps(config)
    if "learning-curve" in selections and config.dataset is None:
        raise UserError(f"{setting('only')} learning-curve needs a dataset, and this study has none (pristine only); run it without {setting('only')}")
    _check_before_running(config, check_training_pool="pristine" not in selections)
    steps = selected_steps(config, all_steps, selections) if selections else all_steps
    out.mkdir(parents=True, exist_ok=True)
    with terminate_as_interrupt(), study_lock(out):
        _write_if_changed(out / RECORD_FILE, _study_record(config, profile, all_hashes(all_steps)))
        started = time.perf_counter()
        to_run = [s for s in steps if s.name not in cached_names(steps, out / STEPS_DIR, all_hashes(steps))]
        if executor == "dask":
            results = run_dask(steps, out / STEPS_DIR, scheduler, on_step=on_step, environment=runtime)
        else:
            results = run_local(steps, out / STEPS_DIR, on_step=on_step)
        elapsed_s = time.perf_counter() - started
        if selections == ["learning-curve"]:
            return partial_learning_curve(config, results)
        if selections:
            return None
        summary = {**summarize(config, results), "cost": _cost(out, to_run, elapsed_s), SUMMARY_STEPS_KEY: steps_digest(all_hashes(all_steps))}
        changed = _write_if_changed(out / SUMMARY_FILE, summary)
        if changed or not (out / REPORT_FILE).exists():
            from mlip_exafs.report import write_report  # lazy: import cycle, report imports study.pipeline

            write_report(out)
    return summary


def runtime_environment(config: StudyConfig, device: str | None, scheduler: str | None) -> dict[str, str]:
    """The study's torch threads and device as the variables every step's child reads, wherever it runs.

    Runtime choices, not part of any step's identity. Set here, they reach this machine's children; a remote
    Dask worker gets them with each step (it ignored them, and took all of a node's cores). A device is
    resolved here ('cuda' without a GPU fails before any step), except for a remote scheduler, whose
    workers may have the GPU this login node lacks: there only its name is checked.
    """
    runtime = {THREADS_ENV: str(config.threads)} if config.threads else {}
    if device or config.device:
        name = device or config.device
        runtime[DEVICE_ENV] = check_device_name(name) if scheduler else resolve_device(name)
    return runtime


ONLY = {
    "pristine": lambda config, step: step.potential in config.pristine,
    "finetuned": lambda config, step: step.potential not in config.pristine,
    "learning-curve": lambda config, step: step.action in ("finetune", "validate"),
    "md": lambda config, step: step.action == "md",
}


def only_selections(only: str | None) -> list[str]:
    """``--only``'s comma-separated selections (a step runs if every one selects it); none: the whole study."""
    if only is None:
        return []
    selections = [name.strip() for name in only.split(",")]
    unknown = [name for name in selections if name not in ONLY]
    if unknown:
        raise UserError(f"unknown {setting('only')} '{unknown[0]}'; use one of {', '.join(ONLY)}, or several joined by commas")
    return selections


def selected_steps(config: StudyConfig, steps: list[Step], selections: list[str]) -> list[Step]:
    """The steps every selection selects, and the steps they need."""
    chosen = [s.name for s in steps if all(ONLY[o](config, s) for o in selections)]
    if not chosen:
        what_to_do = "drop one of them" if len(selections) > 1 else f"run it without {setting('only')}"
        raise UserError(f"{setting('only')} {','.join(selections)} selects no step of this study; {what_to_do}")
    return with_dependencies(steps, chosen)


LOCK_FILE = ".study.lock"


def study_lock(out: Path):
    """One study process per output folder: two would run the same steps into the same folders."""
    return writer_lock(out, "study", LOCK_FILE, hint="wait for it to finish or stop it, then rerun this command (it resumes)")


NPT_MARGIN = 0.98  # of the input cell's half-width: room for an NPT to shrink the cell (thermal contraction between a series'
# temperatures is < 1 % in a crystal); an input cell far from the potential's lattice can shrink more: the EXAFS stage refuses that


def _check_before_running(config: StudyConfig, check_training_pool: bool = True) -> None:
    """Fail on what would otherwise stop the study hours in: a too-small MD cell, too few labels, train/test overlap."""
    check_study(config)  # every setting a stage would refuse, before any step runs or any finished step is removed (#23)
    structure = load_structure(config.structure, config.md.supercell)
    half, what = min_image_half_width(structure), "half the MD supercell's width"
    if config.md.npt_time_fs() > 0:  # the EXAFS stage checks the cell the NPT left, after hours of MD
        half, what = NPT_MARGIN * half, f"{NPT_MARGIN:.0%} of half the MD supercell's width (its NPT may shrink the cell)"
    if config.exafs.rmax_a > half:
        raise UserError(f"exafs.rmax_a = {config.exafs.rmax_a:g} Å exceeds {what} ({half:.2f} Å for "
                        f"{config.md.supercell}); use a larger md.supercell or exafs.rmax_a <= {half:.2f}")
    fine_tunes = check_training_pool and bool(config.finetune.n and config.finetune.seeds)
    if isinstance(config.dataset, DatasetPlan):  # labelled by this study: of its material (overlap is checked when merged)
        sources = {split: load_structure(getattr(config.dataset, split).structure) for split in ("train", "test")}
        for split, source in sources.items():
            _check_elements(source, structure, f"dataset.{split}.structure")
        check_can_label(config.dataset.cp2k, set(structure.get_chemical_symbols()))
        check_start_moments(config.dataset.cp2k, list(sources.values()))
    elif config.dataset is not None:
        train = _checked_dataset(config.dataset, structure, with_train=fine_tunes)
    if not fine_tunes:
        return
    if isinstance(config.dataset, DatasetPlan):
        n_train, where = config.dataset.train.total(), "dataset.train samples"
    else:
        n_train, where = len(train), f"dataset '{config.dataset}' has"
    if max(config.finetune.n) > n_train:
        raise UserError(f"finetune.n asks for up to {max(config.finetune.n)} structures but {where} {n_train} usable "
                        "training structures; lower finetune.n or label more structures")


def _checked_dataset(spec: str, structure: Atoms, with_train: bool) -> list[Atoms]:
    """A labelled dataset the study can use: of the study's material, with a training pool apart from the test set
    (returned) where it fine-tunes."""
    if with_train and dataset_folder(spec) is None:
        raise UserError(f"dataset {spec} is one database file, which would be both the training pool and the test set; "
                        "give a folder with train.db and test.db (e.g. 'mlip-exafs import FILES --db FOLDER/train.db')")
    test = load_structures(spec, "test")
    train = load_structures(spec, "train") if with_train else []
    assert_disjoint(train, test)
    _check_elements(train + test, structure, f"dataset {spec}")
    return train


def _check_elements(frames: Atoms | list[Atoms], structure: Atoms, what: str) -> None:
    """Labels of the study's material: the same elements as its structure."""
    frames = [frames] if isinstance(frames, Atoms) else frames
    wanted = set(structure.get_chemical_symbols())
    found = {symbol for atoms in frames for symbol in atoms.get_chemical_symbols()}
    if found != wanted:
        raise UserError(f"{what} holds {'-'.join(sorted(found))} structures but the study's structure is "
                        f"{'-'.join(sorted(wanted))}; give the labels of this material")


def _cost(out: Path, ran: list[Step], elapsed_s: float) -> dict:
    """What this run cost: its wall time and the sum of its steps' wall times (their ratio: steps at once on average).

    A step resumed after a kill counts only this run's share of its ``wall_s``.
    A run that found every step cached keeps the cost of the run that made the
    results, so an unchanged rerun still writes nothing.
    """
    if not ran and (out / SUMMARY_FILE).exists() and "cost" in (previous := read_json(out / SUMMARY_FILE)):
        return previous["cost"]
    step_s = sum(read_json(out / STEPS_DIR / s.name / STEP_FILE)["wall_s"] - read_json(out / STEPS_DIR / s.name / RUN_FILE)["earlier_s"] for s in ran)
    return {"elapsed_s": round(elapsed_s, 1), "step_s": round(float(step_s), 1)}


def _study_record(config: StudyConfig, profile: str | None, hashes: dict[str, str]) -> dict:
    return {"config": json.loads(config.model_dump_json()), "profile": profile, "step_inputs": hashes, "packages": package_versions()}


def _write_if_changed(path: Path, data: dict) -> bool:
    """Write JSON only when its content changes, so an unchanged rerun touches nothing."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str)
    if path.exists() and path.read_text().strip() == text.strip():
        return False
    write_json(path, json.loads(text))
    return True
