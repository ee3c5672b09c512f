"""CLI verbs ``study``, ``report`` and ``progress``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlip_exafs.cli import app, console, given
from mlip_exafs.errors import UserError


STUDY_EXECUTOR = "local"  # study.run_study(executor=)'s default, for --help only (tests/test_cli.py checks that the two agree)


@app.command("study")
def study_cmd(
    config: Path = typer.Argument(..., help="Study YAML (e.g. examples/ws2.yaml)."),
    out: Path = typer.Option(..., "--out", help="Study folder (cache, results, report)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="A profile of the config's 'profiles' (the examples have quick and paper; "
                                          "ws2.yaml also quantum); default: the config as written."),
    executor: Optional[str] = typer.Option(None, "--executor", help=f"local, or dask (a LocalCluster unless --scheduler is given); default {STUDY_EXECUTOR}."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask)."),
    only: Optional[str] = typer.Option(None, "--only", help="pristine: only the pretrained potentials' steps (they need no training labels); "
                                       "finetuned: only the fine-tunes and the fine-tuned potentials' steps; "
                                       "learning-curve: only the fine-tunes and validations (no MD); "
                                       "md: only the MD steps and the fine-tunes they need (the part a GPU speeds up). "
                                       "Join with commas for steps in all, e.g. pristine,md. A later full run reuses them."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda for every model step (overrides the config's device)."),
) -> None:
    """Run a whole study from one YAML; cached and resumable."""
    from mlip_exafs.study import only_selections, run_study  # lazy: only when this verb runs (--help: 1.3 s, not 5)
    from mlip_exafs.study.pipeline import REPORT_FILE, SUMMARY_FILE  # lazy: only when this verb runs, as above

    if executor not in (None, "local", "dask"):
        raise UserError(f"unknown --executor '{executor}'; use local or dask")
    if scheduler is not None and executor == "local":
        raise UserError(f"--scheduler {scheduler} is a Dask scheduler, but --executor is local; use --executor dask or leave --executor out")
    if scheduler is not None:
        executor = "dask"  # a scheduler address was silently ignored by the default local executor

    def on_step(name: str, cached: bool) -> None:
        console.print(f"  {'cached' if cached else 'done  '} {name}")

    summary = run_study(config, out, profile, scheduler=scheduler, on_step=on_step, only=only, device=device, **given(executor=executor))
    if only_selections(only) == ["learning-curve"]:  # the one selection that returns a result: the DFT half's curve
        _print_learning_curve(summary)
        console.print(f"DFT criteria recommend N = {summary['recommended_n']}; run without --only for the MD, EXAFS, {out / SUMMARY_FILE} and the report")
        return
    if only:
        console.print(f"the steps of --only {only} are done; run without --only for the rest, {out / SUMMARY_FILE} and the report")
        return
    console.print(f"recommended N = {summary['recommended_n']}; report: {out / REPORT_FILE}")


@app.command("report")
def report_cmd(study_dir: Path = typer.Argument(..., help="A study folder written by 'mlip-exafs study'.")) -> None:
    """Rebuild the HTML report of a study (of its finished steps while it still runs, once its learning curve is done)."""
    from mlip_exafs.report import write_report  # lazy: only when this verb runs (--help: 1.3 s, not 5)
    from mlip_exafs.study.pipeline import require_study_folder  # lazy: as above

    require_study_folder(study_dir)
    console.print(f"wrote {write_report(study_dir)}")


@app.command("progress")
def progress_cmd(
    study_dir: Path = typer.Argument(..., help="A study folder written by 'mlip-exafs study', running or stopped."),
    as_json: bool = typer.Option(False, "--json", help="Every step's state, time and last log line as JSON."),
) -> None:
    """Where a study stands: steps finished, running, interrupted (rerun the study to resume them) and waiting."""
    from mlip_exafs.study.progress import study_progress  # lazy: only when this verb runs (the study package loads the stages' configs)

    steps = study_progress(study_dir)
    if as_json:
        print(json.dumps([dataclasses.asdict(s) for s in steps], indent=2))
        return
    by_state = {state: [s for s in steps if s.state == state] for state in ("finished", "running", "failed", "interrupted", "waiting")}
    finished_h = sum(s.spent_s for s in by_state["finished"]) / 3600
    console.print(f"{study_dir}: {len(steps)} steps; {len(by_state['finished'])} finished ({finished_h:.1f} step-hours), "
                  f"{len(by_state['running'])} running, {len(by_state['failed'])} failed, {len(by_state['interrupted'])} interrupted, "
                  f"{len(by_state['waiting'])} waiting")
    started = by_state["running"] + by_state["failed"] + by_state["interrupted"]
    if started:
        table = Table("step", "state", "time so far", "last log line")
        for s in started:
            table.add_row(s.name, s.state, f"{s.spent_s / 3600:.2f} h", s.last_line or "")
        console.print(table)
    if by_state["failed"]:
        console.print("failed steps stop again when rerun: fix what their error says, then rerun the study")
    if (by_state["interrupted"] or by_state["waiting"]) and not by_state["running"]:
        console.print("nothing runs: rerun the same 'mlip-exafs study' command to resume")
    if by_state["waiting"]:
        console.print("waiting: " + ", ".join(s.name for s in by_state["waiting"]))


def _print_learning_curve(part: dict) -> None:
    table = Table("model", "N", "seeds", "force MAE (eV/Å)", "softening slope", "energy MAE (meV/atom)")
    for name, v in part["pristine"].items():
        table.add_row(name, "0", "-", f"{v['force_mae_ev_a']:.4f}", f"{v['softening_slope']:.3f}", _one_decimal(v["energy_mae_mev_atom"]))
    for s in part["by_n"]:
        table.add_row("fine-tuned", str(s["n"]), str(s["n_seeds"]), f"{s['force_mae_ev_a_mean']:.4f} ± {s['force_mae_ev_a_std']:.4f}",
                      f"{s['softening_slope_mean']:.3f} ± {s['softening_slope_std']:.3f}", _one_decimal(s["energy_mae_mev_atom_mean"]))
    console.print(table)


def _one_decimal(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
