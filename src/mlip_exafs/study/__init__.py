"""The study stage: one YAML -> every other stage, cached, locally or on Dask.

``run_study`` builds the steps from the config, runs what is not cached, and
writes ``summary.json`` and ``report.html``. Rerunning an unchanged study does
nothing; a changed setting reruns only the steps that depend on it; a killed
study resumes (finished steps are cached, MD resumes from its checkpoint).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from mlip_exafs.study.config import StudyConfig, load_study_config
from mlip_exafs.study.pipeline import build_steps, summarize

__all__ = ["StudyConfig", "load_study_config", "run_study"]


def run_study(
    config_path: Path,
    out: Path,
    profile: str | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    on_step: Callable[[str, bool], None] | None = None,
) -> dict:
    from mlip_exafs.study.executor import run_dask, run_local
    from mlip_exafs.study.steps import all_hashes

    import mlip_exafs.study.actions  # noqa: F401  (registers the step actions)

    config = load_study_config(config_path, profile)
    if config.threads:  # inherited by every step's child process (and by local Dask workers)
        os.environ["MLIP_EXAFS_THREADS"] = str(config.threads)
    steps = build_steps(config)
    if config.finetune.n and config.finetune.seeds:
        _check_train_test_disjoint(config.dataset)
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(out / "study.json", _study_record(config, profile, all_hashes(steps)))
    if executor == "dask":
        results = run_dask(steps, out / "steps", scheduler, on_step=on_step)
    else:
        results = run_local(steps, out / "steps", on_step=on_step)
    summary = summarize(config, results)
    changed = _write_if_changed(out / "summary.json", summary)
    if changed or not (out / "report.html").exists():
        from mlip_exafs.report import write_report

        write_report(out)
    return summary


def _check_train_test_disjoint(dataset: str) -> None:
    """Fine-tunes draw from the train split and every model is validated on the test split: they must not overlap."""
    from mlip_exafs.dataset import assert_disjoint, load_structures

    assert_disjoint(load_structures(dataset, "train"), load_structures(dataset, "test"))


def _study_record(config: StudyConfig, profile: str | None, hashes: dict[str, str]) -> dict:
    from mlip_exafs.provenance import package_versions

    return {"config": json.loads(config.model_dump_json()), "profile": profile, "step_inputs": hashes, "packages": package_versions()}


def _write_if_changed(path: Path, data: dict) -> bool:
    """Write JSON only when its content changes, so an unchanged rerun touches nothing."""
    from mlip_exafs.files import write_json

    text = json.dumps(data, indent=2, sort_keys=False, default=str)
    if path.exists() and path.read_text().strip() == text.strip():
        return False
    write_json(path, json.loads(text))
    return True
