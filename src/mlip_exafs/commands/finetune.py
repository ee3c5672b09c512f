"""CLI verbs for fine-tuning: ``finetune`` and ``learning-curve``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import DEVICE_HELP, app, console
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError
from mlip_exafs.progress import progress_bar


def parse_int_list(text: str, option: str) -> list[int]:
    """'1,2,5' -> [1, 2, 5]; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise UserError(f"{option} '{text}' is not a comma-separated list of non-negative integers; use e.g. 1,2,5")
    return values


def recipe_from_options(epochs: Optional[int], lr: Optional[float], freeze: str, batch_size: Optional[int], stress_weight: Optional[float]):
    """The recipe from CLI options; options left out keep FinetuneRecipe's defaults."""
    from mlip_exafs.finetune import FinetuneRecipe  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    data = {"epochs": epochs, "learning_rate": lr, "freeze": freeze, "batch_size": batch_size, "stress_weight": stress_weight}
    return validate_model(FinetuneRecipe, {key: value for key, value in data.items() if value is not None}, "options")


EPOCHS_HELP = "Epochs (default: 100 up to N = 25, about 2500/N above, at least 40)."
LR_HELP = "Initial learning rate (default: 3e-3 none and readout, 1e-2 energy-scale); cosine-decayed to 1 %."
STRESS_HELP = "Loss weight of stress (GPa; default 1) against 100 for forces (eV/Å) and 0.1 for energy (eV/atom)."
FINETUNE_POTENTIAL_HELP = "A registered CHGNet or SevenNet name (see 'mlip-exafs potentials'), or a checkpoint .pt written by finetune."
FREEZE_HELP = "none: train all; readout: last conv layer + readout; energy-scale: one trainable scalar."


@app.command("finetune")
def finetune_cmd(
    train: str = typer.Option(..., "--train", help="Dataset (shipped name, folder or .db); its train split is the pool."),
    n: int = typer.Option(..., "--n", min=1, help="Number of structures to train on."),
    out: Path = typer.Option(..., "--out", help="Output folder (model.pt, finetune.json, training curve)."),
    potential: str = typer.Option("chgnet", "--potential", "-p", help=FINETUNE_POTENTIAL_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed that draws the N structures and the split."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=EPOCHS_HELP),
    lr: Optional[float] = typer.Option(None, "--lr", help=LR_HELP),
    freeze: str = typer.Option("none", "--freeze", help=FREEZE_HELP),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Structures per optimizer step (default: 4)."),
    stress_weight: Optional[float] = typer.Option(None, "--stress-weight", help=STRESS_HELP),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
) -> None:
    """Fine-tune a CHGNet or SevenNet model on N DFT structures (recipe after Deng et al. 2025, docs/finetune.md); a finished run is not redone."""
    from mlip_exafs.finetune import FinetuneSettings, finetune, read_result  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    recipe = recipe_from_options(epochs, lr, freeze, batch_size, stress_weight)
    settings = validate_model(FinetuneSettings, dict(potential=potential, train=train, n=n, seed=seed, recipe=recipe, threads=threads, device=device), "options")
    with console.status(f"fine-tuning {potential} on {n} structures"):
        model = finetune(settings, out)
    record = read_result(out)
    console.print(
        f"wrote {model}: {record['epochs']} epochs ({record['kept_by']}, epoch {record['kept_epoch']}), "
        f"train force MAE {record['train_force_mae_before_ev_a']:.4f} -> {record['train_force_mae_after_ev_a']:.4f} eV/Å, "
        f"{record['seconds_per_structure_epoch']:.3f} s per structure per epoch"
    )


@app.command("learning-curve")
def learning_curve_cmd(
    train: str = typer.Option(..., "--train", help="Dataset whose train split is the pool."),
    test: str = typer.Option(..., "--test", help="Dataset whose test split validates every run."),
    out: Path = typer.Option(..., "--out", help="Output folder; finished runs in it are reused."),
    ns: str = typer.Option("1,2,5,10,20,50,100", "--n", help="Comma-separated N values."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    potential: str = typer.Option("chgnet", "--potential", "-p", help=FINETUNE_POTENTIAL_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=EPOCHS_HELP + " Same for every N if given."),
    lr: Optional[float] = typer.Option(None, "--lr", help=LR_HELP),
    freeze: str = typer.Option("none", "--freeze", help=FREEZE_HELP),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Structures per optimizer step (default: 4)."),
    stress_weight: Optional[float] = typer.Option(None, "--stress-weight", help=STRESS_HELP),
    forgetting_test: Optional[str] = typer.Option(None, "--forgetting-test", help="DFT dataset outside the training chemistry (e.g. datasets/w-bcc) to validate every model on."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads."),
) -> None:
    """Fine-tune N x seeds models, validate each, plot error and softening vs N."""
    from mlip_exafs.learning_curve import LearningCurveSettings, learning_curve  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    n_values = parse_int_list(ns, "--n")
    seed_values = parse_int_list(seeds, "--seeds")
    if min(n_values) < 1:
        raise UserError(f"--n '{ns}' contains 0; every N must be at least 1")
    recipe = recipe_from_options(epochs, lr, freeze, batch_size, stress_weight)
    data = dict(potential=potential, train=train, test=test, ns=n_values, seeds=seed_values, recipe=recipe, forgetting_test=forgetting_test, threads=threads)
    settings = validate_model(LearningCurveSettings, data, "options")
    with progress_bar("learning curve (fine-tune + validate)", len(n_values) * len(seed_values)) as advance:
        result = learning_curve(settings, out, advance)
    for row in result["summary"]:
        console.print(
            f"N={row['n']:4d}  force MAE {row['force_mae_ev_a_mean']:.4f} ± {row['force_mae_ev_a_std']:.4f} eV/Å  "
            f"slope {row['softening_slope_mean']:.3f} ± {row['softening_slope_std']:.3f}"
        )
    console.print(f"recommended N: {result['recommended_n']} ({result['recommended_n_rule']})")
