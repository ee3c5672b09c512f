"""Where a study stands (mlip_exafs.study.progress, `mlip-exafs progress`): read from its folder, nothing written."""

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, cli
from mlip_exafs.files import write_json, write_text
from mlip_exafs.study.config import load_study_config
from mlip_exafs.study.pipeline import build_steps
from mlip_exafs.study.progress import study_progress
from mlip_exafs.study.steps import HEARTBEAT_S, all_hashes

PRISTINE_ONLY = {"name": "progress", "structure": "ws2", "absorber": "W", "pristine": ["chgnet"],
                 "md": {"supercell": "3x3x1", "temperatures_k": [300, 10], "production_fs": 40, "snapshot_every_fs": 10},
                 "exafs": {"edge": "L3", "rmax_a": 4.0, "engine": "fast"}}


@pytest.fixture
def study(tmp_path) -> tuple[Path, dict[str, str]]:
    """A study folder as `study` leaves it, without running anything: its record and each step's hash."""
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(PRISTINE_ONLY))
    config = load_study_config(tmp_path / "study.yaml")
    hashes = all_hashes(build_steps(config))
    root = tmp_path / "out"
    write_json(root / "study.json", {"config": json.loads(config.model_dump_json()), "profile": None, "step_inputs": hashes})
    return root, hashes


def _started(root: Path, name: str, digest: str, started: float, alive_until: float, earlier_s: float = 0.0, log: str = "") -> None:
    folder = root / "steps" / name
    write_text(folder / ".inputs_hash", digest)
    write_json(folder / ".run.json", {"started": started, "alive_until": alive_until, "earlier_s": earlier_s})
    write_text(folder / "step.log", log)


def test_each_step_is_finished_running_interrupted_or_waiting(study):
    root, hashes = study
    now = time.time()
    write_json(root / "steps" / "md-chgnet" / "step.json", {"inputs_hash": hashes["md-chgnet"], "wall_s": 120.5, "result": {}})
    _started(root, "md@10K-chgnet", hashes["md@10K-chgnet"], now - 600, now - 5, earlier_s=3600,
             log="loading chgnet\nMD 10 K: 10/20, ETA 12:00\rMD 10 K: 15/20, ETA 12:01\x1b[0m\r\n")
    _started(root, "analyze-chgnet", hashes["analyze-chgnet"], now - 900, now - 10 * HEARTBEAT_S, log="reading snapshots\n")
    _started(root, "exafs-chgnet", "an older inputs hash", now - 900, now - 5)  # its inputs changed: it will start again
    by_name = {s.name: s for s in study_progress(root, now)}
    assert list(by_name) == list(hashes)  # every step, in the pipeline's order
    assert (by_name["md-chgnet"].state, by_name["md-chgnet"].spent_s) == ("finished", 120.5)
    running = by_name["md@10K-chgnet"]
    assert running.state == "running" and running.spent_s == pytest.approx(3600 + 600)
    assert running.last_line == "MD 10 K: 15/20, ETA 12:01"  # the progress bar's last rewrite, colour codes removed
    interrupted = by_name["analyze-chgnet"]
    assert interrupted.state == "interrupted" and interrupted.spent_s == pytest.approx(900 - 10 * HEARTBEAT_S)
    assert interrupted.last_line == "(stopped) reading snapshots"  # no ETA of a dead run read as current
    assert {name for name, s in by_name.items() if s.state == "waiting"} == {"exafs-chgnet", "analyze@10K-chgnet", "exafs@10K-chgnet"}
    assert by_name["exafs-chgnet"].spent_s == 0.0 and by_name["exafs-chgnet"].last_line is None


def test_the_cli_counts_states_and_says_how_to_resume(study, capsys):
    root, hashes = study
    now = time.time()
    _started(root, "md-chgnet", hashes["md-chgnet"], now - 7200, now - 3600, log="MD 300 K: 5/20\n")
    out = cli(capsys, "progress", str(root)).stdout
    assert f"{len(hashes)} steps; 0 finished (0.0 step-hours), 0 running, 0 failed, 1 interrupted, {len(hashes) - 1} waiting" in out
    assert "md-chgnet" in out and "1.00 h" in out and "MD 300 K: 5/20" in out
    assert "rerun the same 'mlip-exafs study' command" in out
    listed = json.loads(cli(capsys, "progress", str(root), "--json").stdout)
    assert [(s["name"], s["state"]) for s in listed][:2] == [("md-chgnet", "interrupted"), ("analyze-chgnet", "waiting")]


def test_a_folder_without_a_study_record_is_a_one_line_error(tmp_path, capsys):
    assert_one_line_error(cli(capsys, "progress", str(tmp_path)), "has no study.json", "mlip-exafs study CONFIG")


def test_progress_reads_a_study_whose_dataset_is_not_at_hand(tmp_path, capsys):
    """A study read where its labels are not (still being labelled, another machine): the hashes study.json recorded."""
    from fake_dft import write_fake_dataset

    write_fake_dataset(tmp_path / "data", n_train=2, n_test=1)
    config_dict = {**PRISTINE_ONLY, "dataset": "data", "finetune": {"base": "chgnet", "n": [1], "seeds": [0], "epochs": 1}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config_dict))
    config = load_study_config(tmp_path / "study.yaml")
    hashes = all_hashes(build_steps(config))
    root = tmp_path / "out"
    write_json(root / "study.json", {"config": json.loads(config.model_dump_json()), "profile": None, "step_inputs": hashes})
    write_json(root / "steps" / "validate-chgnet" / "step.json", {"inputs_hash": hashes["validate-chgnet"], "wall_s": 14.0, "result": {}})
    shutil.rmtree(tmp_path / "data")
    by_name = {s.name: s.state for s in study_progress(root)}
    assert by_name["validate-chgnet"] == "finished" and by_name["finetune-chgnet-ft-n1-s0"] == "waiting"


def test_a_step_that_stopped_with_an_error_is_failed_and_says_why(study, capsys):
    """Its child wrote .step-error.json: a rerun stops there again, so it is not 'interrupted' (rerun to resume)."""
    root, hashes = study
    now = time.time()
    _started(root, "md-chgnet", hashes["md-chgnet"], now - 7200, now - 3600, log="MD 300 K: 5/20, ETA 23:00\n")
    write_json(root / "steps" / "md-chgnet" / ".step-error.json", {"message": "the MD blew up at step 12; lower the timestep"})
    (step,) = [s for s in study_progress(root, now) if s.name == "md-chgnet"]
    assert step.state == "failed" and step.last_line == "error: the MD blew up at step 12; lower the timestep"
    out = cli(capsys, "progress", str(root)).stdout
    assert "1 failed" in out and "failed steps stop again when rerun" in out


def test_a_step_whose_child_exited_is_not_running_even_with_a_fresh_heartbeat(study):
    """A study stopped by Ctrl-C, SIGTERM or an error showed its steps 'running' for up to a minute after: the step's
    run record now says that its child exited."""
    from mlip_exafs.study.steps import _heartbeat

    root, hashes = study
    now = time.time()
    _started(root, "md-chgnet", hashes["md-chgnet"], now - 600, now - 5, log="MD 300 K: 10/20\n")
    assert {s.name: s for s in study_progress(root, now)}["md-chgnet"].state == "running"
    _heartbeat(root / "steps" / "md-chgnet", ended=True)
    assert {s.name: s for s in study_progress(root, time.time())}["md-chgnet"].state == "interrupted"
