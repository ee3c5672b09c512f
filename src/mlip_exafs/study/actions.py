"""Step actions: thin adapters from a study step to each stage's function.

Every action is ``fn(folder, deps, **params) -> dict`` with a small JSON
result; large outputs stay as files in ``folder``.
"""

from __future__ import annotations

from pathlib import Path

import ase.io

from mlip_exafs.analysis import AnalysisSettings, analyze
from mlip_exafs.compare import CompareSettings, compare, fit_experiment
from mlip_exafs.cp2k import Cp2kSettings
from mlip_exafs.dataset import assert_disjoint, load_structures, merge_label_databases
from mlip_exafs.exafs import ExafsSettings, run_exafs
from mlip_exafs.files import atomic_path
from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune
from mlip_exafs.label import label_structures
from mlip_exafs.md import MdSettings, run_md
from mlip_exafs.potentials import set_torch_threads
from mlip_exafs.sample import SampleSpec, sample
from mlip_exafs.study.pipeline import GENERATED
from mlip_exafs.study.steps import action, result_of
from mlip_exafs.validate import validate


def _threads() -> int:
    return set_torch_threads(None)


def _potential(deps: dict, potential: str | None) -> str:
    """A pretrained name, or the checkpoint of the fine-tune step this step depends on."""
    return potential if potential is not None else result_of(deps, "finetune-")["model"]


def _dataset(deps: dict, dataset: str) -> str:
    """A shipped name or folder, or the folder made by this study's ``dataset`` step."""
    return result_of(deps, "dataset")["folder"] if dataset == GENERATED else dataset


@action("sample")
def sample_action(folder: Path, deps: dict, *, spec: dict) -> dict:
    out = folder / "structures.extxyz"
    frames = sample(SampleSpec(**{**spec, "threads": spec.get("threads") or _threads()}), out)
    return {"structures": str(out), "count": len(frames)}


@action("label")
def label_action(folder: Path, deps: dict, *, split: str, first: int, count: int, cp2k: dict) -> dict:
    """CP2K on one chunk of a split; resumes inside the chunk's database after a kill."""
    chunk = folder / "structures.extxyz"
    if not chunk.exists():
        frames = ase.io.read(result_of(deps, "sample-")["structures"], index=f"{first}:{first + count}")
        with atomic_path(chunk) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
    db = folder / f"{split}.db"
    result = label_structures(chunk, db, Cp2kSettings(**cp2k), mpi_ranks=1)
    return {"split": split, "db": str(db), "count": result["total"]}


@action("dataset")
def dataset_action(folder: Path, deps: dict) -> dict:
    parts = {split: [Path(r["db"]) for r in deps.values() if r["split"] == split] for split in ("train", "test")}
    for split, dbs in parts.items():
        merge_label_databases(sorted(dbs), folder / f"{split}.db")
    assert_disjoint(load_structures(folder, "train"), load_structures(folder, "test"))
    return {"folder": str(folder)}


@action("finetune")
def finetune_action(folder: Path, deps: dict, *, base: str, dataset: str, n: int, seed: int, freeze: str, epochs: int | None) -> dict:
    recipe = FinetuneRecipe(freeze=freeze, epochs=epochs)
    settings = FinetuneSettings(potential=base, train=_dataset(deps, dataset), n=n, seed=seed, recipe=recipe, threads=_threads())
    return {"model": str(finetune(settings, folder)), "n": n, "seed": seed}


@action("validate")
def validate_action(folder: Path, deps: dict, *, dataset: str, potential: str | None = None) -> dict:
    return validate(_potential(deps, potential), _dataset(deps, dataset), folder, threads=_threads())


@action("md")
def md_action(folder: Path, deps: dict, *, structure: str, settings: dict, potential: str | None = None) -> dict:
    md_settings = MdSettings(structure=structure, potential=_potential(deps, potential), threads=_threads(), **settings)
    snapshots = run_md(md_settings, folder)  # progress lines (every 30 s) go to the step's log: how far a long MD is
    return {"snapshots": str(snapshots)}


@action("analyze")
def analyze_action(folder: Path, deps: dict, *, absorber: str, reference: str | None = None, reference_supercell: str | None = None) -> dict:
    trajectory = result_of(deps, "md")["snapshots"]  # "md-NAME", or "md@TK-NAME" in a temperature series
    settings = AnalysisSettings(absorber=absorber, reference=reference, reference_supercell=reference_supercell)  # pipeline.series_reference
    result = analyze([trajectory], settings, folder)
    shells = result["trajectories"][0]["shells"]
    return {"msrd": {s["label"]: {"r_mean": s["r_mean"], "sigma2": s["sigma2"], "sigma2_classical": s.get("sigma2_classical")} for s in shells}}


@action("exafs")
def exafs_action(folder: Path, deps: dict, *, absorber: str, edge: str, rmax_a: float, engine: str) -> dict:
    settings = ExafsSettings(absorber=absorber, edge=edge, rmax_a=rmax_a, engine=engine)
    chi = run_exafs(settings, result_of(deps, "md")["snapshots"], folder)
    return {"chi": str(chi)}


@action("compare")
def compare_action(folder: Path, deps: dict, *, experiment: str, absorber: str, edge: str, window: dict) -> dict:
    settings = CompareSettings(absorber=absorber, edge=edge, **window)
    return compare(result_of(deps, "exafs")["chi"], experiment, settings, folder)  # "exafs-NAME", or "exafs@TK-NAME" at another temperature


@action("fit_experiment")
def fit_experiment_action(folder: Path, deps: dict, *, experiment: str, absorber: str, edge: str, structure: str, window: dict, fit_shells: int) -> dict:
    settings = CompareSettings(absorber=absorber, edge=edge, fit_shells=fit_shells, structure=structure, **window)
    return fit_experiment(experiment, structure, settings, folder)
