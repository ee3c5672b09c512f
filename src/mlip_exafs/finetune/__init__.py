"""Fine-tune CHGNet (or SevenNet-0, see ``finetune/sevennet.py``) on a few DFT structures with its own Trainer.

Recipe after Deng et al., npj Comput. Mater. 11:9 (2025): MSE loss, Adam,
learning rate cosine-decayed to 1 % of its start, 9:1 train/validation split
and the checkpoint with the lowest validation force MAE; with fewer than 10
structures there is no validation split and the last epoch is kept. Changed
from the paper where ``bench/finetune_recipe.py`` measured it better on WS2
structures held out of the training pool (N = 1, 5, 14, 24): learning rate
3e-3 instead of 1e-3, energy:force:stress weights 0.1:100:1 instead of
0.1:100:0.1 (eV/atom, eV/Å, GPa), and ≈ 2500 structure passes per run.

Energy reference: CP2K energies (~ -800 eV/atom, pseudopotential scale) are
moved onto the pretrained model's scale before training. A constant per
element is fitted by least squares to ``E_dft - E_pretrained`` over the
training structures (one constant per atom when a single composition cannot
separate the elements) and subtracted from the DFT energies; CHGNet's AtomRef
stays frozen. The offsets are stored in ``finetune.json`` and the checkpoint.

Outputs in ``out``: ``model.pt`` (loads with ``calculator_for``),
``training_curve.csv``/``.png``, ``train.log`` and ``finetune.json`` (written
last: its presence with the same inputs means the run is finished). Every
file is written atomically. A killed CHGNet run resumes after its last
finished epoch (``finetune/resume.py``) and ends with the same weights as an
unbroken run; the scratch folder ``.work`` is wiped when its inputs differ.
A killed SevenNet run starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from mlip_exafs.errors import UserError
from mlip_exafs.potentials import is_sevennet_model

FreezeMode = Literal["none", "readout", "energy-scale"]
MIN_STRUCTURES_FOR_VALIDATION = 10
DEFAULT_LR = {"none": 3e-3, "readout": 3e-3, "energy-scale": 1e-2}


class FinetuneRecipe(BaseModel):
    """How to train; everything here enters the run's identity (inputs hash)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1, description="None: epochs_for_n(n)")
    learning_rate: float | None = Field(None, gt=0, description="None: DEFAULT_LR[freeze]")
    final_lr_fraction: float = Field(0.01, gt=0, le=1)
    energy_weight: float = Field(0.1, ge=0)
    force_weight: float = Field(100.0, gt=0)
    stress_weight: float = Field(1.0, ge=0)
    batch_size: int = Field(4, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    freeze: FreezeMode = "none"


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    potential: str = "chgnet"
    train: str
    n: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    recipe: FinetuneRecipe = FinetuneRecipe()
    threads: int = Field(1, ge=1)


def epochs_for_n(n: int) -> int:
    """About 2500 structure-passes per run, between 40 and 100 epochs (Deng: 100).

    Small-N runs keep the paper's 100 epochs; at N = 24 the recipe bench
    measured 100 epochs 14 % better than 42, so larger N get 2500 passes but
    at least 40 epochs (N = 100: 40), which keeps a 7 N x 3 seed curve to a
    few hours on one CPU core.
    """
    return int(min(100, max(40, math.ceil(2500 / n))))


def learning_rate_of(recipe: FinetuneRecipe) -> float:
    return recipe.learning_rate or DEFAULT_LR[recipe.freeze]


def select_structures(pool: list[Atoms], n: int, seed: int) -> list[Atoms]:
    """The first ``n`` of a seed-determined permutation of the pool sorted by uid.

    Same seed, larger n -> a superset, so a learning curve adds data instead of
    drawing a new random set at every N.
    """
    if n > len(pool):
        raise UserError(f"the training pool has {len(pool)} usable structures but n = {n}; lower --n or label more structures")
    ordered = sorted(pool, key=lambda a: str(a.info.get("uid", a.info.get("row_id"))))
    order = np.random.default_rng(seed).permutation(len(ordered))[:n]
    return [ordered[i] for i in order]


def split_train_val(frames: list[Atoms], val_fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """9:1 split (seeded); no validation set below MIN_STRUCTURES_FOR_VALIDATION structures."""
    if len(frames) < MIN_STRUCTURES_FOR_VALIDATION:
        return list(frames), []
    n_val = max(1, int(val_fraction * len(frames)))
    order = np.random.default_rng(seed + 1).permutation(len(frames))
    return [frames[i] for i in order[n_val:]], [frames[i] for i in order[:n_val]]


def load_base_model(potential: str):
    """The model to start from: pretrained CHGNet 0.3.0 or SevenNet-0, or a fine-tuned checkpoint of either."""
    from mlip_exafs.potentials import is_checkpoint, load_checkpoint_model

    with contextlib.redirect_stdout(None):  # the models print banners on load
        if potential.lower() == "chgnet":
            from chgnet.model import CHGNet

            return CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
        if potential.lower() == "sevennet-0":
            from mlip_exafs.finetune.sevennet import load_pretrained

            return load_pretrained()
        if is_checkpoint(potential):
            return load_checkpoint_model(potential)
    raise UserError(f"fine-tuning supports --potential chgnet, sevennet-0 or a checkpoint .pt written by 'mlip-exafs finetune', not '{potential}'")


def to_structures(frames: list[Atoms]):
    from pymatgen.io.ase import AseAtomsAdaptor

    return [AseAtomsAdaptor.get_structure(Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)) for a in frames]


def predict_efs(model, frames: list[Atoms]) -> list[dict]:
    """Model predictions: e (eV/atom), f (eV/Å), s (GPa 3x3, tensile positive)."""
    if is_sevennet_model(model):
        from mlip_exafs.finetune.sevennet import predict_efs as sevennet_efs

        return sevennet_efs(model, frames)
    model.eval()
    preds = model.predict_structure(to_structures(frames), task="efs", batch_size=8)
    return preds if isinstance(preds, list) else [preds]


def fit_energy_offsets(model, frames: list[Atoms]) -> tuple[dict[str, float], str]:
    """Per-element constants that bring DFT energies onto the model's scale."""
    from mlip_exafs.validate import fit_element_offsets_ev

    predicted_ev = np.array([p["e"] * len(a) for p, a in zip(predict_efs(model, frames), frames)])
    dft_ev = np.array([a.calc.results["energy"] for a in frames])
    return fit_element_offsets_ev(frames, dft_ev - predicted_ev)


def shifted_energies_ev(frames: list[Atoms], offsets_ev: dict[str, float]) -> np.ndarray:
    """Total DFT energies (eV) moved onto the pretrained model's scale by the fitted offsets."""
    from mlip_exafs.validate import offset_energy_ev

    return np.array([a.calc.results["energy"] for a in frames]) - offset_energy_ev(frames, offsets_ev)


def training_targets(frames: list[Atoms], offsets_ev: dict[str, float]) -> dict[str, list]:
    """Labels in CHGNet's training units: shifted eV/atom, eV/Å, GPa (tensile positive)."""
    from mlip_exafs.units import ase_stress_to_gpa, voigt_to_matrix

    shifted_ev = shifted_energies_ev(frames, offsets_ev)
    targets = {
        "e": [float(e / len(a)) for e, a in zip(shifted_ev, frames)],
        "f": [np.asarray(a.calc.results["forces"]) for a in frames],
    }
    if all("stress" in a.calc.results for a in frames):
        targets["s"] = [voigt_to_matrix(ase_stress_to_gpa(a.calc.results["stress"])) for a in frames]
    return targets


def structure_data(frames: list[Atoms], offsets_ev: dict[str, float]):
    """CHGNet's StructureData; stresses go in as 'VASP kbar' because it applies x(-0.1)."""
    from chgnet.data.dataset import StructureData

    from mlip_exafs.units import gpa_to_vasp_kbar

    targets = training_targets(frames, offsets_ev)
    with contextlib.redirect_stdout(None):
        return StructureData(
            structures=to_structures(frames),
            energies=targets["e"],
            forces=targets["f"],
            stresses=[gpa_to_vasp_kbar(s) for s in targets["s"]] if "s" in targets else None,
            structure_ids=[str(a.info.get("uid")) for a in frames],
        )


def training_loss(model, frames: list[Atoms], offsets_ev: dict[str, float], recipe: FinetuneRecipe) -> dict:
    """The recipe's weighted MSE and the force MAE on ``frames`` (eval mode)."""
    targets = training_targets(frames, offsets_ev)
    preds = predict_efs(model, frames)
    e_mse = float(np.mean([(p["e"] - e) ** 2 for p, e in zip(preds, targets["e"])]))
    f_err = np.concatenate([np.ravel(p["f"] - f) for p, f in zip(preds, targets["f"])])
    loss = recipe.energy_weight * e_mse + recipe.force_weight * float(np.mean(f_err**2))
    if "s" in targets:
        s_err = np.concatenate([np.ravel(p["s"] - s) for p, s in zip(preds, targets["s"])])
        loss += recipe.stress_weight * float(np.mean(s_err**2))
    return {"loss": loss, "force_mae_ev_a": float(np.mean(np.abs(f_err)))}


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
    from torch.nn.utils import parametrize

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
    from torch.nn.utils import parametrize

    last = model.mlp.layers[-1]
    for name in ("weight", "bias"):
        parametrize.remove_parametrizations(last, name, leave_parametrized=True)


def scheduler_steps_per_epoch(n_batches: int) -> int:
    """How often CHGNet's Trainer steps the scheduler per epoch (at each tenth of it)."""
    return len({int(k) for k in np.arange(1, 11) * n_batches // 10 if k >= 1})


def make_trainer(model, recipe: FinetuneRecipe, targets: str, epochs: int, seed: int, n_batches: int):
    """CHGNet's Trainer, with a cosine schedule that really ends at final_lr_fraction.

    CHGNet's own CosLR assumes >= 10 batches per epoch (T_max = 10 x epochs);
    with a few structures it would barely decay, so the schedule is rebuilt.
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR

    from mlip_exafs.finetune.resume import ResumableTrainer

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
        use_device="cpu",
    )
    total_steps = max(1, epochs * scheduler_steps_per_epoch(n_batches))
    trainer.scheduler = CosineAnnealingLR(trainer.optimizer, T_max=total_steps, eta_min=recipe.final_lr_fraction * lr)
    return trainer


def best_force_checkpoint(save_dir: Path) -> tuple[dict, int]:
    """State dict and epoch of the Trainer's best-validation-force checkpoint."""
    files = sorted(save_dir.glob("bestF_epoch*.pth.tar"))
    if not files:
        raise UserError(f"training wrote no best-force checkpoint in {save_dir}; rerun the same command")
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


def write_training_curve(rows: list[dict], has_validation: bool, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlip_exafs.files import save_figure, write_text

    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f"{row[k]:.6g}" for k in header) for row in rows]
    write_text(out / "training_curve.csv", "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_f_mae_ev_a"] for r in rows], label="train (running, in train mode)")
    val_label = "validation" if has_validation else "training set (no validation split)"
    ax.plot(epochs, [r["val_f_mae_ev_a"] for r in rows], label=val_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("force MAE (eV/Å)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    save_figure(fig, out / "training_curve.png")


def run_inputs(settings: FinetuneSettings, pool: list[Atoms], chosen: list[Atoms]) -> dict:
    """Everything that determines the result (threads do not)."""
    from mlip_exafs.potentials import potential_id
    from mlip_exafs.validate import labels_hash

    recipe = settings.recipe.model_dump()
    recipe["epochs"] = settings.recipe.epochs or epochs_for_n(settings.n)
    recipe["learning_rate"] = learning_rate_of(settings.recipe)
    return {
        "potential": potential_id(settings.potential),
        "train": str(settings.train),
        "pool_labels_sha256": labels_hash(pool),
        "pool_size": len(pool),
        "n": settings.n,
        "seed": settings.seed,
        "uids": [str(a.info.get("uid")) for a in chosen],
        "recipe": recipe,
    }


def inputs_hash_of(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def finished_run(out: Path, inputs_hash: str) -> bool:
    """True if ``out`` holds a complete run with these inputs (record and matching model.pt)."""
    from mlip_exafs.files import read_json, sha256_file

    record_path, model_path = out / "finetune.json", out / "model.pt"
    if not record_path.exists():
        return False
    record = read_json(record_path)
    return record.get("inputs_hash") == inputs_hash and model_path.exists() and sha256_file(model_path) == record.get("model_sha256")


def work_folder(out: Path, inputs_hash: str) -> Path:
    """``out/.work``, kept from a killed run with the same inputs (its epoch checkpoints resume), else emptied."""
    from mlip_exafs.files import write_text

    work, stamp = out / ".work", out / ".work" / "inputs_hash"
    if not (stamp.exists() and stamp.read_text() == inputs_hash):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        write_text(stamp, inputs_hash)
    return work


def train_model(model, train: list[Atoms], val: list[Atoms], offsets_ev: dict, settings: FinetuneSettings, work: Path) -> dict:
    """Run the model's own Trainer; leaves the chosen weights in ``model``; returns what happened."""
    from chgnet.data.dataset import get_loader

    from mlip_exafs.finetune.resume import train_resumably

    recipe = settings.recipe
    epochs = recipe.epochs or epochs_for_n(settings.n)
    if is_sevennet_model(model):
        from mlip_exafs.finetune.sevennet import train_model as train_sevennet

        return train_sevennet(model, train, val, offsets_ev, settings, epochs, learning_rate_of(recipe), work / "train.log")
    random.seed(settings.seed)
    train_data = structure_data(train, offsets_ev)
    val_data = structure_data(val, offsets_ev) if val else train_data
    targets = "efs" if all("stress" in a.calc.results for a in train + val) and recipe.stress_weight > 0 else "ef"
    batch = min(recipe.batch_size, len(train))
    train_loader = get_loader(train_data, batch_size=batch, pin_memory=False)
    val_loader = get_loader(val_data, batch_size=batch, pin_memory=False)
    scale = apply_freeze(model, recipe.freeze)
    trainer = make_trainer(model, recipe, targets, epochs, settings.seed, len(train_loader))
    with open(work / "train.log", "a") as log, contextlib.redirect_stdout(log):
        resumed_at = train_resumably(trainer, train_loader, val_loader, work / "trainer")
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


def finetune(settings: FinetuneSettings, out: str | Path) -> Path:
    """Fine-tune per ``settings`` into ``out``; returns the path of ``model.pt``."""
    from mlip_exafs.dataset import load_structures
    from mlip_exafs.files import sha256_file, write_json
    from mlip_exafs.potentials import save_chgnet_checkpoint, save_sevennet_checkpoint, set_torch_threads
    from mlip_exafs.provenance import provenance

    out = Path(out)
    set_torch_threads(settings.threads)
    pool = load_structures(settings.train, "train")
    chosen = select_structures(pool, settings.n, settings.seed)
    inputs = run_inputs(settings, pool, chosen)
    inputs_hash = inputs_hash_of(inputs)
    if finished_run(out, inputs_hash):
        return out / "model.pt"
    start = time.perf_counter()
    model = load_base_model(settings.potential)  # a bad --potential fails before anything is written
    if is_sevennet_model(model) and settings.recipe.freeze != "none":
        raise UserError(f"SevenNet fine-tuning supports --freeze none only, not '{settings.recipe.freeze}'")
    (out / "finetune.json").unlink(missing_ok=True)  # an older run with other inputs is replaced
    work = work_folder(out, inputs_hash)

    offsets_ev, offset_method = fit_energy_offsets(model, chosen)
    train, val = split_train_val(chosen, settings.recipe.val_fraction, settings.seed)
    before = training_loss(model, train, offsets_ev, settings.recipe)
    trained = train_model(model, train, val, offsets_ev, settings, work)
    after = training_loss(model, train, offsets_ev, settings.recipe)
    if not np.isfinite(after["loss"]):
        raise UserError(f"fine-tuning diverged (loss is NaN after training, see {work / 'train.log'}); lower --lr or --stress-weight")

    metadata = {"inputs_hash": inputs_hash, "energy_offsets_ev": offsets_ev, "base_potential": inputs["potential"]}
    (save_sevennet_checkpoint if is_sevennet_model(model) else save_chgnet_checkpoint)(model, out / "model.pt", metadata)
    write_training_curve(trained.pop("history"), bool(val), out)
    shutil.move(work / "train.log", out / "train.log")
    record = {
        "inputs_hash": inputs_hash,
        "model_sha256": sha256_file(out / "model.pt"),
        "n": settings.n,
        "seed": settings.seed,
        "uids_train": [str(a.info.get("uid")) for a in train],
        "uids_val": [str(a.info.get("uid")) for a in val],
        "energy_offsets_ev": offsets_ev,
        "energy_offset_method": offset_method,
        "train_loss_before": before["loss"],
        "train_loss_after": after["loss"],
        "train_force_mae_before_ev_a": before["force_mae_ev_a"],
        "train_force_mae_after_ev_a": after["force_mae_ev_a"],
        **trained,
        "total_seconds": round(time.perf_counter() - start, 2),
        "threads": settings.threads,
        "provenance": provenance(inputs),
    }
    write_json(out / "finetune.json", record)
    shutil.rmtree(work, ignore_errors=True)
    return out / "model.pt"
