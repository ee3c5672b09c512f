"""CLI verbs for fine-tuning: ``finetune`` and ``learning-curve``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import DEVICE_HELP, app, console, default_text, given
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError
from mlip_exafs.progress import progress_bar
from mlip_exafs.settings import DEFAULT_LR, EPOCHS_MAX, EPOCHS_MIN, STRUCTURE_PASSES, FinetuneRecipe, FinetuneSettings, LearningCurveSettings


def parse_int_list(text: str, option: str) -> list[int]:
    """'1,2,5' -> [1, 2, 5]; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise UserError(f"{option} '{text}' is not a comma-separated list of non-negative integers; use e.g. 1,2,5")
    return values


def recipe_from_options(**options) -> FinetuneRecipe:
    """The recipe from CLI options; options left out keep FinetuneRecipe's defaults."""
    return validate_model(FinetuneRecipe, given(**options), "options")


def _recipe(field: str) -> str:
    return default_text(FinetuneRecipe, field)


EPOCHS_HELP = f"Epochs (default: {EPOCHS_MAX} up to N = {STRUCTURE_PASSES // EPOCHS_MAX}, about {STRUCTURE_PASSES}/N above, at least {EPOCHS_MIN})."
LR_HELP = (f"Initial learning rate (default: {', '.join(f'{lr:g} {mode}' for mode, lr in DEFAULT_LR.items())}); "
           f"cosine-decayed to {FinetuneRecipe.model_fields['final_lr_fraction'].default:.0%}.")
STRESS_HELP = (f"Loss weight of stress (GPa; {_recipe('stress_weight')}) against {FinetuneRecipe.model_fields['force_weight'].default:g} for forces (eV/Å) "
               f"and {FinetuneRecipe.model_fields['energy_weight'].default:g} for energy (eV/atom).")
FINETUNE_POTENTIAL_HELP = "A registered CHGNet or SevenNet name (see 'mlip-exafs potentials'), or a checkpoint .pt written by finetune."
FREEZE_HELP = f"none: train all; readout: last conv layer + readout; energy-scale: one trainable scalar; {_recipe('freeze')}."
BATCH_HELP = f"Structures per optimizer step; {_recipe('batch_size')}."


@app.command("finetune")
def finetune_cmd(
    train: str = typer.Option(..., "--train", help="Dataset (shipped name, folder or .db); its train split is the pool."),
    n: int = typer.Option(..., "--n", min=1, help="Number of structures to train on."),
    out: Path = typer.Option(..., "--out", help="Output folder (model.pt, finetune.json, training curve)."),
    potential: Optional[str] = typer.Option(None, "--potential", "-p", help=f"{FINETUNE_POTENTIAL_HELP} {default_text(FinetuneSettings, 'potential').capitalize()}."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help=f"Seed that draws the N structures and the split; {default_text(FinetuneSettings, 'seed')}."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=EPOCHS_HELP),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help=LR_HELP),
    freeze: Optional[str] = typer.Option(None, "--freeze", help=FREEZE_HELP),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=BATCH_HELP),
    stress_weight: Optional[float] = typer.Option(None, "--stress-weight", help=STRESS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=f"Torch threads; {default_text(FinetuneSettings, 'threads')}."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
) -> None:
    """Fine-tune a CHGNet or SevenNet model on N DFT structures (recipe after Deng et al. 2025, docs/finetune.md); a finished run is not redone."""
    from mlip_exafs.finetune import finetune, read_result  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    recipe = recipe_from_options(epochs=epochs, learning_rate=learning_rate, freeze=freeze, batch_size=batch_size, stress_weight=stress_weight)
    data = dict(train=train, n=n, recipe=recipe, **given(potential=potential, seed=seed, threads=threads, device=device))
    settings = validate_model(FinetuneSettings, data, "options")
    with console.status(f"fine-tuning {settings.potential} on {n} structures"):
        model = finetune(settings, out)
    record = read_result(out)
    console.print(
        f"wrote {model}: {record['epochs']} epochs ({record['kept_by']}, epoch {record['kept_epoch']}), "
        f"train force MAE {record['train_force_mae_before_ev_a']:.4f} -> {record['train_force_mae_after_ev_a']:.4f} eV/Å, "
        f"{record['seconds_per_structure_epoch']:.3f} s per structure per epoch"
    )


@app.command("learning-curve")
def learning_curve_cmd(
    train: str = typer.Option(..., "--train", help="Dataset (shipped name, folder or .db): its train split is the pool, its test split validates every run."),
    out: Path = typer.Option(..., "--out", help="Output folder; finished runs in it are reused."),
    test: Optional[str] = typer.Option(None, "--test", help="The same dataset as --train (the learning curve runs a study's steps, which "
                                       "validate on the test split of the dataset they train on); default: --train."),
    ns: Optional[str] = typer.Option(None, "--n", help=f"Comma-separated N values, each once; {default_text(LearningCurveSettings, 'ns')}."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help=f"Comma-separated seeds, each once; {default_text(LearningCurveSettings, 'seeds')}."),
    potential: Optional[str] = typer.Option(None, "--potential", "-p", help="A registered CHGNet or SevenNet name (see 'mlip-exafs potentials'; "
                                            "to continue from a checkpoint, run 'mlip-exafs finetune' per N). "
                                            f"{default_text(LearningCurveSettings, 'potential').capitalize()}."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=EPOCHS_HELP + " Same for every N if given."),
    freeze: Optional[str] = typer.Option(None, "--freeze", help=FREEZE_HELP + " (The learning curve runs a study's fine-tune steps: "
                                         "other recipe settings are the recipe's defaults; 'mlip-exafs finetune' per N takes them all.)"),
    forgetting_test: Optional[str] = typer.Option(None, "--forgetting-test", help="DFT dataset outside the training chemistry (e.g. datasets/w-bcc) to validate every model on."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=f"Torch threads; {default_text(LearningCurveSettings, 'threads')}."),
) -> None:
    """Fine-tune N x seeds models, validate each, plot error and softening vs N."""
    from mlip_exafs.learning_curve import learning_curve  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    recipe = recipe_from_options(epochs=epochs, freeze=freeze)
    options = given(potential=potential, ns=parse_int_list(ns, "--n") if ns is not None else None,
                    seeds=parse_int_list(seeds, "--seeds") if seeds is not None else None, forgetting_test=forgetting_test, threads=threads)
    settings = validate_model(LearningCurveSettings, dict(train=train, test=test if test is not None else train, recipe=recipe, **options), "options")
    with progress_bar("learning curve (fine-tune + validate)", len(settings.ns) * len(settings.seeds)) as advance:
        result = learning_curve(settings, out, advance)
    for row in result["summary"]:
        console.print(
            f"N={row['n']:4d}  force MAE {row['force_mae_ev_a_mean']:.4f} ± {row['force_mae_ev_a_std']:.4f} eV/Å  "
            f"slope {row['softening_slope_mean']:.3f} ± {row['softening_slope_std']:.3f}"
        )
    console.print(f"recommended N: {result['recommended_n']} ({result['recommended_n_rule']})")
