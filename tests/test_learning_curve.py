"""Learning curve: the recommendation rule (pure) and a tiny end-to-end run with reuse."""

import sys
import json
import os
import subprocess

import pytest

from fake_dft import write_fake_dataset
from mlip_exafs.learning_curve import force_mae_within, recommend_n, slope_within, summarize_by_n


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
    assert entry["force_mae_ev_a_std"] == pytest.approx(0.1)


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
    stamp = (out / "n1-s0" / "model.pt").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert (out / "n1-s0" / "model.pt").stat().st_mtime_ns == stamp
    too_many = subprocess.run(cmd[:8] + ["--n", "1,9"] + cmd[10:], capture_output=True, text=True, env=env)
    assert too_many.returncode == 2 and "[9]" in too_many.stderr
