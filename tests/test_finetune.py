"""Fine-tuning CHGNet on tiny stiffened-CHGNet data: it learns, saves, reloads, resumes."""

import sys
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch

from conftest import assert_nothing_written, assert_one_line_error, cli
from fake_dft import write_fake_dataset
from mlip_exafs.errors import UserError
from mlip_exafs.finetune import (
    FinetuneRecipe,
    FinetuneSettings,
    epochs_for_n,
    finetune,
    select_structures,
)
from mlip_exafs.finetune.chgnet import scheduler_steps_per_epoch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("ds"), n_train=10, n_test=2)


# These runs last 1-3 epochs. The default lr of full fine-tuning (3e-3) is tuned for >= 40 epochs: its
# first Adam steps overshoot on these labels, which the model nearly fits already (docs/finetune.md).
SHORT_RUN_LR = 1e-3


def settings(dataset, n, **recipe):
    if recipe.get("freeze", "none") == "none":
        recipe.setdefault("learning_rate", SHORT_RUN_LR)
    return FinetuneSettings(train=str(dataset), n=n, seed=0, recipe=FinetuneRecipe(**recipe))


def test_selection_is_seeded_nested_and_bounded(dataset):
    from mlip_exafs.dataset import load_structures

    pool = load_structures(dataset, "train")
    uids = lambda frames: [a.info["uid"] for a in frames]  # noqa: E731
    assert uids(select_structures(pool, 3, 7)) == uids(select_structures(list(reversed(pool)), 3, 7))
    assert uids(select_structures(pool, 5, 7))[:3] == uids(select_structures(pool, 3, 7))
    assert uids(select_structures(pool, 3, 7)) != uids(select_structures(pool, 3, 8))
    with pytest.raises(UserError, match="has 10 usable structures"):
        select_structures(pool, 11, 0)


def test_epoch_rule_and_scheduler_steps():
    assert [epochs_for_n(n) for n in (1, 10, 20, 50, 100)] == [100, 100, 100, 50, 40]
    assert [scheduler_steps_per_epoch(b) for b in (1, 3, 10, 25)] == [1, 3, 10, 10]


def test_finetune_lowers_loss_and_checkpoint_reloads(dataset, tmp_path, capsys):
    from mlip_exafs.potentials import calculator_for
    from mlip_exafs.structures import load_structure

    out = tmp_path / "ft"
    model = finetune(settings(dataset, 3, epochs=2), out)
    assert "fine-tune on 3 structures, epochs: 2/2, elapsed" in capsys.readouterr().err  # what `progress` shows of a running study
    record = json.loads((out / "finetune.json").read_text())
    assert record["train_loss_after"] < record["train_loss_before"]
    assert record["train_force_mae_after_ev_a"] < record["train_force_mae_before_ev_a"]
    assert record["kept_by"].startswith("last epoch") and record["uids_val"] == []
    assert record["energy_offsets_ev"]["W"] == pytest.approx(-800.8, abs=0.2)  # 1.1 x CHGNet - 800 eV/atom
    assert len((out / "training_curve.csv").read_text().splitlines()) == 1 + 2
    assert (out / "training_curve.png").exists() and not (out / ".work").exists()
    atoms = load_structure("ws2")
    atoms.calc = calculator_for(model, atoms, threads=1)
    assert np.isfinite(atoms.get_forces()).all()
    # finished: not redone; other inputs in the same folder: redone and replaced
    stamp = model.stat().st_mtime_ns
    finetune(settings(dataset, 3, epochs=2), out)
    assert model.stat().st_mtime_ns == stamp
    finetune(settings(dataset, 3, epochs=1), out)
    assert model.stat().st_mtime_ns != stamp
    assert len((out / "training_curve.csv").read_text().splitlines()) == 1 + 1


@pytest.mark.slow
def test_sevennet_finetune_learns_and_reloads_exactly(dataset, tmp_path):
    """SevenNet-0 through the same verb: loss falls, the best-validation epoch is kept, the checkpoint
    reloads (weights only) as a calculator that predicts exactly what the trained model predicts."""
    from mlip_exafs.dataset import load_structures
    from mlip_exafs.finetune import training_loss
    from mlip_exafs.potentials import calculator_for, load_potential
    from mlip_exafs.structures import load_structure

    out = tmp_path / "sevennet"
    model = finetune(FinetuneSettings(potential="sevennet-0", train=str(dataset), n=10, seed=0, recipe=FinetuneRecipe(epochs=2, learning_rate=SHORT_RUN_LR)), out)
    record = json.loads((out / "finetune.json").read_text())
    assert record["train_loss_after"] < record["train_loss_before"]
    assert record["kept_by"] == "best validation force MAE" and len(record["uids_val"]) == 1
    assert record["targets"] == "efs" and len((out / "training_curve.csv").read_text().splitlines()) == 1 + 2
    assert "epoch 2/2" in (out / "train.log").read_text()
    reloaded = load_potential(model)  # the saved model is the trained one
    assert reloaded.family_name == "sevennet" and reloaded.checkpoint_metadata["base_potential"] == "sevennet-0"
    pool = load_structures(dataset, "train")
    train = [a for a in pool if a.info["uid"] in record["uids_train"]]
    after = training_loss(reloaded, train, record["energy_offsets_ev"], FinetuneRecipe(epochs=2))
    assert after["force_mae_ev_a"] == pytest.approx(record["train_force_mae_after_ev_a"], rel=1e-5)
    atoms = load_structure("ws2", "2x2x1")
    atoms.rattle(0.05, seed=1)
    atoms.calc = calculator_for(model, atoms, threads=1)
    assert np.allclose(atoms.get_forces(), reloaded.predict_efs([atoms])[0]["f"], atol=1e-6)
    pristine = load_potential("sevennet-0").predict_efs([atoms])[0]["f"]
    assert np.abs(atoms.get_forces() - pristine).max() > 1e-3  # the weights did change


@pytest.mark.slow
def test_multi_fidelity_sevennet_fine_tunes_its_pbe_head(dataset, tmp_path):
    """SevenNet-MF-0: every training graph carries the PBE modality; the checkpoint keeps the head."""
    from mlip_exafs.potentials import load_potential

    model = finetune(FinetuneSettings(potential="sevennet-mf-0", train=str(dataset), n=1, seed=0, recipe=FinetuneRecipe(epochs=1, learning_rate=SHORT_RUN_LR)), tmp_path / "mf")
    record = json.loads((tmp_path / "mf" / "finetune.json").read_text())
    assert record["train_loss_after"] < record["train_loss_before"] and record["device"] == "cpu"
    reloaded = load_potential(model)
    assert reloaded.family_name == "sevennet" and reloaded.model.modal == "PBE"


def test_killed_run_restarts_cleanly(dataset, tmp_path):
    out = tmp_path / "killed"
    (out / ".work" / "trainer").mkdir(parents=True)
    (out / ".work" / "trainer" / "epoch0_e0_f0_s0_mNA.pth.tar").write_bytes(b"partial")
    (out / "model.pt").write_bytes(b"half-written")  # no finetune.json: the run never finished
    model = finetune(settings(dataset, 1, epochs=1), out)
    from mlip_exafs.potentials import load_potential

    assert load_potential(model).family_name == "chgnet"
    assert not (out / ".work").exists()


class Killed(Exception):
    pass


def kill_after_epoch(monkeypatch, last_epoch):
    """Make the run stop right after writing the checkpoint of ``last_epoch`` (0-based), like a kill."""
    from mlip_exafs.finetune.resume import ResumableTrainer

    save_checkpoint = ResumableTrainer.save_checkpoint

    def save_then_die(self, epoch, mae_error, save_dir):
        save_checkpoint(self, epoch, mae_error, save_dir)
        if epoch == last_epoch:
            raise Killed

    monkeypatch.setattr(ResumableTrainer, "save_checkpoint", save_then_die)


@pytest.mark.slow
def test_killed_run_resumes_after_its_last_epoch_with_the_same_weights(dataset, tmp_path, monkeypatch):
    from mlip_exafs.potentials import load_potential

    run = settings(dataset, 10, epochs=3, freeze="readout")  # with a validation split: the best epoch is kept
    unbroken = finetune(run, tmp_path / "unbroken")
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 1)
        with pytest.raises(Killed):
            finetune(run, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "finetune.json").exists()
    resumed = finetune(run, tmp_path / "resumed")
    record = json.loads((tmp_path / "resumed" / "finetune.json").read_text())
    assert record["resumed_after_epoch"] == 2 and "resumed after epoch 2 of 3" in (tmp_path / "resumed" / "train.log").read_text()
    assert record["kept_epoch"] == json.loads((tmp_path / "unbroken" / "finetune.json").read_text())["kept_epoch"]
    assert (tmp_path / "resumed" / "training_curve.csv").read_text() == (tmp_path / "unbroken" / "training_curve.csv").read_text()
    a, b = load_potential(unbroken).model.state_dict(), load_potential(resumed).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # other inputs in the same folder: the old epochs are not resumed
    finetune(settings(dataset, 10, epochs=2, freeze="readout"), tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "finetune.json").read_text())["resumed_after_epoch"] == 0


def test_resume_restores_a_best_force_copy_lost_in_a_kill(tmp_path):
    """Killed between an epoch file and its best-force copy: the resume makes the copy, so the kept epoch is right."""
    from types import SimpleNamespace

    from mlip_exafs.finetune.resume import _restore_best_force_copy

    (tmp_path / "epoch1_e1_f2_s3_mNA.pth.tar").write_bytes(b"epoch 1")
    (tmp_path / "bestF_epoch0_e1_f3_s3_mNA.pth.tar").write_bytes(b"epoch 0")
    trainer = SimpleNamespace(targets="efs", training_history={"f": {"val": [0.3, 0.2]}})
    _restore_best_force_copy(trainer, tmp_path, tmp_path / "epoch1_e1_f2_s3_mNA.pth.tar")
    assert [p.name for p in tmp_path.glob("bestF_*")] == ["bestF_epoch1_e1_f2_s3_mNA.pth.tar"]
    assert (tmp_path / "bestF_epoch1_e1_f2_s3_mNA.pth.tar").read_bytes() == b"epoch 1"
    trainer.training_history["f"]["val"] = [0.3, 0.2, 0.25]  # a copy that is current stays as it is
    _restore_best_force_copy(trainer, tmp_path, tmp_path / "epoch2_e1_f2_s3_mNA.pth.tar")
    assert [p.name for p in tmp_path.glob("bestF_*")] == ["bestF_epoch1_e1_f2_s3_mNA.pth.tar"]


def test_energy_scale_trains_one_scalar_towards_stiffer_labels(dataset, tmp_path):
    out = tmp_path / "scale"
    finetune(settings(dataset, 1, epochs=3, freeze="energy-scale"), out)
    record = json.loads((out / "finetune.json").read_text())
    assert record["trainable_parameters"] == 1
    assert record["energy_scale"] > 1.0  # labels are 10 % stiffer than CHGNet
    assert record["train_loss_after"] < record["train_loss_before"]


def test_readout_freeze_with_validation_split_keeps_best_force_epoch(dataset, tmp_path):
    out = tmp_path / "readout"
    finetune(settings(dataset, 10, epochs=2, freeze="readout"), out)
    record = json.loads((out / "finetune.json").read_text())
    assert len(record["uids_val"]) == 1 and len(record["uids_train"]) == 9
    assert record["kept_by"] == "best validation force MAE" and 1 <= record["kept_epoch"] <= 2
    assert 0 < record["trainable_parameters"] < 100_000


def test_cli_finetune_too_many_structures_is_one_line_error(dataset, tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    run = subprocess.run([sys.executable, "-m", "mlip_exafs", "finetune", "--train", str(dataset), "--n", "50", "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.startswith("error:") and "n = 50" in run.stderr and run.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--potential", "mace-mp-0"], "unknown potential 'mace-mp-0'; use one of: chgnet, chgnet-0.2.0"),
        (["--potential", "sevennet-0", "--freeze", "readout"], "SevenNet fine-tuning supports --freeze none only, not 'readout'"),
    ],
    ids=["unknown-potential", "sevennet-freeze"],
)
def test_finetune_of_a_potential_it_cannot_train_writes_nothing(capsys, tmp_path, data, args, message):
    out = tmp_path / "ft"
    proc = cli(capsys, "finetune", "--train", data, "--n", "1", *args, "--out", out)
    assert_one_line_error(proc, message)
    assert_nothing_written(out)


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 300) -> None:
    import time

    deadline = time.time() + timeout_s
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_finetune_killed_then_rerun_equals_an_uninterrupted_run(tmp_path, data):
    """kill -9 mid-training, rerun: it resumes after the last finished epoch and ends with the same weights, bit for
    bit, and the same validation numbers as a run never stopped.

    The two complete runs also show that fine-tuning twice with one seed is deterministic.
    """
    import torch

    from mlip_exafs.files import read_json
    from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune
    from mlip_exafs.potentials import load_potential
    from mlip_exafs.validate import validate

    settings = FinetuneSettings(train=str(data), n=2, seed=3, recipe=FinetuneRecipe(epochs=6))
    finetune(settings, tmp_path / "a")
    cmd = [sys.executable, "-m", "mlip_exafs", "finetune", "--train", str(data), "--n", "2", "--seed", "3", "--epochs", "6", "--out", str(tmp_path / "b")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MLIP_EXAFS_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _kill_when(proc, lambda: any((tmp_path / "b" / ".work" / "trainer").glob("epoch*.pth.tar")))  # after the first epoch
    assert not (tmp_path / "b" / "finetune.json").exists()
    finetune(settings, tmp_path / "b")
    assert 1 <= read_json(tmp_path / "b" / "finetune.json")["resumed_after_epoch"] < 6
    weights = [load_potential(tmp_path / run / "model.pt").model.state_dict() for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    metrics = [validate(tmp_path / run / "model.pt", data, tmp_path / run / "validate") for run in ("a", "b")]
    assert metrics[0] == metrics[1]
    assert read_json(tmp_path / "a" / "validate" / "validate.json") == read_json(tmp_path / "b" / "validate" / "validate.json")


def test_second_finetune_into_the_same_folder_is_refused(capsys, tmp_path, data):
    """Two trainers into one --out would share the work folder and its checkpoint; the second stops at once."""
    from mlip_exafs.files import writer_lock

    out = tmp_path / "out"
    with writer_lock(out, "finetune"):
        proc = cli(capsys, "finetune", "--train", data, "--n", "1", "--epochs", "1", "--out", out)
        assert_one_line_error(proc, f"another finetune (pid {os.getpid()}) is running into")
        assert [p.name for p in out.iterdir()] == [".finetune.lock"]


def test_the_run_identity_takes_the_labels_not_the_path_they_came_by():
    """--train w3, ./w3 or the same dataset on another machine: one run (a killed one resumes its epochs)."""
    from mlip_exafs.finetune import inputs_hash_of

    inputs = {"potential": "chgnet", "train": "w3", "pool_labels_sha256": "abc", "n": 1, "seed": 0}
    assert inputs_hash_of(inputs) == inputs_hash_of({**inputs, "train": "/home/me/w3"})
    assert inputs_hash_of(inputs) != inputs_hash_of({**inputs, "pool_labels_sha256": "abd"})


def test_a_chgnet_run_without_a_finite_validation_error_says_it_diverged(tmp_path):
    from mlip_exafs.finetune.chgnet import best_force_checkpoint

    (tmp_path / "trainer").mkdir()
    with pytest.raises(UserError, match="fine-tuning diverged \\(the Trainer stopped with a NaN loss.*lower"):
        best_force_checkpoint(tmp_path / "trainer")
