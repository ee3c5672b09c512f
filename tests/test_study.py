"""A whole study on tiny data: end to end, cached rerun, resume after kill, Dask = local, report renders."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import assert_nothing_written, assert_one_line_error, cli, requires_cp2k, run_cli
from mlip_exafs.errors import UserError
from fake_dft import write_fake_dataset, write_fake_db

TINY_STUDY = {
    "name": "tiny",
    "structure": "ws2",
    "absorber": "W",
    "dataset": "data",
    "pristine": ["chgnet"],
    "finetune": {"base": "chgnet", "n": [1, 2], "seeds": [0], "epochs": 1},
    "md": {"finetuned_n": [2], "supercell": "3x3x1", "temperature_k": 300, "timestep_fs": 2,
           "equilibration_fs": 10, "production_fs": 40, "snapshot_every_fs": 10},
    "exafs": {"edge": "L3", "rmax_a": 4.0, "engine": "fast"},
}


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_dataset(root / "data", n_train=3, n_test=2)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_STUDY))
    return root


def _numbers(summary: dict) -> dict:
    return {"potentials": summary["potentials"], "learning_curve": summary["learning_curve"], "recommended_n": summary["recommended_n"]}


@pytest.fixture(scope="module")
def local_run(study_root):
    out = study_root / "local"
    run_cli("study", str(study_root / "tiny.yaml"), "--out", str(out), check=True)
    return out


@pytest.mark.slow
def test_study_runs_end_to_end(local_run):
    summary = json.loads((local_run / "summary.json").read_text())
    assert set(summary["potentials"]) == {"chgnet", "chgnet-ft-n1-s0", "chgnet-ft-n2-s0"}
    pristine = summary["potentials"]["chgnet"]
    assert 0.8 < pristine["validation"]["softening_slope"] < 1.0  # labels are CHGNet x 1.1
    assert pristine["msrd"] and all(shell["sigma2"] > 0 for shell in pristine["msrd"].values())
    assert summary["potentials"]["chgnet-ft-n1-s0"]["msrd"] is None
    assert [(r["n"], r["seed"]) for r in summary["learning_curve"]] == [(1, 0), (2, 0)]
    by_n = summary["learning_curve_by_n"]  # one seed each: the mean is that seed's value, its spread zero
    assert [(e["n"], e["n_seeds"], e["force_mae_ev_a_std"]) for e in by_n] == [(1, 1, 0.0), (2, 1, 0.0)]
    assert by_n[1]["stress_mae_gpa_mean"] == summary["potentials"]["chgnet-ft-n2-s0"]["validation"]["stress_mae_gpa"]
    assert (local_run / "report.html").stat().st_size > 10_000
    wall_s = [json.loads(p.read_text())["wall_s"] for p in (local_run / "steps").glob("*/step.json")]
    assert all(w > 0 for w in wall_s)
    assert summary["cost"]["step_s"] == pytest.approx(sum(wall_s), abs=0.1)
    assert summary["cost"]["step_s"] > summary["cost"]["elapsed_s"] > 0  # independent steps ran side by side
    assert "Compute cost" in (local_run / "report.html").read_text()
    assert "By how the test structures were made" in (local_run / "report.html").read_text()


def _mtimes(folder: Path) -> dict:
    """Every output file's mtime; the study lock records the running study's pid, so it is not an output."""
    from mlip_exafs.study import LOCK_FILE

    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != LOCK_FILE}


def _assert_rerun_is_a_no_op(config: Path, out: Path, *options: str) -> None:
    """Every step reports 'cached' and no output file is touched."""
    before = _mtimes(out)
    proc = run_cli("study", str(config), "--out", str(out), *options, check=True)
    assert "done  " not in proc.stdout and proc.stdout.count("cached") == len(list((out / "steps").iterdir()))
    assert _mtimes(out) == before


@pytest.mark.slow
def test_rerun_is_a_no_op(local_run, study_root):
    _assert_rerun_is_a_no_op(study_root / "tiny.yaml", local_run)


@pytest.mark.slow
def test_changed_setting_reruns_only_what_depends_on_it(local_run, study_root):
    out = study_root / "changed"
    shutil.copytree(local_run, out)
    config = dict(TINY_STUDY, exafs={**TINY_STUDY["exafs"], "rmax_a": 3.5})
    (study_root / "changed.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("study", str(study_root / "changed.yaml"), "--out", str(out), check=True)
    rerun = sorted(line.split()[-1] for line in proc.stdout.splitlines() if line.strip().startswith("done"))
    assert rerun == ["exafs-chgnet", "exafs-chgnet-ft-n2-s0"]


@pytest.mark.slow
def test_new_labels_rerun_only_the_steps_that_read_them(tmp_path):
    """Step hashes cover the dataset's content, not just its path: labelling more structures must refit."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps
    from mlip_exafs.study.steps import all_hashes

    write_fake_dataset(tmp_path / "data", n_train=3, n_test=2)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_STUDY))

    def hashes() -> dict[str, str]:
        return all_hashes(build_steps(load_study_config(tmp_path / "tiny.yaml", None)))

    def changed(a: dict, b: dict) -> list[str]:
        return sorted(k for k in a if a[k] != b[k])

    before = hashes()
    assert hashes() == before
    write_fake_db(tmp_path / "data" / "train.db", 1, seed=3)  # one more training structure
    new_train = hashes()
    assert changed(before, new_train) == sorted(k for k in before if "-ft-" in k)  # not validate/md/analyze/exafs-chgnet
    write_fake_db(tmp_path / "data" / "test.db", 1, seed=4)  # one more test structure
    assert changed(new_train, hashes()) == sorted(k for k in before if k.startswith("validate-"))


@pytest.mark.slow
def test_only_pristine_runs_while_labels_are_missing(local_run, study_root):
    """--only pristine runs the pretrained model's steps although finetune.n exceeds the pool; a full run reuses them."""
    config = dict(TINY_STUDY, finetune={**TINY_STUDY["finetune"], "n": [2, 50]})  # the pool has 3 structures
    (study_root / "early.yaml").write_text(yaml.safe_dump(config))
    out = study_root / "early"
    proc = run_cli("study", str(study_root / "early.yaml"), "--out", str(out), "--only", "pristine", check=True)
    assert "run without --only" in proc.stdout and not (out / "summary.json").exists()
    ran = {p.parent.name: json.loads(p.read_text())["inputs_hash"] for p in out.glob("steps/*/step.json")}
    assert sorted(ran) == ["analyze-chgnet", "exafs-chgnet", "md-chgnet", "validate-chgnet"]
    for name, digest in ran.items():  # the same identity as in the full study: it would find them cached
        assert json.loads((local_run / "steps" / name / "step.json").read_text())["inputs_hash"] == digest


@pytest.mark.slow
def test_only_learning_curve_runs_no_md_and_matches_the_full_study(local_run, study_root):
    """--only learning-curve runs the fine-tunes and validations, prints the curve, and a full run would find them cached."""
    out = study_root / "curve"
    proc = run_cli("study", str(study_root / "tiny.yaml"), "--out", str(out), "--only", "learning-curve", check=True)
    assert "DFT criteria recommend N =" in proc.stdout and not (out / "summary.json").exists()
    ran = {p.parent.name: json.loads(p.read_text()) for p in out.glob("steps/*/step.json")}
    assert sorted(ran) == ["finetune-chgnet-ft-n1-s0", "finetune-chgnet-ft-n2-s0", "validate-chgnet", "validate-chgnet-ft-n1-s0",
                           "validate-chgnet-ft-n2-s0"]
    full = json.loads((local_run / "summary.json").read_text())
    for name, record in ran.items():
        assert json.loads((local_run / "steps" / name / "step.json").read_text())["inputs_hash"] == record["inputs_hash"]
    slopes = [r["softening_slope"] for r in full["learning_curve"]]
    assert [f"{s:.3f}" in proc.stdout for s in slopes] == [True, True]  # the printed curve is the full study's


def test_only_pristine_and_only_finetuned_split_the_study(study_root):
    """The two halves can run one after the other (e.g. the fine-tuned MD first): together every step, once."""
    from mlip_exafs.study import ONLY
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps

    config = load_study_config(study_root / "tiny.yaml", None)
    steps = build_steps(config)
    pristine = {s.name for s in steps if ONLY["pristine"](config, s)}
    finetuned = {s.name for s in steps if ONLY["finetuned"](config, s)}
    assert pristine.isdisjoint(finetuned) and pristine | finetuned == {s.name for s in steps}
    assert {"finetune-chgnet-ft-n2-s0", "md-chgnet-ft-n2-s0", "exafs-chgnet-ft-n2-s0"} <= finetuned
    assert "md-chgnet" in pristine


def test_only_md_selects_the_md_steps_and_what_they_need_and_selections_intersect(study_root):
    """md: the part a GPU machine speeds up; pristine,md: the pretrained potentials' MD alone (no labels, no FEFF)."""
    from mlip_exafs.study import only_selections, selected_steps
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps

    config = load_study_config(study_root / "tiny.yaml", None)
    steps = build_steps(config)
    md = {s.name for s in selected_steps(config, steps, only_selections("md"))}
    assert md == {"md-chgnet", "md-chgnet-ft-n2-s0", "finetune-chgnet-ft-n2-s0"}
    assert [s.name for s in selected_steps(config, steps, only_selections("pristine, md"))] == ["md-chgnet"]


def test_unknown_only_is_a_one_line_error(study_root):
    proc = run_cli("study", str(study_root / "tiny.yaml"), "--out", str(study_root / "bad-only"), "--only", "pristine,exafs")
    assert_one_line_error(proc, "unknown --only 'exafs'")
    assert not (study_root / "bad-only").exists()
    proc = run_cli("study", str(study_root / "tiny.yaml"), "--out", str(study_root / "bad-only"), "--only", "learning-curve,md")
    assert_one_line_error(proc, "--only learning-curve,md selects no step of this study; drop one of them")
    assert not (study_root / "bad-only").exists()


@pytest.mark.slow
def test_killed_study_resumes_with_the_same_result(local_run, study_root):
    out = study_root / "killed"
    cmd = [sys.executable, "-m", "mlip_exafs", "study", str(study_root / "tiny.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("steps/*/step.json"))) < 3:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("steps/*/step.json")}
    assert finished, "the study should have finished some steps before the kill"
    run_cli("study", str(study_root / "tiny.yaml"), "--out", str(out), check=True)
    for name, mtime in finished.items():  # finished steps were not redone
        assert (out / "steps" / name / "step.json").stat().st_mtime_ns == mtime
    resumed = json.loads((out / "summary.json").read_text())
    assert _numbers(resumed) == _numbers(json.loads((local_run / "summary.json").read_text()))


def test_second_study_into_the_same_folder_is_refused(study_root, tmp_path):
    """While one study runs into a folder, another into it stops with a one-line error and writes nothing."""
    from mlip_exafs.study import study_lock

    busy = tmp_path / "busy"
    busy.mkdir()
    with study_lock(busy):
        proc = run_cli("study", str(study_root / "tiny.yaml"), "--out", str(busy))
    assert_one_line_error(proc, f"another study (pid {os.getpid()}) is running into")
    assert _mtimes(busy) == {}


def test_wall_time_of_a_resumed_step_counts_the_killed_run(tmp_path):
    """A step killed after 40 s of work and then finished reports the 40 s too (paper runs span sessions).

    Only the heartbeat inside the file counts: a git checkout of a committed study dates every file anew.
    """
    from mlip_exafs.study.steps import RUN_FILE, _heartbeat, _start_run

    assert _start_run(tmp_path) == 0.0
    record = json.loads((tmp_path / RUN_FILE).read_text())
    (tmp_path / RUN_FILE).write_text(json.dumps({**record, "started": record["started"] - 40.0}))  # started 40 s ago
    _heartbeat(tmp_path)  # the killed run's last sign of life
    (tmp_path / "step.log").write_text("progress line\n")
    os.utime(tmp_path / "step.log", (record["started"] + 3600, record["started"] + 3600))  # a checkout an hour later
    assert _start_run(tmp_path) == pytest.approx(40.0, abs=1.0)


ENDLESS_MD = {"supercell": "3x3x1", "temperature_k": 300, "timestep_fs": 2, "equilibration_fs": 0, "production_fs": 1e6, "snapshot_every_fs": 10}


def test_a_failing_step_stops_the_local_study_and_the_steps_beside_it(tmp_path):
    """Steps run side by side; the first error ends the study at once: running steps are terminated, none starts after it."""
    from mlip_exafs.errors import UserError
    from mlip_exafs.study.executor import run_local, step_process_ids
    from mlip_exafs.study.steps import RUN_FILE, Step

    md = Step("md-endless", "md", {"structure": "ws2", "potential": "chgnet", "settings": ENDLESS_MD})
    failing = Step("validate-missing", "validate", {"dataset": str(tmp_path / "missing"), "potential": "chgnet"})
    after = Step("validate-after", "validate", {"dataset": "ws2", "potential": "chgnet"}, deps=("validate-missing",))
    finished = []
    with pytest.raises(UserError, match="^step validate-missing: unknown dataset") as error:
        run_local([md, failing, after], tmp_path / "steps", on_step=lambda name, cached: finished.append(name), workers=2)
    assert "\n" not in str(error.value) and finished == []
    assert (tmp_path / "steps" / "md-endless" / RUN_FILE).exists()  # it had started beside the failing step ...
    assert not (tmp_path / "steps" / "md-endless" / "step.json").exists()  # ... and was stopped, resumable
    assert not (tmp_path / "steps" / "validate-after").exists()
    assert step_process_ids() == []


def test_local_steps_with_the_longest_chain_behind_them_start_first(study_root):
    """The N = 2 fine-tune (validate, MD, analysis, EXAFS wait on it) before the pristine validation."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.executor import chain_lengths
    from mlip_exafs.study.pipeline import build_steps

    chain = chain_lengths(build_steps(load_study_config(study_root / "tiny.yaml", None)))
    assert chain["validate-chgnet"] == 0 and chain["md-chgnet"] == 1  # analysis and EXAFS wait on it, nothing on them
    assert chain["finetune-chgnet-ft-n2-s0"] == 2 > chain["finetune-chgnet-ft-n1-s0"] == 1


def test_dask_gets_the_chain_lengths_as_priorities(study_root, tmp_path, monkeypatch):
    """Ready steps start longest chain first on Dask too (a fake client records what is submitted)."""
    import dask.distributed

    from mlip_exafs.study import executor
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps

    class Future:
        def __init__(self, key):
            self.key = key

        def result(self):
            return {}

    class Client:
        submitted: dict[str, int] = {}

        def __init__(self, cluster, **options):
            pass

        def submit(self, func, *args, key, pure, priority):
            Client.submitted[key] = priority
            return Future(key)

        def close(self):
            pass

    monkeypatch.setattr(dask.distributed, "Client", Client)
    monkeypatch.setattr(dask.distributed, "as_completed", list)
    monkeypatch.setattr(executor, "local_cluster", lambda workers: None)
    steps = build_steps(load_study_config(study_root / "tiny.yaml", None))
    executor.run_dask(steps, tmp_path / "out", scheduler="tcp://nowhere:0")
    by_step = {key.rsplit("-", 1)[0]: priority for key, priority in Client.submitted.items()}
    assert by_step == executor.chain_lengths(steps) and by_step["finetune-chgnet-ft-n2-s0"] == 2


@pytest.mark.slow
def test_local_steps_side_by_side_give_the_results_of_one_at_a_time(study_root, tmp_path):
    """Two independent steps overlap in time with two workers, not with one; the results are the same."""
    from mlip_exafs.files import read_json
    from mlip_exafs.study.executor import run_local
    from mlip_exafs.study.steps import RUN_FILE, Step

    steps = [Step(f"validate-{x}", "validate", {"dataset": str(study_root / "data"), "potential": "chgnet"}) for x in "ab"]

    def run(workers: int) -> tuple[dict, bool]:
        ended = {}
        results = run_local(steps, tmp_path / str(workers), on_step=lambda name, cached: ended.setdefault(name, time.time()), workers=workers)
        started = {name: read_json(tmp_path / str(workers) / name / RUN_FILE)["started"] for name in ended}
        return results, started["validate-a"] < ended["validate-b"] and started["validate-b"] < ended["validate-a"]

    side_by_side, overlapped = run(2)
    one_at_a_time, overlapped_alone = run(1)
    assert overlapped and not overlapped_alone
    assert side_by_side == one_at_a_time


@pytest.mark.slow
def test_dask_gives_the_same_summary(local_run, study_root):
    out = study_root / "dask"
    run_cli("study", str(study_root / "tiny.yaml"), "--out", str(out), "--executor", "dask", check=True)
    assert _numbers(json.loads((out / "summary.json").read_text())) == _numbers(json.loads((local_run / "summary.json").read_text()))
    _assert_rerun_is_a_no_op(study_root / "tiny.yaml", out, "--executor", "dask")


@pytest.mark.parametrize("user_value", [None, "131072"])
def test_steps_on_dask_workers_do_not_inherit_the_nannys_malloc_trimming(monkeypatch, user_value):
    """Dask's MALLOC_TRIM_THRESHOLD_ (made for the worker) doubles a fine-tune's time in its torch child; a user's own value stays."""
    from dask.distributed import Client

    from mlip_exafs.study.executor import local_cluster
    from mlip_exafs.study.steps import step_environment

    if user_value:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", user_value)
    else:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with local_cluster(1) as cluster, Client(cluster) as client:
        in_worker = client.submit(os.getenv, "MALLOC_TRIM_THRESHOLD_", pure=False).result()
        in_step = client.submit(step_environment, pure=False).result().get("MALLOC_TRIM_THRESHOLD_")
    assert in_worker == (user_value or "65536")  # what the nanny gives its worker process
    assert in_step == user_value


def test_local_cluster_workers_do_not_sample_themselves():
    """The workers only wait on step processes; Dask's 20 ms event-loop tick, 10 ms thread profiler and fast monitors cost the steps CPU."""
    import dask
    from dask.distributed import Client

    from mlip_exafs.study.executor import QUIET_LOCAL_CLUSTER, local_cluster

    with local_cluster(1) as cluster, Client(cluster) as client:
        in_worker = client.submit(lambda: {k: dask.config.get(k) for k in QUIET_LOCAL_CLUSTER}, pure=False).result()
    assert in_worker == QUIET_LOCAL_CLUSTER
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process's config is left as it was


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (scripts/install.sh --test installs it)")
def test_report_renders_all_images_in_chromium(local_run, tmp_path):
    """Chromium loads the report; a script counts images that failed to decode."""
    probe = tmp_path / "probe.html"
    report = (local_run / "report.html").read_text()
    script = ("<script>window.onload=()=>{const imgs=[...document.images];"
              "document.title=imgs.length+' images, '+imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length+' broken';}</script>")
    probe.write_text(report.replace("</body>", script + "</body>"))
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    title = proc.stdout.split("<title>")[1].split("</title>")[0]
    n_images, broken = int(title.split()[0]), int(title.split(", ")[1].split()[0])
    assert n_images >= 5 and broken == 0, title


def test_bad_study_configs_are_one_line_errors(study_root, tmp_path):
    bad_key = dict(TINY_STUDY, colour="red")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(bad_key))
    assert_one_line_error(run_cli("study", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "o")), "unknown key 'colour'")
    bad_type = dict(TINY_STUDY, md={**TINY_STUDY["md"], "temperature_k": "hot"})
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad_type))
    assert_one_line_error(run_cli("study", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "o")), "md.temperature_k")
    assert_one_line_error(run_cli("study", str(study_root / "tiny.yaml"), "--out", str(tmp_path / "o"), "--profile", "nope"), "profile 'nope'")
    assert not (tmp_path / "o").exists()


def test_study_refuses_what_would_fail_hours_in(study_root, tmp_path):
    """A too-small MD cell for rmax and a too-small training pool are caught before any step runs."""
    (tmp_path / "data").symlink_to(study_root / "data")
    small_cell = dict(TINY_STUDY, exafs={**TINY_STUDY["exafs"], "rmax_a": 6.0})
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump(small_cell))
    assert_one_line_error(run_cli("study", str(tmp_path / "cell.yaml"), "--out", str(tmp_path / "o")), "exafs.rmax_a = 6 Å exceeds")
    too_many = dict(TINY_STUDY, finetune={**TINY_STUDY["finetune"], "n": [2, 50]})
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(too_many))
    assert_one_line_error(run_cli("study", str(tmp_path / "n.yaml"), "--out", str(tmp_path / "o")), "has 3 usable training structures")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@requires_cp2k
def test_study_samples_and_labels_its_own_dataset(tmp_path):
    """dataset: a sample+label block -> CHGNet-sampled structures, CP2K labels in chunk steps, one dataset folder."""
    from test_label import TINY

    sample = {"structure": "w-bcc", "supercell": "1x1x1", "equilibration_fs": 20, "interval_fs": 10}
    config = {
        "name": "own-labels", "structure": "w-bcc", "absorber": "W",
        "dataset": {
            "train": {**sample, "temperatures_k": [600], "snapshots_per_temperature": 2, "strained": 1, "rattled": 1, "seed": 5},
            "test": {**sample, "temperatures_k": [900], "snapshots_per_temperature": 1, "strained": 1, "rattled": 0, "seed": 6},
            "cp2k": TINY.model_dump(), "chunk": 2,
        },
        "pristine": ["chgnet"],
        "finetune": {"n": [2], "seeds": [0], "epochs": 1},
        "md": {"supercell": "3x3x3", "equilibration_fs": 10, "production_fs": 20, "snapshot_every_fs": 10},
        "exafs": {"rmax_a": 4.0},
    }
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("study", str(tmp_path / "own.yaml"), "--out", str(tmp_path / "run"), check=True)
    for step in ("sample-train", "label-train-000", "label-train-001", "label-test-000", "dataset"):
        assert f"done   {step}" in proc.stdout
    info = json.loads(run_cli("dataset", "info", str(tmp_path / "run" / "steps" / "dataset"), "--json", check=True).stdout)
    assert (info["n_train"], info["n_test"], info["settings_hash"]) == (4, 2, TINY.settings_hash())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["potentials"]["chgnet"]["validation"]["n_test_structures"] == 2
    assert summary["potentials"]["chgnet-ft-n2-s0"]["validation"]["force_mae_ev_a"] > 0


def test_an_experiment_is_shell_fitted_once_and_its_fit_goes_into_the_summary(study_root, tmp_path):
    """experiment.fit_shells (default 2): one fit-experiment step for the spectrum, not one per potential; compare steps unchanged."""
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import FIT_STEP, build_steps, summarize

    w_foil = Path(__file__).resolve().parents[1] / "examples" / "data" / "W_metal_rt_01.xdi"
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(dict(TINY_STUDY, dataset=str(study_root / "data"), experiment={"file": str(w_foil), "temperature_k": 300})))
    config = load_study_config(config_file)
    steps = build_steps(config)
    fits = [s for s in steps if s.action == "fit_experiment"]
    assert [s.name for s in fits] == [FIT_STEP] and fits[0].params["fit_shells"] == 2 and fits[0].params["structure"] == "ws2"
    assert all("fit_shells" not in s.params["window"] for s in steps if s.action == "compare")
    validation = {"energy_mae_mev_atom": 1.0, "force_mae_ev_a": 0.1, "force_rmse_ev_a": 0.2, "stress_mae_gpa": 0.1, "softening_slope": 1.0,
                  "cmae_ev_a": 0.1, "n_test_structures": 2}
    results = {s.name: validation for s in steps if s.action == "validate"} | {FIT_STEP: {"r_factor": 0.02, "shells": {}}}
    fit = {"r_factor": 0.02, "shells": {}}
    assert summarize(config, results)["experiment"] == {"file": str(w_foil), "fit": fit, "spectra": [{"file": str(w_foil), "temperature_k": 300.0, "fit": fit}]}


def test_steps_say_what_they_are_about_without_changing_their_hashes(study_root):
    """Step.potential/n/seed/temperature_k describe each step for readers; the inputs hash stays what it was."""
    from dataclasses import replace

    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps, find_step
    from mlip_exafs.study.steps import inputs_hash

    steps = build_steps(load_study_config(study_root / "tiny.yaml", None))
    about = {s.name: (s.action, s.potential, s.n, s.seed, s.temperature_k) for s in steps}
    assert about["validate-chgnet"] == ("validate", "chgnet", None, None, None)
    assert about["md-chgnet"] == ("md", "chgnet", None, None, 300.0)
    assert about["finetune-chgnet-ft-n2-s0"] == ("finetune", "chgnet-ft-n2-s0", 2, 0, None)
    assert about["exafs-chgnet-ft-n2-s0"] == ("exafs", "chgnet-ft-n2-s0", 2, 0, 300.0)
    assert find_step(steps, "analyze", "chgnet-ft-n2-s0", 300.0).name == "analyze-chgnet-ft-n2-s0"
    assert find_step(steps, "analyze", "chgnet-ft-n1-s0") is None  # N = 1 gets no MD
    for step in steps:
        bare = replace(step, potential=None, n=None, seed=None, temperature_k=None)
        assert inputs_hash(step, {}) == inputs_hash(bare, {})


def test_study_steps_reads_the_steps_of_a_study_folder(study_root, tmp_path):
    """Readers of a finished study (the report) get its steps from study.json, not from folder names."""
    from mlip_exafs.files import write_json
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps, study_steps

    config = load_study_config(study_root / "tiny.yaml", None)
    write_json(tmp_path / "study.json", {"config": json.loads(config.model_dump_json())})
    read = study_steps(tmp_path)  # without the content hashes of input files, which a reader may not have
    assert read == build_steps(config, hash_inputs=False)
    assert [s.name for s in read] == [s.name for s in build_steps(config)]


def test_a_changed_step_keeps_its_finished_result_until_the_new_run_finishes(tmp_path, monkeypatch):
    """A rerun with changed inputs that then fails (a setting a stage rejects late, a kill) loses no finished result."""
    from mlip_exafs.files import write_json
    from mlip_exafs.study import steps as steps_module
    from mlip_exafs.study.steps import REPLACED_DIR, STEP_FILE, Step, run_step

    root, step = tmp_path / "steps", Step("md-chgnet", "md", {"settings": {"timestep_fs": 50}})
    finished = root / step.name
    finished.mkdir(parents=True)
    write_json(finished / STEP_FILE, {"inputs_hash": "old", "result": {"snapshots": "x"}})
    (finished / "snapshots.extxyz").write_text("frames")

    def fails(folder, step, deps, environment):
        raise RuntimeError("the stage refused a setting")

    monkeypatch.setattr(steps_module, "_run_in_child", fails)
    with pytest.raises(RuntimeError):
        run_step(root, step, "new", {})
    aside = root / REPLACED_DIR / step.name
    assert (aside / "snapshots.extxyz").read_text() == "frames" and (aside / STEP_FILE).exists()

    monkeypatch.setattr(steps_module, "_run_in_child", lambda folder, step, deps, environment: {"snapshots": "y"})
    assert run_step(root, step, "new", {}) == {"snapshots": "y"}
    assert not aside.exists()  # removed once its replacement finished


def test_a_study_folder_moved_or_finished_elsewhere_hands_its_next_steps_files_that_exist(tmp_path, monkeypatch):
    """Results record paths as their run saw them; read back, paths into the step's own folder point where it is now."""
    from mlip_exafs.files import write_json
    from mlip_exafs.study import steps as steps_module
    from mlip_exafs.study.steps import STEP_FILE, Step, run_step

    md, exafs = Step("md-chgnet", "md", {}), Step("exafs-chgnet", "exafs", {}, ("md-chgnet",))
    root = tmp_path / "moved" / "steps"
    (root / md.name).mkdir(parents=True)
    (root / md.name / "snapshots.extxyz").write_text("frames")
    ran_elsewhere = {"snapshots": "/gpu-machine/study/steps/md-chgnet/snapshots.extxyz", "n": 3, "split": "train"}
    write_json(root / md.name / STEP_FILE, {"inputs_hash": "h", "result": ran_elsewhere})

    result = run_step(root, md, "h", {})
    assert result == {**ran_elsewhere, "snapshots": str(root / md.name / "snapshots.extxyz")}
    seen = {}
    monkeypatch.setattr(steps_module, "_run_in_child", lambda folder, step, deps, environment: seen.update(deps) or {})
    run_step(root, exafs, "e", {md.name: result})
    assert Path(seen[md.name]["snapshots"]).read_text() == "frames"


def test_step_hashes_do_not_depend_on_where_the_study_and_its_input_files_lie(tmp_path):
    """A study folder moved to another machine or checkout (or finished on a GPU machine) redoes nothing; a changed
    file still reruns the steps that read it."""
    import ase.build
    import ase.io
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps
    from mlip_exafs.study.steps import all_hashes

    spectrum = Path(__file__).parent.parent / "examples" / "data" / "W_metal_rt_01.xdi"
    config = {"name": "w", "structure": "w.cif", "absorber": "W", "dataset": "data", "pristine": ["chgnet"],
              "finetune": {"base": "chgnet", "n": [1], "seeds": [0], "epochs": 1},
              "md": {"finetuned_n": [1], "supercell": "4x4x4", "production_fs": 40, "equilibration_fs": 10},
              "exafs": {"edge": "L3", "rmax_a": 4.0}, "experiment": {"file": "w.xdi", "temperature_k": 300, "kmin_inv_a": 3, "kmax_inv_a": 14}}
    here = tmp_path / "here"
    write_fake_dataset(here / "data", n_train=2, n_test=1)
    ase.io.write(here / "w.cif", ase.build.bulk("W", "bcc", a=3.165, cubic=True))
    shutil.copy(spectrum, here / "w.xdi")
    (here / "w.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(here, tmp_path / "there" / "deeper")
    hashes = {place: all_hashes(build_steps(load_study_config(tmp_path / place / "w.yaml", None))) for place in ("here", "there/deeper")}
    assert hashes["here"] == hashes["there/deeper"]
    with open(tmp_path / "here" / "w.xdi", "a") as fh:
        fh.write("   25000.0   1.0\n")  # one more point: another spectrum
    changed = all_hashes(build_steps(load_study_config(tmp_path / "here" / "w.yaml", None)))
    assert sorted(n for n in changed if changed[n] != hashes["here"][n]) == ["compare-chgnet", "compare-chgnet-ft-n1-s0", "fit-experiment"]


def test_a_setting_changed_and_changed_back_takes_the_set_aside_result(tmp_path, monkeypatch):
    """A finished step set aside for other inputs (a run killed before its replacement finished) is this step's again
    when the setting returns: restored, not rerun (hours of MD on a paper profile)."""
    from mlip_exafs.files import write_json
    from mlip_exafs.study import steps as steps_module
    from mlip_exafs.study.steps import REPLACED_DIR, STEP_FILE, Step, run_step

    root = tmp_path / "steps"
    step = Step(name="md-x", action="md", params={})
    aside = root / REPLACED_DIR / "md-x"
    aside.mkdir(parents=True)
    write_json(aside / STEP_FILE, {"step": "md-x", "inputs_hash": "original", "wall_s": 3600.0, "result": {"answer": 42}})
    (root / "md-x").mkdir()
    (root / "md-x" / ".inputs_hash").write_text("edited")  # the killed run of the edited setting
    monkeypatch.setattr(steps_module, "_run_in_child", lambda *a: pytest.fail("the set-aside result should be restored, not rerun"))
    assert run_step(root, step, "original", {}) == {"answer": 42}
    assert (root / "md-x" / STEP_FILE).exists() and not aside.exists()


def test_a_scheduler_with_the_local_executor_is_refused(capsys, tmp_path):
    """--scheduler was silently ignored by the default local executor; now it implies dask, and with local it is refused."""
    out = tmp_path / "s"
    assert_one_line_error(cli(capsys, "study", "examples/w.yaml", "--out", out, "--executor", "local", "--scheduler", "tcp://127.0.0.1:1"),
                          "--scheduler tcp://127.0.0.1:1 is a Dask scheduler, but --executor is local")
    assert_nothing_written(out)


def test_stopping_a_study_on_dask_stops_only_its_own_step_children(tmp_path):
    """A Dask worker's step thread waits on a child that Dask cannot cancel: the study SIGTERMs the children under its folder."""
    from mlip_exafs.study.executor import stop_step_children
    from mlip_exafs.study.steps import CHILD_MODULE

    def fake_child(root):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", CHILD_MODULE, str(root / "steps" / "md-x")])

    ours, theirs = fake_child(tmp_path / "ours"), fake_child(tmp_path / "ours-too-long-a-name")
    try:
        time.sleep(0.5)  # both have exec'd: their argv is the command line above
        assert stop_step_children(str(tmp_path / "ours" / "steps")) == [ours.pid]
        assert ours.wait(timeout=10) == -signal.SIGTERM and theirs.poll() is None
    finally:
        theirs.kill()
        ours.kill()


def test_dask_scheduler_address_and_runtime_settings(monkeypatch):
    """A malformed address is one line (it was a 182-line traceback); a remote study hands its threads and device to
    every step, and checks only the device's name on this machine (a CPU login node may send GPU work)."""
    from mlip_exafs.study import runtime_environment
    from mlip_exafs.study.config import StudyConfig
    from mlip_exafs.study.executor import connect

    with pytest.raises(UserError, match="cannot reach the Dask scheduler localhost"):
        connect("localhost", 1)
    config = StudyConfig(name="t", structure="ws2", absorber="W", pristine=["chgnet"], threads=3)
    assert runtime_environment(config, "cuda", "tcp://gpu-node:8786") == {"MLIP_EXAFS_THREADS": "3", "MLIP_EXAFS_DEVICE": "cuda"}
    assert runtime_environment(config, "cpu", None) == {"MLIP_EXAFS_THREADS": "3", "MLIP_EXAFS_DEVICE": "cpu"}
    with pytest.raises(UserError, match="unknown device"):
        runtime_environment(config, "gpu", "tcp://gpu-node:8786")


def test_a_local_dask_cluster_runs_as_many_steps_as_the_local_executor(monkeypatch, tmp_path):
    """It was always 2 workers: on 64 cores, 2 steps of 32 torch threads each (docs/study.md: one thread per step is faster)."""
    from mlip_exafs.study import executor

    seen = {}

    def connect(scheduler, workers):
        seen["workers"] = workers
        raise UserError("stop here")

    monkeypatch.setattr(executor, "connect", connect)
    monkeypatch.setattr(executor, "available_cores", lambda: 8)
    for threads, workers in (("2", 4), ("1", 8)):
        monkeypatch.setenv("MLIP_EXAFS_THREADS", threads)
        with pytest.raises(UserError):
            executor.run_dask([], tmp_path)
        assert seen["workers"] == workers


def test_a_study_refuses_a_magnetic_order_it_would_label_spin_restricted(capsys, tmp_path):
    """Structures with their own ± moments and spin-restricted CP2K settings: one line before any sampling or CP2K."""
    import ase.io
    from ase.build import bulk

    ni = bulk("Ni", "fcc", a=3.52, cubic=True)
    ni.set_initial_magnetic_moments([0.6, -0.6, 0.6, -0.6])
    ase.io.write(tmp_path / "ni.extxyz", ni)
    sample = {"structure": str(tmp_path / "ni.extxyz"), "supercell": "1x1x1"}
    config = {"name": "ni", "structure": str(tmp_path / "ni.extxyz"), "absorber": "Ni",
              "dataset": {"train": {**sample, "temperatures_k": [300], "snapshots_per_temperature": 2, "seed": 1},
                          "test": {**sample, "temperatures_k": [300], "snapshots_per_temperature": 1, "seed": 2},
                          "cp2k": {"nonmagnetic": True}},
              "pristine": ["chgnet"], "finetune": {"n": [1], "seeds": [0]}, "md": {"supercell": "4x4x4"}, "exafs": {"rmax_a": 5.0}}
    (tmp_path / "ni.yaml").write_text(yaml.safe_dump(config))
    proc = cli(capsys, "study", tmp_path / "ni.yaml", "--out", tmp_path / "run")
    assert_one_line_error(proc, "the structures carry initial magnetic moments but the CP2K settings are spin-restricted")
    assert not (tmp_path / "run").exists()
