"""Fine-tune a potential of a registered family on a few DFT structures with the family's own Trainer.

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

This module is model-agnostic: selection, split, energy offsets, targets,
loss, records and files. Each trainable family has an adapter here
(``finetune/chgnet.py``, ``finetune/sevennet.py``, listed in :data:`TRAINERS`)
with ``check_recipe(potential, recipe)`` and ``train_model(potential, train,
val, offsets_ev, settings, epochs, work) -> record``; the model itself comes
from ``potentials/`` as a :class:`~mlip_exafs.potentials.Potential`.

Outputs in ``out`` (named in :class:`OutFiles`; other stages read them through it
and :func:`read_result`): ``model.pt`` (a checkpoint that names its family; loads
with ``load_potential``), ``training_curve.csv``/``.png``, ``train.log`` and
``finetune.json`` (written last: its presence with the same inputs means the run is finished). Every
file is written atomically. A killed CHGNet run resumes after its last
finished epoch (``finetune/resume.py``) and ends with the same weights as an
unbroken run; the scratch folder ``.work`` is wiped when its inputs differ.
A killed SevenNet run starts again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlip_exafs.dataset import load_structures
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import read_json, sha256_file, write_json, write_text, writer_lock
from mlip_exafs.plots import plt, save_figure
from mlip_exafs.potentials import Potential, load_potential, potential_id, save_checkpoint, set_torch_threads
from mlip_exafs.provenance import provenance
from mlip_exafs.settings import DEFAULT_LR, FinetuneRecipe, FinetuneSettings, FreezeMode, epochs_for_n  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.units import ase_stress_to_gpa, voigt_to_matrix
from mlip_exafs.validate import fit_element_offsets_ev, labels_hash, offset_energy_ev

MIN_STRUCTURES_FOR_VALIDATION = 10
LOG_FILE = "train.log"  # the trainer's log: written by the adapters into the work folder, then moved to ``out``


def epochs_progress(n_train: int) -> str:
    """What a fine-tune's progress lines on stderr are called (a study's ``progress`` shows the last one)."""
    return f"fine-tune on {n_train} structure{'s' if n_train != 1 else ''}, epochs"


def diverged(work: Path, when: str = "loss is NaN after training") -> UserError:
    """The one message of a fine-tune whose loss ran away: a rerun would diverge again, a lower rate need not."""
    return UserError(f"fine-tuning diverged ({when}, see {work / LOG_FILE}); lower {setting('learning_rate')} or {setting('stress_weight')}")
TRAINERS = {"chgnet": "mlip_exafs.finetune.chgnet", "sevennet": "mlip_exafs.finetune.sevennet"}  # family -> adapter


@dataclass(frozen=True)
class OutFiles:
    """What a fine-tune writes into its folder; the one place that names these files."""

    out: Path

    @property
    def model(self) -> Path:
        """The fine-tuned checkpoint (names its family; loads with ``load_potential``)."""
        return self.out / "model.pt"

    @property
    def record(self) -> Path:
        """finetune.json: inputs hash, the model's sha256, epochs, losses, timing (written last)."""
        return self.out / "finetune.json"

    @property
    def curve(self) -> Path:
        return self.out / "training_curve.csv"

    @property
    def curve_plot(self) -> Path:
        return self.out / "training_curve.png"

    @property
    def log(self) -> Path:
        """The trainer's log, moved here from the work folder when the run ends."""
        return self.out / LOG_FILE

    @property
    def work(self) -> Path:
        """Scratch of a running fine-tune (epoch checkpoints a killed run resumes from); removed at the end."""
        return self.out / ".work"


def read_result(folder: str | Path) -> dict | None:
    """What a finished fine-tune recorded in its folder (``finetune.json``); None for a folder without one."""
    path = OutFiles(Path(folder)).record
    return read_json(path) if path.exists() else None


def learning_rate_of(recipe: FinetuneRecipe) -> float:
    return recipe.learning_rate or DEFAULT_LR[recipe.freeze]


def select_structures(pool: list[Atoms], n: int, seed: int) -> list[Atoms]:
    """The first ``n`` of a seed-determined permutation of the pool sorted by uid.

    Same seed, larger n -> a superset, so a learning curve adds data instead of
    drawing a new random set at every N.
    """
    if n > len(pool):
        raise UserError(f"the training pool has {len(pool)} usable structures but n = {n}; lower {setting('n')} or label more structures")
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


def load_base_model(potential: str, device: str | None = None, threads: int | None = None) -> Potential:
    """The potential to start from (a registered name or a fine-tuned checkpoint), if its family can be trained here."""
    loaded = load_potential(potential, device, threads)
    trainer_for(loaded)
    return loaded


def trainer_for(potential: Potential):
    """The family's training adapter; a one-line error for a family without one (e.g. python: calculators)."""
    if potential.family_name not in TRAINERS:
        families = ", ".join(TRAINERS)
        raise UserError(f"cannot fine-tune '{potential.spec}': fine-tuning supports the registered families ({families}) "
                        "and their checkpoints only; see 'mlip-exafs potentials'")
    return importlib.import_module(TRAINERS[potential.family_name])


def fit_energy_offsets(potential: Potential, frames: list[Atoms]) -> tuple[dict[str, float], str]:
    """Per-element constants that bring DFT energies onto the model's scale."""
    predicted_ev = np.array([p["e"] * len(a) for p, a in zip(potential.predict_efs(frames), frames)])
    dft_ev = np.array([a.calc.results["energy"] for a in frames])
    return fit_element_offsets_ev(frames, dft_ev - predicted_ev)


def shifted_energies_ev(frames: list[Atoms], offsets_ev: dict[str, float]) -> np.ndarray:
    """Total DFT energies (eV) moved onto the pretrained model's scale by the fitted offsets."""
    return np.array([a.calc.results["energy"] for a in frames]) - offset_energy_ev(frames, offsets_ev)


def training_targets(frames: list[Atoms], offsets_ev: dict[str, float]) -> dict[str, list]:
    """Labels in CHGNet's training units: shifted eV/atom, eV/Å, GPa (tensile positive)."""
    shifted_ev = shifted_energies_ev(frames, offsets_ev)
    targets = {
        "e": [float(e / len(a)) for e, a in zip(shifted_ev, frames)],
        "f": [np.asarray(a.calc.results["forces"]) for a in frames],
    }
    if all("stress" in a.calc.results for a in frames):
        targets["s"] = [voigt_to_matrix(ase_stress_to_gpa(a.calc.results["stress"])) for a in frames]
    return targets


def training_loss(potential: Potential, frames: list[Atoms], offsets_ev: dict[str, float], recipe: FinetuneRecipe) -> dict:
    """The recipe's weighted MSE and the force MAE on ``frames`` (eval mode)."""
    targets = training_targets(frames, offsets_ev)
    preds = potential.predict_efs(frames)
    e_mse = float(np.mean([(p["e"] - e) ** 2 for p, e in zip(preds, targets["e"])]))
    f_err = np.concatenate([np.ravel(p["f"] - f) for p, f in zip(preds, targets["f"])])
    loss = recipe.energy_weight * e_mse + recipe.force_weight * float(np.mean(f_err**2))
    if "s" in targets:
        s_err = np.concatenate([np.ravel(p["s"] - s) for p, s in zip(preds, targets["s"])])
        loss += recipe.stress_weight * float(np.mean(s_err**2))
    return {"loss": loss, "force_mae_ev_a": float(np.mean(np.abs(f_err)))}


def write_training_curve(rows: list[dict], has_validation: bool, files: OutFiles) -> None:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f"{row[k]:.6g}" for k in header) for row in rows]
    write_text(files.curve, "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_f_mae_ev_a"] for r in rows], label="train (running, in train mode)")
    val_label = "validation" if has_validation else "training set (no validation split)"
    ax.plot(epochs, [r["val_f_mae_ev_a"] for r in rows], label=val_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("force MAE (eV/Å)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    save_figure(fig, files.curve_plot)


def run_inputs(settings: FinetuneSettings, pool: list[Atoms], chosen: list[Atoms]) -> dict:
    """Everything that determines the result (threads do not)."""
    recipe = settings.recipe.model_dump()
    recipe["epochs"] = settings.recipe.epochs or epochs_for_n(settings.n)
    recipe["learning_rate"] = learning_rate_of(settings.recipe)
    return {
        "potential": potential_id(settings.potential),
        "train": str(settings.train),  # for the record only: the hash takes the labels' content (where they lie changes)
        "pool_labels_sha256": labels_hash(pool),
        "pool_size": len(pool),
        "n": settings.n,
        "seed": settings.seed,
        "uids": [str(a.info.get("uid")) for a in chosen],
        "recipe": recipe,
    }


def inputs_hash_of(inputs: dict) -> str:
    """The run's identity: the labels by content, not the path they were given by (--train w3 and ./w3, or the
    same dataset on another machine, resume one run and keep its finished epochs)."""
    return hashlib.sha256(json.dumps({k: v for k, v in inputs.items() if k != "train"}, sort_keys=True).encode()).hexdigest()


def finished_run(files: OutFiles, inputs_hash: str) -> bool:
    """True if the folder holds a complete run with these inputs (record and matching model.pt)."""
    record = read_result(files.out)
    return record is not None and record.get("inputs_hash") == inputs_hash and files.model.exists() and sha256_file(files.model) == record.get("model_sha256")


def work_folder(files: OutFiles, inputs_hash: str) -> Path:
    """``out/.work``, kept from a killed run with the same inputs (its epoch checkpoints resume), else emptied."""
    work, stamp = files.work, files.work / "inputs_hash"
    if not (stamp.exists() and stamp.read_text() == inputs_hash):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        write_text(stamp, inputs_hash)
    return work


def finetune(settings: FinetuneSettings, out: str | Path) -> Path:
    """Fine-tune per ``settings`` into ``out``; returns the path of ``model.pt``."""
    with writer_lock(out, "finetune"):  # two trainers would share one work folder and checkpoint
        return _finetune(settings, Path(out))


def _finetune(settings: FinetuneSettings, out: Path) -> Path:
    files = OutFiles(Path(out))
    set_torch_threads(settings.threads)
    pool = load_structures(settings.train, "train")
    chosen = select_structures(pool, settings.n, settings.seed)
    inputs = run_inputs(settings, pool, chosen)
    inputs_hash = inputs_hash_of(inputs)
    if finished_run(files, inputs_hash):
        return files.model
    start = time.perf_counter()
    potential = load_base_model(settings.potential, settings.device, settings.threads)  # a bad potential fails before anything is written
    trainer = trainer_for(potential)
    trainer.check_recipe(potential, settings.recipe)
    files.record.unlink(missing_ok=True)  # an older run with other inputs is replaced: nothing of it may pass for this one's
    files.model.unlink(missing_ok=True)
    work = work_folder(files, inputs_hash)

    offsets_ev, offset_method = fit_energy_offsets(potential, chosen)
    train, val = split_train_val(chosen, settings.recipe.val_fraction, settings.seed)
    before = training_loss(potential, train, offsets_ev, settings.recipe)
    epochs = settings.recipe.epochs or epochs_for_n(settings.n)
    trained = trainer.train_model(potential, train, val, offsets_ev, settings, epochs, work)
    after = training_loss(potential, train, offsets_ev, settings.recipe)
    if not np.isfinite(after["loss"]):
        raise diverged(work)

    metadata = {"inputs_hash": inputs_hash, "energy_offsets_ev": offsets_ev, "base_potential": inputs["potential"]}
    save_checkpoint(potential, files.model, metadata)
    write_training_curve(trained.pop("history"), bool(val), files)
    shutil.move(work / LOG_FILE, files.log)
    record = {
        "inputs_hash": inputs_hash,
        "model_sha256": sha256_file(files.model),
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
        "device": potential.device,
        "provenance": provenance(inputs),
    }
    write_json(files.record, record)
    shutil.rmtree(work, ignore_errors=True)
    return files.model
