"""Learning curve: the recommendation rule (pure) and a tiny end-to-end run with reuse."""

import sys
import json
import os
import subprocess

import pytest

from conftest import assert_nothing_written, assert_one_line_error, cli
from fake_dft import write_fake_dataset
from mlip_exafs.errors import UserError
from mlip_exafs.finetune import FinetuneRecipe
from mlip_exafs.learning_curve import LearningCurveSettings, force_mae_within, learning_curve_steps, recommend_n, slope_within, study_config, summarize_by_n
from mlip_exafs.study.config import load_study_config
from mlip_exafs.study.pipeline import build_steps
from mlip_exafs.study.steps import all_hashes


def summary_row(n, mae, slope):
    return {"n": n, "force_mae_ev_a_mean": mae, "softening_slope_mean": slope}


def test_recommend_smallest_n_meeting_error_and_slope():
    summary = [summary_row(1, 0.20, 0.90), summary_row(5, 0.105, 0.95), summary_row(10, 0.108, 0.98), summary_row(100, 0.100, 1.00)]
    assert recommend_n(summary) == 10  # N=5 is accurate enough but still too soft
    assert recommend_n(summary, (force_mae_within(0.10),)) == 5
    assert recommend_n([summary_row(1, 0.2, 0.8), summary_row(2, 0.1, 0.8)]) is None
    assert recommend_n([]) is None


def test_rule_takes_extra_criteria():
    summary = [dict(summary_row(n, 0.1, 1.0), exafs_r_factor=r) for n, r in ((1, 0.05), (5, 0.01), (10, 0.01))]
    exafs_ok = lambda at_n, at_max: at_n["exafs_r_factor"] <= 0.02  # noqa: E731
    assert recommend_n(summary, (force_mae_within(), slope_within(), exafs_ok)) == 5


def test_summary_averages_over_seeds():
    rows = [{"n": 2, "seed": s, "force_mae_ev_a": m, "softening_slope": 1.0, "energy_mae_mev_atom": 1.0, "cmae_ev_a": 0.1} for s, m in ((0, 0.1), (1, 0.3))]
    (entry,) = summarize_by_n(rows)
    assert entry["n_seeds"] == 2
    assert entry["force_mae_ev_a_mean"] == pytest.approx(0.2)
    assert entry["force_mae_ev_a_std"] == pytest.approx(0.02 ** 0.5)  # the sample std: a few seeds are a sample of draws


@pytest.mark.slow
def test_cli_learning_curve_runs_reuses_and_records_forgetting(tmp_path):
    dataset = write_fake_dataset(tmp_path / "ds", n_train=3, n_test=2)
    out = tmp_path / "lc"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "mlip_exafs", "learning-curve", "--train", str(dataset), "--test", str(dataset), "--n", "1,2", "--seeds", "0", "--epochs", "1", "--out", str(out),
           "--forgetting-test", str(dataset)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    result = json.loads((out / "learning_curve.json").read_text())
    assert [(r["n"], r["seed"]) for r in result["runs"]] == [(1, 0), (2, 0)]
    run = result["runs"][0]
    assert {"force_mae_ev_a", "softening_slope", "epochs", "seconds_per_structure_epoch"} <= set(run)
    assert set(run["forgetting"]) == {"energy_shift_mev_atom", "force_mad_ev_a", "stress_mad_gpa", "force_slope_vs_base", "dft"}
    assert run["forgetting"]["dft"]["n_test_structures"] == result["pretrained_forgetting_dft"]["n_test_structures"] == 2
    assert result["pretrained"]["softening_slope"] == pytest.approx(1 / 1.1, rel=1e-3)
    assert "recommended_n" in result and (out / "learning_curve.png").exists()
    model = out / "steps" / "finetune-chgnet-ft-n1-s0" / "model.pt"  # the study's step folder: the same cache as 'study --only learning-curve'
    assert run["model"] == str(model)
    stamp = model.stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert model.stat().st_mtime_ns == stamp
    too_many = subprocess.run(cmd[:8] + ["--n", "1,9"] + cmd[10:], capture_output=True, text=True, env=env)
    assert too_many.returncode == 2 and "[9]" in too_many.stderr


def test_steps_are_the_studys_learning_curve_steps_with_the_same_hashes(data, tmp_path):
    """Same cache layout as 'study --only learning-curve': the same step names and inputs hashes, so either reuses the other's results."""
    settings = LearningCurveSettings(train=str(data), test=str(data), ns=[1, 2], seeds=[0, 1], recipe=FinetuneRecipe(epochs=3, freeze="readout"))
    config_file = tmp_path / "study.yaml"
    config_file.write_text(f"name: any\nstructure: ws2\nabsorber: W\ndataset: {data}\n"
                           "finetune: {base: chgnet, n: [1, 2], seeds: [0, 1], freeze: readout, epochs: 3}\nmd: {finetuned_n: [1]}\n")
    study = build_steps(load_study_config(config_file))
    ours = learning_curve_steps(study_config(settings))
    assert {s.action for s in ours} == {"finetune", "validate"} and len(ours) == 1 + 2 * 4
    study_hashes = all_hashes(study)
    assert {s.name: h for s, h in zip(ours, all_hashes(ours).values())} == {s.name: study_hashes[s.name] for s in ours}


@pytest.mark.parametrize("change, needle", [({"test": "elsewhere"}, "give the same dataset to both"),
                                            ({"recipe": FinetuneRecipe(learning_rate=1e-2)}, "learning_rate"),
                                            ({"potential": "runs/ft/model.pt"}, "is not a registered CHGNet or SevenNet name"),
                                            ({"potential": "python:ase.calculators.emt:EMT"}, "is not a registered CHGNet or SevenNet name")])
def test_what_the_study_steps_cannot_express_is_refused_before_any_work(data, change, needle):
    settings = LearningCurveSettings(**{"train": str(data), "test": str(data), "ns": [1], **change})
    with pytest.raises(UserError, match=needle):
        study_config(settings)


@pytest.mark.parametrize("options, needles", [
    (["--n", "1,1", "--seeds", "0"], ["--n", "gives 1 more than once"]),
    (["--n", "1", "--seeds", "0,2,0"], ["--seeds", "gives 0 more than once"]),
    (["--n", "1", "--seeds", "0", "--forgetting-test", "no-such-dataset"], ["no-such-dataset"]),
], ids=["n-twice", "seed-twice", "forgetting-test-unknown"])
def test_learning_curve_refuses_before_any_fine_tune(capsys, data, tmp_path, options, needles):
    """A repeated N ran one step twice (the second found it locked after the first's hours); an unknown forgetting
    test was read only after every fine-tune."""
    out = tmp_path / "lc"
    assert_one_line_error(cli(capsys, "learning-curve", "--train", data, "--out", out, *options), *needles)
    assert_nothing_written(out)


def test_learning_curve_out_that_is_a_file_and_test_defaulting_to_train(capsys, data, tmp_path):
    target = tmp_path / "lc"
    target.write_text("not a folder")
    assert_one_line_error(cli(capsys, "learning-curve", "--train", data, "--n", "1", "--out", target), "is an existing file, not a folder")
    settings = LearningCurveSettings(train=str(data), test=str(data))
    assert settings.ns == [1, 2, 5, 10, 20, 50, 100]
