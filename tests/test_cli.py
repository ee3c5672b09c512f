import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

import mlip_exafs
from conftest import assert_nothing_written, assert_one_line_error, cli, default_sigint, run_cli


def test_version():
    proc = run_cli("--version", check=True)
    assert proc.stdout.strip() == f"mlip-exafs {mlip_exafs.__version__}"


def test_no_help_shows_a_bool_metavar(capsys):
    """A flag reads '--json', not '--json <bool>' (typer's default), in every verb's help."""
    from mlip_exafs.cli import _register_stage_verbs, app

    _register_stage_verbs()
    verbs = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    helps = {"": cli(capsys, "--help").stdout}
    for verb in verbs:
        helps[verb] = cli(capsys, verb, "--help").stdout
    for group in app.registered_groups:
        for sub in group.typer_instance.registered_commands:
            helps[f"{group.name} {sub.name}"] = cli(capsys, group.name, sub.name, "--help").stdout
    assert len(helps) > 10
    assert not [verb for verb, text in helps.items() if "<bool>" in text]


def test_potentials_lists_both_models():
    out = run_cli("potentials", check=True).stdout
    assert "chgnet" in out and "sevennet-0" in out


@pytest.mark.slow
def test_singlepoint_prints_energy_force_stress():
    out = run_cli("singlepoint", "w-bcc", "--potential", "chgnet", "--supercell", "2x2x2", "--threads", "1", check=True).stdout
    energy = float(re.search(r"energy\s+(-?\d+\.\d+) eV", out).group(1))
    assert -14.0 < energy / 16 < -10.0
    assert float(re.search(r"max \|force\|\s+(\S+)", out).group(1)) < 1e-3
    assert "stress (GPa)" in out


def test_singlepoint_json_has_every_force_in_units_named_by_the_keys():
    import json

    out = run_cli("singlepoint", "w-bcc", "--potential", "chgnet", "--supercell", "1x1x2", "--threads", "1", "--json", check=True).stdout
    result = json.loads(out)
    assert result["n_atoms"] == 4 and np.array(result["forces_ev_a"]).shape == (4, 3) and len(result["stress_gpa"]) == 6
    assert result["energy_ev_atom"] == pytest.approx(result["energy_ev"] / 4)


def test_singlepoint_bad_inputs_are_one_line_errors(tmp_path):
    assert_one_line_error(run_cli("singlepoint", "ws2", "--potential", "nope"), "unknown potential", "chgnet")
    assert_one_line_error(run_cli("singlepoint", str(tmp_path / "x.cif")), "neither a file nor a built-in")
    assert_one_line_error(run_cli("singlepoint", "ws2", "--supercell", "3x3"), "NxMxL")


@pytest.mark.parametrize(
    "setup, args, needles",
    [
        ("cp2k-config", ["label", "{s}", "--db", "{db}", "--config", "{cfg}"], ["'cutoff_ry'", "fix that value"]),
        ("", ["label", "{tmp}/missing.extxyz", "--db", "{db}"], ["does not exist", "mlip-exafs sample"]),
        ("duplicate-uids", ["label", "{s}", "--db", "{db}"], ["duplicate 'uid'", "unique uid"]),
        ("", ["import", "{tmp}/x.extxyz", "--db", "{db}", "--stress-units", "psi"], ["unknown --stress-units 'psi'"]),
        ("", ["finetune", "--train", "ws2", "--n", "1", "--lr", "-1", "--out", "{out}"], ["--lr", "greater than 0"]),
        ("", ["finetune", "--train", "ws2", "--n", "1", "--freeze", "half", "--out", "{out}"], ["--freeze", "'energy-scale'"]),
        ("", ["learning-curve", "--train", "ws2", "--test", "ws2", "--n", "0,1", "--out", "{out}"], ["every N must be at least 1"]),
        ("", ["learning-curve", "--train", "ws2", "--test", "ws2", "--seeds", "a", "--out", "{out}"], ["--seeds 'a'"]),
        ("", ["report", "{out}"], ["has no study.json", "mlip-exafs study"]),
        ("missing-experiment", ["study", "{tmp}/study.yaml", "--out", "{out}"], ["experimental spectrum", "experiment.file"]),
    ],
    ids=["label-config-wrong-type", "label-structures-missing", "label-duplicate-uids", "import-stress-units", "finetune-negative-lr",
         "finetune-freeze-unknown", "learning-curve-n-zero", "learning-curve-seeds-not-numbers", "report-without-study",
         "study-experiment-missing"],
)
def test_bad_options_and_configs(capsys, tmp_path, setup, args, needles):
    import ase.io

    from mlip_exafs.structures import load_structure

    s = tmp_path / "s.extxyz"
    frames = [load_structure("w-bcc"), load_structure("w-bcc")]
    if setup == "duplicate-uids":
        for atoms in frames:
            atoms.info["uid"] = "same"
    ase.io.write(s, frames)
    (tmp_path / "cp2k.yaml").write_text("cutoff_ry: big\n")
    if setup == "missing-experiment":
        config = {"name": "x", "structure": "ws2", "absorber": "W", "dataset": "ws2", "experiment": {"file": "nope.xdi"}}
        (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    names = {"s": s, "db": tmp_path / "labels.db", "cfg": tmp_path / "cp2k.yaml", "tmp": tmp_path, "out": tmp_path / "out"}
    assert_one_line_error(cli(capsys, *[a.format(**names) for a in args]), *needles)
    assert not (tmp_path / "labels.db").exists()
    assert_nothing_written(tmp_path / "out")


EMT = "python:ase.calculators.emt:EMT"  # milliseconds per step: an MD that is surely still running when interrupted


@pytest.fixture()
def cu_cif(tmp_path):
    import ase.build
    import ase.io

    path = tmp_path / "cu.cif"
    ase.io.write(path, ase.build.bulk("Cu", "fcc", a=3.61, cubic=True))
    return path


def test_ctrl_c_is_never_success(tmp_path, cu_cif):
    """SIGINT to a running ``md``: exit 130 and one line (typer returns 130 without standalone mode; it used to exit 0)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlip_exafs", "md", str(cu_cif), "--supercell", "2x2x2", "--potential", EMT, "--out", str(out),
           "--equilibrate", "0", "--production", "1ns", "--every", "10fs", "--checkpoint-every", "10fs"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "MLIP_EXAFS_THREADS": "1"},
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while not (out / "md.json").exists() and proc.poll() is None and time.monotonic() < deadline:  # the first checkpoint.npz comes before it
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("MD ")]  # the progress line is not on a tty
    assert lines == ["error: interrupted; rerun the same command to resume"], stderr
    assert '"status": "running"' in (out / "md.json").read_text()  # the half run is not marked complete


def test_typer_exit_codes_are_not_swallowed(monkeypatch):
    """``typer.Exit(3)`` inside a verb is returned, not raised, without standalone mode: main must still exit 3."""
    import sys

    import typer

    from mlip_exafs import cli as cli_module

    app = typer.Typer()

    @app.command()
    def fails() -> None:
        raise typer.Exit(3)

    @app.command()
    def ok() -> None:
        pass

    monkeypatch.setattr(cli_module, "app", app)
    monkeypatch.setattr(cli_module, "_register_stage_verbs", lambda: None)
    for verb, code in (("fails", 3), ("ok", None)):
        monkeypatch.setattr(sys, "argv", ["mlip-exafs", verb])
        if code is None:
            cli_module.main()
            continue
        with pytest.raises(SystemExit) as exc:
            cli_module.main()
        assert exc.value.code == code


OUTPUT_VERBS = {
    "md": ["md", "w-bcc", "--supercell", "2x2x2", "--potential", EMT, "--equilibrate", "0", "--production", "4fs", "--every", "2fs"],
    "exafs": ["exafs", "{traj}"],
    "analyze": ["analyze", "{traj}"],
    "compare": ["compare", "{tmp}/chi.csv", "--experiment", "{tmp}/exp.xdi"],
    "validate": ["validate", "--test", "ws2"],
    "finetune": ["finetune", "--train", "ws2", "--n", "1"],
    "study": ["study", "{tmp}/study.yaml"],
}


@pytest.mark.parametrize("kind", ["existing-file", "parent-is-a-file"])
@pytest.mark.parametrize("verb", sorted(OUTPUT_VERBS))
def test_output_folder_that_cannot_be_written_is_one_line_error(capsys, tmp_path, w_traj, verb, kind):
    """--out that is a file (or below one) used to crash with a traceback at the first write; now it fails before any work."""
    import time

    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = blocker if kind == "existing-file" else blocker / "out"
    names = {"traj": w_traj, "tmp": tmp_path}
    start = time.perf_counter()
    proc = cli(capsys, *[a.format(**names) for a in OUTPUT_VERBS[verb]], "--out", out)
    assert_one_line_error(proc, f"output folder {out}", "is an existing file" if kind == "existing-file" else "taken is a file, not a folder")
    assert blocker.read_text() == "keep me"
    assert time.perf_counter() - start < 10  # before any model is loaded or any MD/FEFF runs


# ---------------------------------------------------------------- #23: every number of every verb, one shared check


@pytest.mark.parametrize(
    "args, needles",
    [
        (["md", "w-bcc", "--equilibrate", "1e400"], ["--equilibrate is inf, not a finite number"]),
        (["md", "w-bcc", "--temperature", "nan"], ["--temperature is nan"]),
        (["md", "w-bcc", "--temperature", "inf"], ["--temperature is inf"]),  # was: 'MD blew up at step 1'
        (["md", "w-bcc", "--production", "1e30"], ["--production = 1e+30 is too large"]),
        (["md", "w-bcc", "--seed", "-1"], ["--seed = -1 is not a valid seed", "0 to 4294967295"]),  # was: a numpy traceback
        (["md", "w-bcc", "--threads", "0"], ["--threads = 0 must be at least 1"]),
        (["md", "w-bcc", "--supercell", "1000x1000x1000"], ["would hold 2,000,000,000 atoms", "more than fit in memory"]),
        (["singlepoint", "w-bcc", "--supercell", "1000x1000x1000"], ["2,000,000,000 atoms"]),
        (["singlepoint", "w-bcc", "--threads", "-1"], ["--threads = -1 must be at least 1"]),
        (["exafs", "{traj}", "--rmax", "inf"], ["--rmax is inf"]),
        (["exafs", "{traj}", "--blocks", "99999999999999999999"], ["--blocks = 1e+20 is too large"]),
        (["exafs", "{traj}", "--ideal", "w-bcc", "--ideal-supercell", "1000x1000x1000"], ["more than fit in memory"]),
        (["analyze", "{traj}", "--rdf-rmax", "nan"], ["--rdf-rmax is nan"]),
        (["analyze", "{traj}", "--reference", "w-bcc", "--reference-supercell", "1000x1000x1000"], ["more than fit in memory"]),
        (["compare", "{traj}", "--experiment", "{traj}", "--kmin", "1e30"], ["--kmin = 1e+30 is too large"]),
        (["compare", "{traj}", "--experiment", "{traj}", "--s02-bounds", "nan", "1"], ["--s02-bounds[0] is nan"]),
        (["finetune", "--train", "ws2", "--n", "1", "--lr", "inf"], ["--lr is inf"]),
        (["finetune", "--train", "ws2", "--n", "99999999999999999999"], ["--n = 1e+20 is too large"]),
        (["learning-curve", "--train", "ws2", "--test", "ws2", "--n", "99999999999999999999"], ["--n[0] = 1e+20 is too large"]),
        (["sample", "--seed", "-1"], ["--seed = -1 is not a valid seed"]),  # was: accepted without any check (model_copy)
        (["sample", "--threads", "-1"], ["--threads = -1 must be at least 1"]),
        (["validate", "--test", "ws2", "--threads", "99999999999999999999"], ["--threads = 1e+20 is too large"]),
        (["label", "{traj}", "--mpi-ranks", "99999999999999999999"], ["--mpi-ranks = 1e+20 is too large"]),
    ],
)
def test_bad_numbers_in_any_verb_are_one_line_errors(capsys, tmp_path, w_traj, args, needles):
    """NaN, inf, 1e400, 1e30, a negative seed, zero threads, a supercell that cannot fit in memory: refused before any work."""
    out = tmp_path / "out"
    names = {"traj": w_traj}
    tail = {"sample": ["--out", out / "s.extxyz"], "label": ["--db", out / "x.db"], "singlepoint": []}.get(args[0], ["--out", out])
    proc = cli(capsys, *[a.format(**names) for a in args], *tail)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2
    assert_nothing_written(out)


# ---------------------------------------------------------------- #25: each default defined once, by the stage's settings

OWN_DEFAULTS: dict[tuple[str, str], str] = {}  # options that keep a default of their own, and why (none left)


def all_commands():
    """(verb, click command) of every verb and sub-verb (dataset info, dataset pack)."""
    import typer

    from mlip_exafs.cli import _register_stage_verbs, app

    _register_stage_verbs()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        if hasattr(command, "commands"):  # a group (typer's click is not always the installed click)
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            yield name, command


def test_options_default_to_not_given():
    """Every option defaults to None ('not given', so the settings model's default applies) or is an off flag.

    A default of the CLI's own duplicated the settings' and drifted from them (#25).
    """
    own = []
    for verb, command in all_commands():
        for param in command.params:
            if param.param_type_name != "option" or param.required or param.name == "help":
                continue
            if param.default is None or (param.is_flag and param.default is False):
                continue
            own.append((verb, param.name))
    assert sorted(own) == sorted(OWN_DEFAULTS)


def test_option_names_are_the_settings_they_set():
    """An option that sets a setting has the setting's name, so that an error naming the setting can name the flag."""
    from mlip_exafs.settings import AnalysisSettings, CompareSettings, ExafsSettings, FinetuneRecipe, FinetuneSettings, LearningCurveSettings, MdSettings

    settings = {"md": [MdSettings], "finetune": [FinetuneSettings, FinetuneRecipe], "learning-curve": [LearningCurveSettings, FinetuneRecipe],
                "analyze": [AnalysisSettings], "exafs": [ExafsSettings], "compare": [CompareSettings]}
    not_settings = {"out", "experiment", "npt"}  # where the output goes, what to compare with; --npt switches npt_fs on
    for verb, command in all_commands():
        if verb not in settings:
            continue
        fields = {name for model in settings[verb] for name in model.model_fields}
        names = {p.name for p in command.params if p.param_type_name == "option"} - {"help"} - not_settings
        assert names <= fields, (verb, names - fields)


def help_text(capsys, *verb: str) -> str:
    """A verb's --help as one line: the box drawing and the wrapping removed."""
    text = cli(capsys, *verb, "--help").stdout
    return " ".join(text.replace("│", " ").split())


def test_md_help_shows_the_settings_defaults(capsys):
    """--help reads each default from MdSettings: the two cannot drift apart."""
    from mlip_exafs.settings import MdSettings

    fields = MdSettings.model_fields
    text = help_text(capsys, "md")
    assert f"Target temperature (K); default {fields['temperature_k'].default:g}." in text
    assert f"default {fields['snapshot_every_fs'].default:g}fs" in text
    assert f"default {fields['equilibration_fs'].default / 1000:g}ps" in text
    assert f"default {fields['nuclei'].default}" in text


def test_help_texts_state_the_defaults_the_stages_use(capsys):
    """Defaults that are rules or constants (epochs per N, learning rate per freeze mode, shell cut) come from
    mlip_exafs.settings, where the stages read them too."""
    from mlip_exafs.finetune import epochs_for_n
    from mlip_exafs.settings import DEFAULT_LR, DEFAULT_SHELL_RMAX_A, SampleSpec

    finetune = help_text(capsys, "finetune")
    assert epochs_for_n(25) == 100 and epochs_for_n(26) < 100 and "100 up to N = 25" in finetune
    assert epochs_for_n(1000) == 40 and "at least 40" in finetune
    assert f"{DEFAULT_LR['energy-scale']:g} energy-scale" in finetune
    assert f"(default: {DEFAULT_SHELL_RMAX_A:g} or half the cell width)" in help_text(capsys, "analyze")
    assert f"default {SampleSpec.model_fields['supercell'].default}" in help_text(capsys, "sample")


def test_help_defaults_of_stage_functions_agree_with_them(capsys):
    """Verbs without a settings model show their function's default in --help; those must agree with the functions."""
    import inspect

    from mlip_exafs.commands import label, study, validate
    from mlip_exafs.importers import import_files
    from mlip_exafs.label import label_structures
    from mlip_exafs.study import run_study
    from mlip_exafs.validate import validate as validate_fn

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert validate.VALIDATE_THREADS == default(validate_fn, "threads")
    assert label.LABEL_MPI_RANKS == default(label_structures, "mpi_ranks")
    assert label.IMPORT_FORMAT == default(import_files, "fmt")
    assert label.IMPORT_STRESS_UNITS == default(import_files, "stress_units")
    assert study.STUDY_EXECUTOR == default(run_study, "executor")
    assert f"default {label.LABEL_MPI_RANKS}" in help_text(capsys, "label")


def test_help_imports_no_stage():
    """--help reads the defaults from mlip_exafs.settings, never from the stages: importing those (numpy, ase, scipy,
    matplotlib) made every --help seconds slower."""
    code = ("import contextlib, io, sys; sys.argv = ['mlip-exafs', 'md', '--help']\n"
            "from mlip_exafs.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main()\n"
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'larch', 'mlip_exafs.md', 'mlip_exafs.exafs', 'mlip_exafs.compare', "
            "'mlip_exafs.finetune', 'mlip_exafs.analysis') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_cli_runs_with_a_typer_that_has_no_flag_label_method(capsys, monkeypatch):
    """The '<bool>' label fix patches a typer 0.29 method; another typer (as on the GPU machine, 2026-12-04) lacks it."""
    from typer.core import TyperOption

    for cls in TyperOption.__mro__:  # typer 0.29 defines it on TyperOption and on its base class
        if "display_type_rich" in vars(cls):
            monkeypatch.delattr(cls, "display_type_rich")
    assert not hasattr(TyperOption, "display_type_rich")
    result = cli(capsys, "potentials")
    assert result.returncode == 0 and "sevennet-0" in result.stdout


def test_no_verb_prints_the_help_and_no_empty_error():
    """A bare 'mlip-exafs' (or 'mlip-exafs dataset') printed its help and then 'error: ; see ...' with status 2."""
    for args in ([], ["dataset"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "Usage" in proc.stdout and "error" not in proc.stderr
