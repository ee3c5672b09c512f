"""study/checks.py: every setting a stage would refuse fails when the config loads, and a finished step survives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import W_FOIL, assert_nothing_written, assert_one_line_error, cli


BASE = {
    "name": "checks",
    "structure": "w-bcc",
    "absorber": "W",
    "pristine": ["chgnet"],
    "md": {"supercell": "4x4x4", "timestep_fs": 2, "equilibration_fs": 10, "production_fs": 40, "snapshot_every_fs": 10},
    "exafs": {"edge": "L3", "rmax_a": 5.0, "engine": "fast"},
}
FINETUNE = {"dataset": "w-bcc", "finetune": {"n": [1, 2], "seeds": [0], "epochs": 1}}
EXPERIMENT = {"experiment": {"file": str(W_FOIL), "temperature_k": 300, "fit_shells": 0}}


def _merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


CASES = {
    # the step's stage would refuse these only when the step ran, hours in
    "md-timestep-above-20-fs": ({"md": {"timestep_fs": 50}}, ["'md.timestep_fs'", "less than or equal to 20"]),  # the plan shares MdSettings' bounds
    "md-not-whole-timesteps": ({"md": {"production_fs": 41}}, ["study step md-chgnet", "production time (md.production_fs) 41 fs is not a whole number of 2 fs timesteps"]),
    "md-production-below-one-snapshot": ({"md": {"production_fs": 10, "snapshot_every_fs": 20}},  # md's own message, in the study's keys (#25)
                                         ["study step md-chgnet", "lengthen md.production_fs or shorten md.snapshot_every_fs"]),
    "finetune-n-zero": ({**FINETUNE, "finetune": {"n": [0], "seeds": [0]}}, ["study step finetune-chgnet-ft-n0-s0", "finetune.n input should be greater than or equal to 1"]),
    "finetune-seed-negative": ({**FINETUNE, "finetune": {"n": [1], "seeds": [-1]}}, ["'finetune.seeds.0' = -1 is not a valid seed"]),
    "finetune-base-not-trainable": ({**FINETUNE, "finetune": {"base": "nope", "n": [1], "seeds": [0]}}, ["finetune.base", "unknown potential 'nope'"]),
    "finetuned-n-not-fine-tuned": ({**FINETUNE, "md": {"finetuned_n": [5]}}, ["md.finetuned_n asks for the MD of the N = 5 fine-tune", "add 5 to finetune.n"]),
    "finetune-n-twice": ({**FINETUNE, "finetune": {"n": [1, 1], "seeds": [0]}}, ["finetune.n lists 1 twice"]),
    "finetune-no-seeds": ({**FINETUNE, "finetune": {"n": [1], "seeds": []}}, ["finetune.seeds is empty"]),
    "kmin-above-kmax": (_merge(EXPERIMENT, {"experiment": {"kmin_inv_a": 14, "kmax_inv_a": 3}}), ["experiment.kmin_inv_a 14 Å⁻¹ must be below experiment.kmax_inv_a 3 Å⁻¹"]),
    "rmax-negative": (_merge(EXPERIMENT, {"experiment": {"rmax_a": -1}}), ["'experiment.0.rmax_a' input should be greater than 0"]),  # the plan shares CompareSettings' bounds
    "r-window-tiny": (_merge(EXPERIMENT, {"experiment": {"rmin_a": 2.0, "rmax_a": 2.05}}), ["independent points for 2 fitted parameters"]),
    "experiment-is-a-folder": ({"experiment": {"file": "{tmp}", "temperature_k": 300}}, ["is a folder, not a file"]),
    "experiment-in-kev": ({"experiment": {"file": "{tmp}/kev.dat", "temperature_k": 300}}, ["look like keV"]),
    "pristine-unknown": ({"pristine": ["mace-nope"]}, ["unknown potential 'mace-nope'"]),
    "edge-the-absorber-lacks": ({"exafs": {"edge": "M7"}}, ["(exafs settings)", "has no M7 edge"]),
    "absorber-not-in-structure": ({"absorber": "Mo"}, ["absorber 'Mo' is not in the structure w-bcc (it has W)"]),
    "rmax-without-room-for-npt": ({"md": {"npt_fs": 100}, "exafs": {"rmax_a": 6.25}},  # 6.33 Å half-width; an NPT may shrink it
                                  ["exafs.rmax_a = 6.25 Å exceeds 98% of half the MD supercell's width (its NPT may shrink the cell) (6.20 Å"]),
    "md-temperature-inf": ({"md": {"temperature_k": ".inf"}}, ["'md.temperature_k' is inf, not a finite number"]),
    # the YAML itself
    "profiles-a-list": ({"profiles": ["quick"]}, ["'profiles' is a list, not a mapping"]),
    "profiles-a-string": ({"profiles": "quick"}, ["'profiles' is a string, not a mapping"]),
    "profile-null": ({"profiles": {"quick": None}}, ["profile 'quick' is empty (null), not a mapping of settings"]),
}


def _write_config(tmp: Path, change: dict) -> Path:
    import numpy as np

    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    np.savetxt(tmp / "kev.dat", np.column_stack([energy / 1000.0, np.log(i0 / itrans)]))
    text = yaml.safe_dump(_merge(BASE, change)).replace("{tmp}", str(tmp)).replace("'.inf'", ".inf")
    path = tmp / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, needles", CASES.values(), ids=CASES.keys())
def test_a_setting_a_stage_would_refuse_fails_when_the_config_loads(capsys, tmp_path, change, needles):
    config = _write_config(tmp_path, change)
    out = tmp_path / "out"
    proc = cli(capsys, "study", config, "--out", out, "--profile", "quick") if "profile-null" in str(change) or "profiles" in change else \
        cli(capsys, "study", config, "--out", out)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2
    assert_nothing_written(out)


def test_duplicate_keys_in_a_study_config_name_key_and_line(capsys, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(BASE) + "absorber: Mo\n")
    proc = cli(capsys, "study", path, "--out", tmp_path / "out")
    assert_one_line_error(proc, "key 'absorber' is given twice, on lines 1 and")
    assert_nothing_written(tmp_path / "out")


def test_a_finished_step_survives_a_rerun_with_a_bad_setting(capsys, tmp_path):
    """A rerun whose changed setting a stage refuses used to remove the finished step's folder first (its inputs hash changed)."""
    out = tmp_path / "out"
    finished = out / "steps" / "md-chgnet"
    finished.mkdir(parents=True)
    (finished / "snapshots.extxyz").write_text("frames of a 10 h MD\n")
    (finished / "step.json").write_text(json.dumps({"step": "md-chgnet", "inputs_hash": "0123456789abcdef", "result": {}}))
    (finished / ".inputs_hash").write_text("0123456789abcdef")
    before = {p.name: p.read_bytes() for p in finished.iterdir()}
    for change in ({"md": {"timestep_fs": 50}}, _merge(EXPERIMENT, {"experiment": {"kmin_inv_a": 14, "kmax_inv_a": 3}}), {**FINETUNE, "md": {"finetuned_n": [5]}}):
        proc = cli(capsys, "study", _write_config(tmp_path, change), "--out", out)
        assert_one_line_error(proc)
        assert {p.name: p.read_bytes() for p in finished.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["steps"]  # no study.json, no lock left behind


def test_a_good_config_passes_every_check(tmp_path):
    from mlip_exafs.study.checks import check_study
    from mlip_exafs.study.config import load_study_config

    check_study(load_study_config(_write_config(tmp_path, {**FINETUNE, **EXPERIMENT, "md": {"finetuned_n": [2]}})))


def test_relative_paths_are_relative_to_the_yaml_wherever_the_study_starts(tmp_path, monkeypatch):
    """A structure file missing beside the YAML is not looked for in the current folder; names stay names."""
    from mlip_exafs.study.config import load_study_config

    config_dir, elsewhere = tmp_path / "config", tmp_path / "elsewhere"
    config_dir.mkdir(), elsewhere.mkdir()
    (elsewhere / "cu.cif").write_text("not this one")
    monkeypatch.chdir(elsewhere)
    for structure, dataset, expected in (("cu.cif", "data", (config_dir / "cu.cif", config_dir / "data")), ("ws2", "ws2", ("ws2", "ws2"))):
        (config_dir / "s.yaml").write_text(yaml.safe_dump({"name": "x", "structure": structure, "absorber": "W", "dataset": dataset}))
        config = load_study_config(config_dir / "s.yaml")
        assert (config.structure, config.dataset) == tuple(map(str, expected))


def test_a_dataset_block_samples_the_study_structure_and_refuses_another_material(capsys, tmp_path):
    """SampleSpec's own default structure is WS2: a W study's dataset block used to sample and label WS2."""
    from mlip_exafs.study.config import load_study_config

    block = {"train": {"supercell": "1x1x1", "seed": 1}, "test": {"supercell": "1x1x1", "seed": 2}}
    path = _write_config(tmp_path, {"dataset": block})
    config = load_study_config(path)
    assert (config.dataset.train.structure, config.dataset.test.structure) == ("w-bcc", "w-bcc")
    path = _write_config(tmp_path, {"dataset": {**block, "test": {**block["test"], "structure": "ws2"}}})
    out = tmp_path / "out"
    assert_one_line_error(cli(capsys, "study", path, "--out", out), "dataset.test.structure holds S-W structures but the study's structure is W")
    assert_nothing_written(out)


def test_a_checkpoint_file_cannot_be_a_study_potential(capsys, tmp_path):
    """Steps are cached by the potential's spec: a checkpoint swapped under the same name would reuse old results."""
    for change in ({"pristine": ["m.pt"]}, {**FINETUNE, "finetune": {"base": "m.pth", "n": [1], "seeds": [0]}}):
        assert_one_line_error(cli(capsys, "study", _write_config(tmp_path, change), "--out", tmp_path / "out"),
                              "is a checkpoint file, and a study's steps are cached by the potential's name, not its content")


def test_a_path_integral_temperature_series_needs_a_fixed_cell(capsys, tmp_path):
    """The series' default NPT would stop every path-integral MD step at its start (i-PI runs NVT)."""
    change = {"md": {"nuclei": "path-integral", "temperatures_k": [300, 10]}}
    assert_one_line_error(cli(capsys, "study", _write_config(tmp_path, change), "--out", tmp_path / "out"),
                          "path-integral MD runs at a fixed cell", "set md.npt_fs: 0")
    from mlip_exafs.study.config import load_study_config

    assert load_study_config(_write_config(tmp_path, {"md": {"nuclei": "path-integral", "temperatures_k": [300, 10], "npt_fs": 0}}))
