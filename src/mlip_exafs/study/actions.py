"""Step actions: thin adapters from a study step to each stage's function.

Every action is ``fn(folder, deps, **params) -> dict`` with a small JSON
result; large outputs stay as files in ``folder``.
"""

from __future__ import annotations

from pathlib import Path

from mlip_exafs.potentials import set_torch_threads
from mlip_exafs.study.steps import action, result_of


def _threads() -> int:
    return set_torch_threads(None)


def _potential(deps: dict, potential: str | None) -> str:
    """A pretrained name, or the checkpoint of the fine-tune step this step depends on."""
    return potential if potential is not None else result_of(deps, "finetune-")["model"]


@action("finetune")
def finetune_action(folder: Path, deps: dict, *, base: str, dataset: str, n: int, seed: int, freeze: str, epochs: int | None) -> dict:
    from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune

    recipe = FinetuneRecipe(freeze=freeze, epochs=epochs)
    settings = FinetuneSettings(potential=base, train=dataset, n=n, seed=seed, recipe=recipe, threads=_threads())
    return {"model": str(finetune(settings, folder)), "n": n, "seed": seed}


@action("validate")
def validate_action(folder: Path, deps: dict, *, dataset: str, potential: str | None = None) -> dict:
    from mlip_exafs.validate import validate

    return validate(_potential(deps, potential), dataset, folder, threads=_threads())


@action("md")
def md_action(folder: Path, deps: dict, *, structure: str, settings: dict, potential: str | None = None) -> dict:
    from mlip_exafs.md import MdSettings, run_md

    md_settings = MdSettings(structure=structure, potential=_potential(deps, potential), threads=_threads(), **settings)
    snapshots = run_md(md_settings, folder, show_progress=False)
    return {"snapshots": str(snapshots)}


@action("analyze")
def analyze_action(folder: Path, deps: dict, *, absorber: str) -> dict:
    from mlip_exafs.analysis import AnalysisSettings, analyze

    trajectory = result_of(deps, "md-")["snapshots"]
    result = analyze([trajectory], AnalysisSettings(absorber=absorber), folder)
    shells = result["trajectories"][0]["shells"]
    return {"msrd": {s["label"]: {"r_mean": s["r_mean"], "sigma2": s["sigma2"]} for s in shells}}


@action("exafs")
def exafs_action(folder: Path, deps: dict, *, absorber: str, edge: str, rmax_a: float, engine: str) -> dict:
    from mlip_exafs.exafs import ExafsSettings, run_exafs

    settings = ExafsSettings(absorber=absorber, edge=edge, rmax_a=rmax_a, engine=engine)
    chi = run_exafs(settings, result_of(deps, "md-")["snapshots"], folder)
    return {"chi": str(chi)}


@action("compare")
def compare_action(folder: Path, deps: dict, *, experiment: str, absorber: str, edge: str, window: dict) -> dict:
    from mlip_exafs.compare import CompareSettings, compare

    settings = CompareSettings(absorber=absorber, edge=edge, **window)
    return compare(result_of(deps, "exafs-")["chi"], experiment, settings, folder)
