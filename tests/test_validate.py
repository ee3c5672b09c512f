"""Validation metrics against DFT labels: slope, cMAE, energy reference, files, CLI."""

import sys
import json
import os
import subprocess

import numpy as np
import pytest

from fake_dft import STIFFNESS, rattled_ws2, write_fake_db
from mlip_exafs.errors import UserError
from mlip_exafs.validate import METRIC_KEYS, corrected_force_mae, fit_element_offsets_ev, softening_slope, validate


def test_slope_is_one_for_identical_forces_and_0_8_for_scaled():
    forces = np.random.default_rng(0).normal(size=(50, 3))
    assert softening_slope(forces, forces) == pytest.approx(1.0)
    assert softening_slope(0.8 * forces, forces) == pytest.approx(0.8)
    assert corrected_force_mae(0.8 * forces, forces, 0.8) == pytest.approx(0.0, abs=1e-12)


def test_slope_refuses_zero_reference_forces():
    with pytest.raises(UserError):
        softening_slope(np.ones((3, 3)), np.zeros((3, 3)))


def test_offsets_one_composition_give_one_constant_per_atom():
    frames = rattled_ws2(3, seed=0)
    residual = np.array([6 * -800.0, 6 * -800.0, 6 * -800.0]) + np.array([0.06, 0.0, -0.06])
    offsets, method = fit_element_offsets_ev(frames, residual)
    assert offsets["W"] == offsets["S"] == pytest.approx(-800.0)
    assert "one constant per atom" in method


def test_offsets_two_compositions_separate_the_elements():
    from mlip_exafs.structures import load_structure

    frames = [load_structure("ws2"), load_structure("w-bcc")]  # W2S4 and W2
    mu = {"W": -900.0, "S": -300.0}
    residual = np.array([2 * mu["W"] + 4 * mu["S"], 2 * mu["W"]])
    offsets, _ = fit_element_offsets_ev(frames, residual)
    assert offsets["W"] == pytest.approx(mu["W"]) and offsets["S"] == pytest.approx(mu["S"])


@pytest.fixture(scope="module")
def fake_test_db(tmp_path_factory):
    return write_fake_db(tmp_path_factory.mktemp("data") / "test.db", 4, seed=2)


def test_validate_pretrained_sees_the_known_softening(fake_test_db, tmp_path):
    metrics = validate("chgnet", fake_test_db, tmp_path / "val")
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["n_test_structures"] == 4
    assert metrics["softening_slope"] == pytest.approx(1 / STIFFNESS, rel=1e-3)
    assert metrics["cmae_ev_a"] < 1e-4 < metrics["force_mae_ev_a"]  # errors are a pure scaling
    assert metrics["force_rmse_ev_a"] >= metrics["force_mae_ev_a"]
    assert metrics["stress_mae_gpa"] > 0
    assert 0 < metrics["energy_mae_mev_atom"] < 50  # the -800 eV/atom shift is removed by the offset
    for name in ("validate.json", "validate.provenance.json", "parity_energy.png", "parity_forces.png", "parity_stress.png"):
        assert (tmp_path / "val" / name).stat().st_size > 0
    prov = json.loads((tmp_path / "val" / "validate.provenance.json").read_text())
    assert prov["energy_offsets_ev"]["W"] == pytest.approx(prov["energy_offsets_ev"]["S"])
    # a rerun with the same inputs reuses the result instead of recomputing
    before = (tmp_path / "val" / "validate.json").stat().st_mtime_ns
    assert validate("chgnet", fake_test_db, tmp_path / "val") == metrics
    assert (tmp_path / "val" / "validate.json").stat().st_mtime_ns == before


def test_errors_by_group_split_the_test_set_by_how_structures_were_made(fake_test_db, tmp_path):
    """Groups from the sampling info; each keeps the known slope; atom-weighted they give the overall MAE."""
    from mlip_exafs.dataset import load_structures
    from mlip_exafs.validate import dft_labels, errors_by_group, predict_labels

    frames = load_structures(fake_test_db, "test")
    for i, atoms in enumerate(frames):
        atoms.info.update({"method": "md", "temperature_k": 450.0} if i % 2 else {"method": "rattled"})
    dft, pred = dft_labels(frames), predict_labels("chgnet", frames)
    groups = errors_by_group(frames, dft, pred)
    assert list(groups) == ["md 450 K", "rattled"]
    assert [g["n_test_structures"] for g in groups.values()] == [2, 2]
    assert all(g["softening_slope"] == pytest.approx(1 / STIFFNESS, rel=1e-3) for g in groups.values())
    overall = validate("chgnet", fake_test_db, tmp_path / "val")["force_mae_ev_a"]
    assert np.mean([g["force_mae_ev_a"] for g in groups.values()]) == pytest.approx(overall, rel=1e-6)  # equal atom counts
    assert json.loads((tmp_path / "val" / "validate_by_group.json").read_text()).keys() == {"not recorded"}
    frames[0].calc.results["forces"][:] = 0.0  # a perfect cell alone in its group: no slope, no error
    frames[0].info["method"] = "perfect"
    assert errors_by_group(frames, dft_labels(frames), pred)["perfect"]["softening_slope"] is None


@pytest.mark.slow
def test_cli_validate_writes_json_and_reports_errors_in_one_line(fake_test_db, tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    ok = subprocess.run([sys.executable, "-m", "mlip_exafs", "validate", "--test", str(fake_test_db), "--out", str(tmp_path / "v")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "softening slope 0.909" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "mlip_exafs", "validate", "--test", str(tmp_path / "missing.db"), "--out", str(tmp_path / "v2")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error:") and bad.stderr.count("\n") == 1
