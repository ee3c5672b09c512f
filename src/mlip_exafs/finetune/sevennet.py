"""Fine-tuning adapter of the SevenNet family: sevenn's own Trainer, on the same recipe as CHGNet.

The recipe's weights are per (eV/atom)², (eV/Å)² and GPa²; sevenn's stress loss
is in kbar, so its weight is the recipe's divided by 100. The learning rate
decays by cosine once per epoch (sevenn's ``run_one_epoch`` has no per-batch
hook). Only the freeze mode ``none`` is supported; a killed run starts again.
A multi-fidelity model (SevenNet-MF-0) trains its fidelity head: every
training graph carries that modality.

A model handed to sevenn's Trainer stays in batch mode; it is switched off
before single-structure predictions (the family's calculator does that).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch.optim.lr_scheduler import CosineAnnealingLR

from mlip_exafs.errors import UserError, setting
from mlip_exafs.finetune import LOG_FILE, diverged, epochs_progress, learning_rate_of, shifted_energies_ev, training_targets
from mlip_exafs.potentials import Potential
from mlip_exafs.progress import progress_bar

GPA2_TO_KBAR2 = 1 / 100  # weight per kbar² = weight per GPa² x this (1 kbar = 0.1 GPa)


def check_recipe(potential: Potential, recipe) -> None:
    if recipe.freeze != "none":
        raise UserError(f"SevenNet fine-tuning supports {setting('freeze')} none only, not '{recipe.freeze}'")


def graphs(frames: list[Atoms], shifted_energies_ev: np.ndarray, cutoff: float, modal: str | None = None) -> list:
    """sevenn graphs with labels: energy on the model's scale (eV), forces (eV/Å), ASE stress (eV/Å³); the fidelity head if any."""
    import sevenn._keys as KEY  # lazy: sevenn, seconds to import
    from sevenn.atom_graph_data import AtomGraphData  # lazy: sevenn, seconds to import
    from sevenn.train.dataload import atoms_to_graph  # lazy: sevenn, seconds to import

    out = []
    for atoms, energy in zip(frames, shifted_energies_ev):
        labelled = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        results = {"energy": float(energy), "forces": np.asarray(atoms.calc.results["forces"])}
        if "stress" in atoms.calc.results:
            results["stress"] = np.asarray(atoms.calc.results["stress"])
        labelled.calc = SinglePointCalculator(labelled, **results)
        graph = AtomGraphData.from_numpy_dict(atoms_to_graph(labelled, cutoff, transfer_info=False, y_from_calc=True))
        if modal:
            graph[KEY.DATA_MODALITY] = modal
        out.append(graph)
    return out


def loss_functions(recipe, with_stress: bool) -> list:
    from sevenn.train.loss import ForceLoss, PerAtomEnergyLoss, StressLoss  # lazy: sevenn, seconds to import

    mse = torch.nn.MSELoss()
    losses = [(PerAtomEnergyLoss(criterion=mse), recipe.energy_weight), (ForceLoss(criterion=mse), recipe.force_weight)]
    if with_stress:
        losses.append((StressLoss(criterion=mse), recipe.stress_weight * GPA2_TO_KBAR2))
    return losses


def _maes(potential: Potential, frames: list[Atoms], targets: dict[str, list]) -> dict:
    """Energy (eV/atom), force (eV/Å) and stress (GPa) MAEs against ``training_targets``, the ones CHGNet trains on."""
    preds = potential.predict_efs(frames)
    row = {
        "e_mae_ev_atom": float(np.mean([abs(p["e"] - e) for p, e in zip(preds, targets["e"])])),
        "f_mae_ev_a": float(np.mean(np.concatenate([np.abs(p["f"] - f).ravel() for p, f in zip(preds, targets["f"])]))),
    }
    if "s" in targets:
        row["s_mae_gpa"] = float(np.mean(np.concatenate([np.abs(p["s"] - s).ravel() for p, s in zip(preds, targets["s"])])))
    return row


def train_model(potential: Potential, train: list[Atoms], val: list[Atoms], offsets_ev: dict, settings, epochs: int, work: Path) -> dict:
    """Train in place; keep the epoch with the lowest validation force MAE (the last one without validation).

    ``offsets_ev``: the per-element constants that put the DFT energies on the pretrained model's scale.
    """
    from sevenn.train.trainer import Trainer  # lazy: sevenn, seconds to import
    from torch_geometric.loader import DataLoader  # lazy: torch_geometric, loaded with sevenn

    recipe, model, learning_rate, log_path = settings.recipe, potential.model.net, learning_rate_of(settings.recipe), work / LOG_FILE
    torch.manual_seed(settings.seed)
    with_stress = all("stress" in a.calc.results for a in train + val) and recipe.stress_weight > 0
    data = graphs(train, shifted_energies_ev(train, offsets_ev), potential.model.config["cutoff"], potential.model.modal)
    loader = DataLoader(data, batch_size=min(recipe.batch_size, len(train)), shuffle=True)
    trainer = Trainer(model, loss_functions(recipe, with_stress), torch.optim.Adam, {"lr": learning_rate}, device=potential.device)
    scheduler = CosineAnnealingLR(trainer.optimizer, T_max=epochs, eta_min=recipe.final_lr_fraction * learning_rate)
    judge = val or train
    train_targets = training_targets(train, offsets_ev)  # fixed labels: converted once, not every epoch
    judge_targets = training_targets(val, offsets_ev) if val else train_targets
    history, best = [], (np.inf, None, epochs)
    start = time.perf_counter()
    with open(log_path, "w") as log, progress_bar(epochs_progress(len(train)), epochs) as finished_epoch:
        for epoch in range(1, epochs + 1):
            lr = trainer.optimizer.param_groups[0]["lr"]
            model.set_is_batch_data(True)
            trainer.run_one_epoch(loader, is_train=True)
            scheduler.step()
            train_row, val_row = _maes(potential, train, train_targets), _maes(potential, judge, judge_targets)
            history.append({"epoch": epoch, **{f"train_{k}": v for k, v in train_row.items()}, **{f"val_{k}": v for k, v in val_row.items()}})
            log.write(f"epoch {epoch}/{epochs} lr {lr:.3g}: force MAE train {train_row['f_mae_ev_a']:.4f}, "
                      f"{'validation' if val else 'train (no validation split)'} {val_row['f_mae_ev_a']:.4f} eV/Å\n")
            log.flush()
            finished_epoch()
            if val and val_row["f_mae_ev_a"] < best[0]:
                best = (val_row["f_mae_ev_a"], copy.deepcopy(model.state_dict()), epoch)
    seconds = time.perf_counter() - start
    if val:
        if best[1] is None:  # no epoch had a finite validation error
            raise diverged(work, "the validation force error was never finite")
        model.load_state_dict(best[1])
    return {
        "targets": "efs" if with_stress else "ef",
        "epochs": epochs,
        "kept_epoch": best[2],
        "kept_by": "best validation force MAE" if val else "last epoch (no validation split)",
        "energy_scale": None,
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "training_seconds": round(seconds, 2),
        "seconds_per_structure_epoch": round(seconds / (len(train) * epochs), 4),
        "history": history,
    }
