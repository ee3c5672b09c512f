"""Where a long study stands: each step finished, running, interrupted or waiting, and the time it took so far.

A paper profile runs for many hours, over several sessions or SLURM jobs; its folder is the
only place that knows how far it got. This reads it without touching it: the study record
(``study.json``: config and every step's inputs hash), each step's finished marker, its run
heartbeat and the last progress line of its log (an MD's "MD 300 K: 646/3500, ... ETA").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlip_exafs.study.pipeline import STEPS_DIR, recorded_steps
from mlip_exafs.errors import in_terms
from mlip_exafs.files import read_json
from mlip_exafs.study.steps import ERROR_FILE, INPUTS_FILE, LOG_FILE, finished_record, run_record, yaml_names

State = Literal["finished", "running", "failed", "interrupted", "waiting"]
LOG_TAIL_BYTES = 4096  # the last progress line is near the end; a long log is not read whole
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class StepProgress:
    name: str
    state: State
    spent_s: float  # a finished step's wall_s; else what its runs so far took (0 for a waiting step)
    last_line: str | None  # the last line of its log, for a started step that has not finished


def study_progress(study_dir: Path, now: float | None = None) -> list[StepProgress]:
    """Every step of the study in pipeline order, with its state; a step whose inputs changed counts as waiting."""
    _, steps, hashes = recorded_steps(study_dir)
    now = time.time() if now is None else now
    return [_step_progress(study_dir / STEPS_DIR / s.name, s.name, s.action, hashes[s.name], now) for s in steps]


def _step_progress(folder: Path, name: str, action: str, digest: str, now: float) -> StepProgress:
    if done := finished_record(folder, digest):
        return StepProgress(name, "finished", done["wall_s"], None)
    stamp = folder / INPUTS_FILE
    run = run_record(folder)
    if run is None or not stamp.exists() or stamp.read_text() != digest:
        return StepProgress(name, "waiting", 0.0, None)
    if run.alive_at(now):
        return StepProgress(name, "running", run.spent_s(now), _last_log_line(folder / LOG_FILE))
    if (folder / ERROR_FILE).exists():  # its child stopped with an error: a rerun would stop there again
        return StepProgress(name, "failed", run.spent_s(now), "error: " + in_terms(read_json(folder / ERROR_FILE)["message"], yaml_names(action)))
    last = _last_log_line(folder / LOG_FILE)
    return StepProgress(name, "interrupted", run.spent_s(now), f"(stopped) {last}" if last else None)


def _last_log_line(log: Path) -> str | None:
    """The last non-empty line (progress bars rewrite theirs with carriage returns), without colour codes."""
    if not log.exists():
        return None
    with open(log, "rb") as fh:
        fh.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
        tail = ANSI.sub("", fh.read().decode(errors="replace"))
    lines = [line.strip() for line in re.split(r"[\r\n]", tail) if line.strip()]
    return lines[-1] if lines else None
