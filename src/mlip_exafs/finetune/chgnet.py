"""Fine-tuning adapter of the CHGNet family: CHGNet's own Trainer, resumable (``finetune/resume.py``).

Supports every ``freeze`` mode: ``none``, ``readout`` (the last atom-convolution
layer and the readout train) and ``energy-scale`` (one scalar on the readout).
CHGNet's Trainer takes energies in eV/atom, forces in eV/Å and stresses as if
they were VASP's kbar (it applies ×(−0.1)), so the GPa targets are converted once here.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch.nn.utils import parametrize
from torch.optim.lr_scheduler import CosineAnnealingLR

from mlip_exafs.finetune import LOG_FILE, FinetuneRecipe, FreezeMode, diverged, epochs_progress, learning_rate_of, training_targets
from mlip_exafs.potentials import Potential
from mlip_exafs.potentials.chgnet import to_structures
from mlip_exafs.units import gpa_to_vasp_kbar


def check_recipe(potential: Potential, recipe: FinetuneRecipe) -> None:
    """Every freeze mode works for CHGNet."""


def structure_data(frames: list[Atoms], offsets_ev: dict[str, float]):
    """CHGNet's StructureData; stresses go in as 'VASP kbar' because it applies x(-0.1)."""
    from chgnet.data.dataset import StructureData  # lazy: chgnet, seconds to import

    targets = training_targets(frames, offsets_ev)
    with contextlib.redirect_stdout(None):
        return StructureData(
            structures=to_structures(frames),
            energies=targets["e"],
            forces=targets["f"],
            stresses=[gpa_to_vasp_kbar(s) for s in targets["s"]] if "s" in targets else None,
            structure_ids=[str(a.info.get("uid")) for a in frames],
        )


class SharedScale(torch.nn.Module):
    """Parametrization x -> scale * x; one scalar shared by the weight and the bias."""

    def __init__(self, scale: torch.nn.Parameter):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def apply_freeze(model, mode: FreezeMode):
    """Set which parameters train; returns the energy-scale parameter (or None).

    ``readout``: the last atom-convolution layer, the readout norm and the
    readout MLP train (the scout test in NOTES: ~50k of 412k parameters).
    ``energy-scale``: one scalar multiplies the readout's output (weight and
    bias of its last layer), i.e. the learned energy, forces and stress; the
    AtomRef constant is not scaled.
    """
    if mode == "none":
        return None
    for param in model.parameters():
        param.requires_grad = False
    if mode == "readout":
        for module in (model.atom_conv_layers[-1], model.readout_norm, model.mlp):
            for param in module.parameters():
                param.requires_grad = True
        return None
    last = model.mlp.layers[-1]
    scale = torch.nn.Parameter(torch.ones(()))
    for name in ("weight", "bias"):
        parametrize.register_parametrization(last, name, SharedScale(scale))
        getattr(last.parametrizations, name).original.requires_grad = False
    return scale


def fold_energy_scale(model) -> None:
    """Bake the trained scalar into the readout so the model is a plain CHGNet again."""
    last = model.mlp.layers[-1]
    for name in ("weight", "bias"):
        parametrize.remove_parametrizations(last, name, leave_parametrized=True)


def scheduler_steps_per_epoch(n_batches: int) -> int:
    """How often CHGNet's Trainer steps the scheduler per epoch (at each tenth of it)."""
    return len({int(k) for k in np.arange(1, 11) * n_batches // 10 if k >= 1})


def make_trainer(model, recipe: FinetuneRecipe, targets: str, epochs: int, seed: int, n_batches: int, device: str = "cpu"):
    """CHGNet's Trainer, with a cosine schedule that really ends at final_lr_fraction.

    CHGNet's own CosLR assumes >= 10 batches per epoch (T_max = 10 x epochs);
    with a few structures it would barely decay, so the schedule is rebuilt.
    """
    from mlip_exafs.finetune.resume import ResumableTrainer  # lazy: resume imports chgnet at its top

    lr = learning_rate_of(recipe)
    trainer = ResumableTrainer(
        model=model,
        targets=targets,
        energy_loss_ratio=recipe.energy_weight,
        force_loss_ratio=recipe.force_weight,
        stress_loss_ratio=recipe.stress_weight,
        optimizer="Adam",
        scheduler="CosLR",
        criterion="MSE",
        epochs=epochs,
        learning_rate=lr,
        print_freq=10_000,
        torch_seed=seed,
        use_device=device,
    )
    total_steps = max(1, epochs * scheduler_steps_per_epoch(n_batches))
    trainer.scheduler = CosineAnnealingLR(trainer.optimizer, T_max=total_steps, eta_min=recipe.final_lr_fraction * lr)
    return trainer


def best_force_checkpoint(save_dir: Path) -> tuple[dict, int]:
    """State dict and epoch of the Trainer's best-validation-force checkpoint."""
    files = sorted(save_dir.glob("bestF_epoch*.pth.tar"))
    if not files:  # CHGNet's Trainer writes one at every finite best validation error: none, the loss went NaN
        raise diverged(save_dir.parent, "the Trainer stopped with a NaN loss before any finite validation error")
    state = torch.load(files[-1], map_location="cpu", weights_only=True)
    epoch = int(files[-1].name.split("_")[1].removeprefix("epoch"))
    return state["model"]["state_dict"], epoch


def training_curve_rows(history: dict) -> list[dict]:
    """Per-epoch MAEs from the Trainer's history, with explicit units."""
    units = {"e": "e_mae_ev_atom", "f": "f_mae_ev_a", "s": "s_mae_gpa"}
    n_epochs = len(history["e"]["train"])
    rows = []
    for epoch in range(n_epochs):
        row = {"epoch": epoch + 1}
        for key, name in units.items():
            if key in history:
                row[f"train_{name}"] = history[key]["train"][epoch]
                row[f"val_{name}"] = history[key]["val"][epoch]
        rows.append(row)
    return rows


def train_model(potential: Potential, train: list[Atoms], val: list[Atoms], offsets_ev: dict, settings, epochs: int, work: Path) -> dict:
    """Run CHGNet's Trainer (resuming a killed run from ``work``); leaves the chosen weights in the model; returns what happened."""
    from chgnet.data.dataset import get_loader  # lazy: chgnet, seconds to import

    from mlip_exafs.finetune.resume import train_resumably  # lazy: resume imports chgnet at its top

    model, recipe = potential.model, settings.recipe
    random.seed(settings.seed)
    train_data = structure_data(train, offsets_ev)
    val_data = structure_data(val, offsets_ev) if val else train_data
    targets = "efs" if all("stress" in a.calc.results for a in train + val) and recipe.stress_weight > 0 else "ef"
    batch = min(recipe.batch_size, len(train))
    train_loader = get_loader(train_data, batch_size=batch, pin_memory=False)
    val_loader = get_loader(val_data, batch_size=batch, pin_memory=False)
    scale = apply_freeze(model, recipe.freeze)
    trainer = make_trainer(model, recipe, targets, epochs, settings.seed, len(train_loader), potential.device)
    with open(work / LOG_FILE, "a") as log, contextlib.redirect_stdout(log):
        resumed_at = train_resumably(trainer, train_loader, val_loader, work / "trainer", epochs_progress(len(train)))
    seconds = trainer.training_seconds()
    kept_epoch = epochs
    if val:
        state, kept_epoch = best_force_checkpoint(work / "trainer")
        model.load_state_dict(state)
        kept_epoch += 1
    scale_value = float(scale.detach()) if scale is not None else None
    if scale is not None:
        fold_energy_scale(model)
    return {
        "targets": targets,
        "epochs": epochs,
        "kept_epoch": kept_epoch,
        "kept_by": "best validation force MAE" if val else "last epoch (no validation split)",
        "resumed_after_epoch": resumed_at,
        "energy_scale": scale_value,
        "trainable_parameters": int(sum(p.numel() for p in trainer.optimizer.param_groups[0]["params"] if p.requires_grad)),
        "training_seconds": round(seconds, 2),
        "seconds_per_structure_epoch": round(seconds / (len(train) * epochs), 4),
        "history": training_curve_rows(trainer.training_history),
    }
