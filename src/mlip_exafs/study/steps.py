"""Cached pipeline steps: a step reruns only when its inputs (or an upstream step's) change.

Each step owns ``ROOT/<name>/``. ``step.json`` (written last, atomically) holds
the hash of its inputs and its small JSON result: if the hash matches, the step
is done and is not run again. A step whose inputs changed starts from an empty
folder; a step that was killed keeps its folder, so stages that resume (MD
checkpoints) continue where they stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlip_exafs
from mlip_exafs.cp2k import Cp2kSettings
from mlip_exafs.errors import UserError, in_terms
from mlip_exafs.processes import dies_with_parent
from mlip_exafs.files import read_json, sha256_file, write_json, write_text
from mlip_exafs.study.config import ExafsPlan, ExperimentPlan, FinetunePlan, MdPlan

Action = Callable[..., dict]
ACTIONS: dict[str, Action] = {}


def action(name: str) -> Callable[[Action], Action]:
    """Register ``fn(folder, deps, **params) -> dict`` as a step action."""

    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Step:
    """One cached step, and what it is about, so readers never parse its name.

    ``potential`` (the pristine name or the fine-tuned model's name), ``n`` and
    ``seed`` (of a fine-tuned model) and ``temperature_k`` (of an MD, its analysis,
    EXAFS and comparisons, and of an experiment's fit) are None where they do not
    apply. They describe the step for its readers and stay out of its inputs hash:
    what the step computes is in ``action``, ``params``, ``deps`` and ``files``.
    """

    name: str
    action: str
    params: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    files: dict = field(default_factory=dict)  # content hashes of the files it reads (dataset split, structure, spectrum); not passed to the action
    potential: str | None = None
    n: int | None = None
    seed: int | None = None
    temperature_k: float | None = None


def inputs_hash(step: Step, dep_hashes: dict[str, str]) -> str:
    payload = {"action": step.action, "params": _without_locations(step.params), "deps": dep_hashes, "version": mlip_exafs.__version__}
    if step.files:  # only when present, so the hashes of steps that read no file stay what they were
        payload["files"] = step.files
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without_locations(value: Any) -> Any:
    """Parameters as a hash sees them: an input file by its content, an input folder by its name, never where it lies.

    The study resolves the paths of its config to absolute ones; hashed as such, a study folder moved to another
    machine or checkout (or finished on a GPU machine) would redo every step that reads a file. A folder's content
    (a dataset's) enters through the step's ``files``.
    """
    if isinstance(value, dict):
        return {key: _without_locations(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_locations(item) for item in value]
    if isinstance(value, str) and Path(value).is_absolute():
        path = Path(value)
        if path.is_file():
            return {"file": path.name, "sha256": sha256_file(path)[:16]}
        if path.is_dir():
            return {"folder": path.name}
    return value


def all_hashes(steps: list[Step]) -> dict[str, str]:
    """Hashes in dependency order; a step's hash covers every upstream step's."""
    by_name = {s.name: s for s in steps}
    hashes: dict[str, str] = {}

    def visit(name: str) -> str:
        if name not in hashes:
            step = by_name[name]
            hashes[name] = inputs_hash(step, {d: visit(d) for d in step.deps})
        return hashes[name]

    for s in steps:
        visit(s.name)
    return hashes


STEP_FILE = "step.json"  # a finished step: its inputs hash, wall time and result
INPUTS_FILE = ".inputs_hash"  # a started step: the inputs hash its files belong to
CHILD_MODULE = "mlip_exafs.study.child"  # the entry point of every step's child process
REPLACED_DIR = ".replaced"  # finished steps whose inputs changed wait here until their replacement finishes


def finished_record(folder: Path, digest: str) -> dict | None:
    """A step folder's ``step.json`` (inputs hash, wall time, result) if it finished with these inputs, else None."""
    marker = folder / STEP_FILE
    if marker.exists():
        record = read_json(marker)
        if record.get("inputs_hash") == digest:
            return record
    return None


def cached_result(root: Path, step: Step, digest: str) -> dict | None:
    record = finished_record(root / step.name, digest)
    return rebased(record["result"], root / step.name) if record else None


def rebased(result: dict, folder: Path) -> dict:
    """A finished step's result with its paths into its own folder re-rooted at ``folder``, where it is now.

    A result records paths as its run saw them, relative to where that study ran; a study folder moved, run
    again from another directory or finished on another machine would hand its next steps missing files.
    """
    def here(value):
        if isinstance(value, str):
            parts = Path(value).parts
            for i in range(len(parts) - 1):
                if parts[i:i + 2] == (folder.parent.name, folder.name):
                    return str(folder.joinpath(*parts[i + 2:]))
        return value

    return {key: here(value) for key, value in result.items()}


def run_step(root: Path, step: Step, digest: str, dep_results: dict[str, dict], environment: dict[str, str] | None = None) -> dict:
    """Run one step unless its result is cached; safe to call from a Dask worker.

    The action runs in a fresh child process: its numbers then cannot depend on
    what ran before in the same process (library state, loaded models), so a
    resumed, a local and a Dask study give identical results. ``environment``: variables
    the child gets on top of this process's (the study's threads and device, on a remote worker).
    """
    cached = cached_result(root, step, digest)
    if cached is not None:
        return cached
    folder = root / step.name
    aside = root / REPLACED_DIR / step.name
    if finished_record(aside, digest):  # a setting changed and changed back: the set-aside result is this step's again
        shutil.rmtree(folder, ignore_errors=True)
        aside.rename(folder)
        return cached_result(root, step, digest)
    stamp = folder / INPUTS_FILE
    if folder.exists() and (not stamp.exists() or stamp.read_text() != digest):
        _set_aside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(stamp, digest)
    earlier_s = _start_run(folder)
    started = time.perf_counter()
    result = _run_in_child(folder, step, dep_results, environment or {})
    wall_s = round(earlier_s + time.perf_counter() - started, 1)
    write_json(folder / STEP_FILE, {"step": step.name, "action": step.action, "params": step.params, "files": step.files, "inputs_hash": digest,
                                      "wall_s": wall_s, "result": result})
    shutil.rmtree(root / REPLACED_DIR / step.name, ignore_errors=True)
    return result


def _set_aside(folder: Path) -> None:
    """Make room for a step whose inputs changed without losing a finished result before its replacement exists.

    A finished step (it has ``step.json``) moves to ``ROOT/.replaced/NAME`` and is removed only when the new
    run finishes, so a run that fails or is killed (a setting that a stage rejects late, Ctrl-C) loses
    nothing; an unfinished one of other inputs cannot be resumed and is removed.
    """
    if (folder / STEP_FILE).exists():
        aside = folder.parent / REPLACED_DIR / folder.name
        shutil.rmtree(aside, ignore_errors=True)
        aside.parent.mkdir(exist_ok=True)
        folder.rename(aside)
    else:
        shutil.rmtree(folder)


RUN_FILE = ".run.json"
HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class RunRecord:
    """A step's runs so far (``RUN_FILE``): the current or last one's start and last heartbeat, and the earlier ones' time.

    A run is counted from its start to its last heartbeat (``alive_until``,
    rewritten every ``HEARTBEAT_S`` while the step's child works). The time is
    kept inside the file, not in file dates, because a study folder committed
    to git and checked out in a later session has every file dated by the checkout.
    """

    started: float
    alive_until: float
    earlier_s: float
    ended: bool = False  # its child exited (a step stopped by an error, Ctrl-C or SIGTERM is not "running" for 60 s more)

    def spent_s(self, now: float | None = None) -> float:
        """Every run's time up to the last heartbeat (up to ``now`` while alive)."""
        until = now if now is not None and self.alive_at(now) else self.alive_until
        return self.earlier_s + max(0.0, until - self.started)

    def alive_at(self, now: float) -> bool:
        """A heartbeat within two periods, and the child not known to have exited: some process still runs the step."""
        return not self.ended and now - self.alive_until < 2 * HEARTBEAT_S


def run_record(folder: Path) -> RunRecord | None:
    if not (folder / RUN_FILE).exists():
        return None
    record = read_json(folder / RUN_FILE)
    return RunRecord(record["started"], record.get("alive_until", record["started"]), record["earlier_s"], record.get("ended", False))


def _start_run(folder: Path) -> float:
    """Seconds spent by earlier, killed runs of this step, so ``wall_s`` of a resumed step counts them too."""
    earlier = run_record(folder)
    earlier_s = earlier.spent_s() if earlier else 0.0
    now = time.time()
    write_json(folder / RUN_FILE, {"started": now, "alive_until": now, "earlier_s": earlier_s})
    return earlier_s


def _heartbeat(folder: Path, ended: bool = False) -> None:
    record = read_json(folder / RUN_FILE)
    write_json(folder / RUN_FILE, {**record, "alive_until": time.time(), **({"ended": True} if ended else {})})


def result_of(deps: dict[str, dict], prefix: str) -> Any:
    """The result of the one dependency whose name starts with ``prefix``."""
    matches = [v for k, v in deps.items() if k.startswith(prefix)]
    if len(matches) != 1:
        raise KeyError(f"expected one dependency starting with {prefix!r}, got {len(matches)}")
    return matches[0]


CALL_FILE, RESULT_FILE, ERROR_FILE, LOG_FILE = ".step-call.json", ".step-result.json", ".step-error.json", "step.log"


def _wait_beating(proc: subprocess.Popen, folder: Path) -> None:
    """Wait for a step's child, with a heartbeat in its run record every ``HEARTBEAT_S``, and the record marked
    ended once the child has exited (a KeyboardInterrupt here leaves a running child, which the study stops itself)."""
    try:
        while True:
            try:
                proc.wait(timeout=HEARTBEAT_S)
                return
            except subprocess.TimeoutExpired:
                _heartbeat(folder)
    finally:
        if proc.poll() is not None:
            _heartbeat(folder, ended=True)


def _run_in_child(folder: Path, step: Step, dep_results: dict[str, dict], environment: dict[str, str]) -> dict:
    """``python -m CHILD_MODULE FOLDER``; dies with its parent (no orphan writes on after a kill)."""
    for name in (RESULT_FILE, ERROR_FILE):
        (folder / name).unlink(missing_ok=True)
    write_json(folder / CALL_FILE, {"action": step.action, "params": step.params, "deps": dep_results})
    with open(folder / LOG_FILE, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE, str(folder)], stdout=log, stderr=log, env={**step_environment(), **environment},
                                preexec_fn=dies_with_parent(signal.SIGKILL))
        _wait_beating(proc, folder)
    if (folder / ERROR_FILE).exists():
        raise UserError(f"step {step.name}: {in_terms(read_json(folder / ERROR_FILE)['message'], yaml_names(step.action))}")
    if proc.returncode < 0:  # killed by a signal: out of memory, kill -9
        raise UserError(f"step {step.name} stopped (killed by signal {-proc.returncode}, e.g. out of memory); see {folder / LOG_FILE}; "
                        "rerun the study to resume it")
    if proc.returncode != 0 or not (folder / RESULT_FILE).exists():
        raise RuntimeError(f"step {step.name} failed (exit {proc.returncode}); see {folder / LOG_FILE}")
    return read_json(folder / RESULT_FILE)


YAML_BLOCKS = {  # a step's action -> the blocks of the study config that hold its settings, its own first
    "md": ("md",), "analyze": ("md",), "exafs": ("exafs", "md"), "compare": ("experiment", "exafs"),
    "fit_experiment": ("experiment", "exafs"), "finetune": ("finetune",), "label": ("dataset.cp2k",),
}
YAML_TOP_LEVEL = ("structure", "absorber", "threads", "device")  # study config keys that a stage's setting of the same name comes from
YAML_RENAMED = {"finetune": {"potential": "finetune.base", "seed": "finetune.seeds"}}  # the fine-tune's settings under another key


def yaml_names(action: str) -> dict[str, str]:
    """Stage setting -> the study config's key for the settings of a step with ``action`` (``snapshot_every_fs`` ->
    ``md.snapshot_every_fs``), so a step's error names what the user can change in the YAML; see :func:`mlip_exafs.errors.setting`."""
    plans = {"md": MdPlan, "exafs": ExafsPlan, "experiment": ExperimentPlan, "finetune": FinetunePlan, "dataset.cp2k": Cp2kSettings}
    names = {key: key for key in YAML_TOP_LEVEL}
    for block in reversed(YAML_BLOCKS.get(action, ())):  # the step's own block last: its key wins
        names.update({key: f"{block}.{key}" for key in plans[block].model_fields})
    return {**names, **YAML_RENAMED.get(action, {})}


def step_environment() -> dict[str, str]:
    """This process's environment, less the malloc settings that a Dask nanny gives its worker.

    Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker (config
    ``distributed.nanny.pre-spawn-environ``) so that the worker returns freed memory
    at once. Inherited by a step's torch process it is ruinous: torch frees and
    reallocates tens of MB per call, and each time glibc hands it back to the kernel
    and faults it in again. A CHGNet fine-tune ran 1.9x slower for it on an idle core
    (sys time 2.0 -> 19.9 s, 20x the page faults; docs/md.md) and two of them
    side by side spent more time in the kernel than in torch. It would also switch off
    ``keep_freed_memory``, which leaves the user's own ``MALLOC_*`` settings alone.
    Only values equal to the nanny's config are dropped; everything else is kept.
    """
    env = dict(os.environ)
    try:
        import dask  # lazy: dask, seconds to import; only inside a Dask worker
        from distributed import get_worker  # lazy: dask, seconds to import; only inside a Dask worker

        get_worker()  # ValueError outside a Dask worker
    except (ImportError, ValueError):
        return env
    for name, value in (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).items():
        if name.startswith("MALLOC_") and value is not None and env.get(name) == str(value):
            del env[name]
    return env
