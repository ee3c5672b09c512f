"""Epoch checkpoints that let a killed CHGNet fine-tune resume where it stopped.

A paper-profile fine-tune at N = 100 runs for hours on one core, and a study is
stopped at session ends. CHGNet's Trainer already saves model, optimizer,
scheduler and history after every epoch; here that file is written atomically
(a kill never leaves it half-written or missing), it also carries the torch RNG
and Python RNG states (the DataLoader shuffles with torch's) and the training seconds so far, so a
resumed run sees the same batches and ends with the same weights as one that
was never stopped.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from chgnet.trainer import Trainer

from mlip_exafs.progress import progress_bar

EPOCH_FILE = re.compile(r"^epoch(\d+)_.*\.pth\.tar$")
BEST_FORCE_FILE = re.compile(r"^bestF_epoch(\d+)_.*\.pth\.tar$")


class ResumableTrainer(Trainer):
    """CHGNet's Trainer whose epoch checkpoints are atomic, resumable and carry the RNG state."""

    seconds_before = 0.0  # training seconds of earlier, killed runs
    started_at: float | None = None
    finished_epoch: Callable[[], None] | None = None  # progress: CHGNet's own epoch lines go to the train log

    def training_seconds(self) -> float:
        running = time.perf_counter() - self.started_at if self.started_at is not None else 0.0
        return self.seconds_before + running

    def save(self, filename: str = "training_result.pth.tar") -> None:
        state = {
            "model": self.model.as_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "training_history": self.training_history,
            "trainer_args": self.trainer_args,
            "torch_rng_state": torch.get_rng_state(),
            "python_rng_state": random.getstate(),
            "training_seconds": self.training_seconds(),
        }
        _atomic(lambda part: torch.save(state, part), Path(filename))

    def save_checkpoint(self, epoch: int, mae_error: dict, save_dir: str) -> None:
        """The new epoch file first, then the best-force copy, then the old files go."""
        folder = Path(save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        errors = "_".join(f"{key}{f'{mae_error[key] * 1000:.0f}' if key in mae_error else 'NA'}" for key in "efsm")
        latest = folder / f"epoch{epoch}_{errors}.pth.tar"
        self.save(str(latest))
        if "f" in self.targets and mae_error["f"] == min(self.training_history["f"]["val"]):
            _keep_only(folder, BEST_FORCE_FILE, _copy_atomically(latest, folder / f"bestF_{latest.name}"))
        _keep_only(folder, EPOCH_FILE, latest)
        if self.finished_epoch is not None:
            self.finished_epoch()


def resume(trainer: ResumableTrainer, save_dir: Path) -> int:
    """Load the last finished epoch from ``save_dir`` into ``trainer``; returns the epochs already done (0: none)."""
    latest = _newest(save_dir, EPOCH_FILE)
    if latest is None:
        return 0
    state = torch.load(latest, map_location="cpu", weights_only=False)  # written by this module, trusted
    trainer.model.load_state_dict(state["model"]["state_dict"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.training_history = state["training_history"]
    trainer.seconds_before = float(state["training_seconds"])
    torch.set_rng_state(state["torch_rng_state"])
    random.setstate(state["python_rng_state"])
    trainer.starting_epoch = len(trainer.training_history["e"]["train"])
    _restore_best_force_copy(trainer, save_dir, latest)
    return trainer.starting_epoch


def _restore_best_force_copy(trainer: ResumableTrainer, save_dir: Path, latest: Path) -> None:
    """A kill between the epoch file and its best-force copy leaves the copy one best epoch behind."""
    if "f" not in trainer.targets:
        return
    val = trainer.training_history["f"]["val"]
    best = max(i for i, v in enumerate(val) if v == min(val))  # the Trainer keeps the last of equal minima
    copy = next((p for p in save_dir.iterdir() if (m := BEST_FORCE_FILE.match(p.name)) and int(m.group(1)) == best), None)
    if copy is None:  # only the newest epoch can lack its copy
        copy = _copy_atomically(latest, save_dir / f"bestF_{latest.name}")
    _keep_only(save_dir, BEST_FORCE_FILE, copy)


def train_resumably(trainer: ResumableTrainer, train_loader, val_loader, save_dir: Path, description: str) -> int:
    """``trainer.train`` from the last finished epoch in ``save_dir``; returns the epoch it resumed at."""
    resumed_at = resume(trainer, save_dir)
    if resumed_at:
        print(f"resumed after epoch {resumed_at} of {trainer.epochs} (from {save_dir})")
    trainer.started_at = time.perf_counter()
    with progress_bar(description, trainer.epochs, done_before=resumed_at) as trainer.finished_epoch:
        trainer.train(train_loader, val_loader, save_dir=str(save_dir))
    return resumed_at


def _newest(folder: Path, pattern: re.Pattern) -> Path | None:
    files = [(int(m.group(1)), p) for p in folder.glob("*.pth.tar") if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(files)[1] if files else None


def _keep_only(folder: Path, pattern: re.Pattern, keep: Path) -> None:
    for path in folder.iterdir():
        if pattern.match(path.name) and path != keep:
            path.unlink()


def _copy_atomically(source: Path, target: Path) -> Path:
    return _atomic(lambda part: shutil.copyfile(source, part), target)


def _atomic(write, target: Path) -> Path:
    part = target.with_name(target.name + ".part")
    write(part)
    os.replace(part, target)
    return target
