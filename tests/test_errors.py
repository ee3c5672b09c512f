"""errors.py: a library message names a stage setting, and each front end names it in its own terms (#25).

The CLI names it as the verb's flag (``--every``), a study as its YAML key (``md.snapshot_every_fs``),
and a library user reads the quoted setting name (``'snapshot_every_fs'``).
"""

from __future__ import annotations

import pickle

import pytest
import typer

from conftest import assert_nothing_written, assert_one_line_error, cli
from mlip_exafs.cli import flags_of, invoked_flags
from mlip_exafs.errors import UserError, in_terms, setting
from mlip_exafs.files import read_json
from mlip_exafs.study.steps import ERROR_FILE, Step, run_step, yaml_names

SHORT_PRODUCTION = "production 10 fs is shorter than one snapshot interval (50 fs)"


def test_a_marked_setting_reads_as_the_setting_name():
    exc = UserError(f"{SHORT_PRODUCTION}; lengthen {setting('production_fs')} or shorten {setting('snapshot_every_fs')}")
    assert str(exc) == f"{SHORT_PRODUCTION}; lengthen 'production_fs' or shorten 'snapshot_every_fs'"
    assert exc.marked == f"{SHORT_PRODUCTION}; lengthen {setting('production_fs')} or shorten {setting('snapshot_every_fs')}"
    assert exc.in_terms({"production_fs": "--production", "snapshot_every_fs": "--every"}) == \
        f"{SHORT_PRODUCTION}; lengthen --production or shorten --every"
    assert exc.in_terms({"production_fs": "--production"}).endswith("lengthen --production or shorten 'snapshot_every_fs'")  # no flag: its name
    assert str(pickle.loads(pickle.dumps(exc))) == str(exc)  # a Dask worker sends it back pickled
    assert str(UserError("no setting in it")) == "no setting in it" and str(UserError()) == ""
    assert in_terms("a ⟦⟧ is no setting", {}) == "a ⟦⟧ is no setting"


def test_a_verbs_flags_are_its_options_named_as_settings():
    toy = typer.Typer()

    @toy.command("toy")
    def toy_cmd(snapshot_every_fs: str = typer.Option("50fs", "--every", "-e"), npt_fs: str = typer.Option("0", "--npt-time"),
                structure: str = typer.Argument("ws2")) -> None:
        """A verb whose --every is the setting snapshot_every_fs and whose --npt-time is the setting npt_fs."""

    flags = flags_of(typer.main.get_command(toy))
    assert flags["snapshot_every_fs"] == "--every" and flags["npt_fs"] == "--npt-time" and "structure" not in flags


def test_the_invoked_verb_is_found_by_click():
    import mlip_exafs.cli

    mlip_exafs.cli._register_stage_verbs()
    assert invoked_flags(["compare", "theory", "--kmin", "3"])["structure"] == "--structure"
    assert invoked_flags([]) == invoked_flags(["--version"]) == invoked_flags(["no-such-verb"]) == {}


def test_md_names_the_flags_of_a_production_shorter_than_one_snapshot(capsys, tmp_path):
    """Refused before any model loads (md's schedule), in the md verb's flags, not the setting names of its library."""
    out = tmp_path / "md"
    proc = cli(capsys, "md", "w-bcc", "--out", out, "--equilibrate", "0", "--production", "10fs", "--every", "50fs")
    assert_one_line_error(proc, SHORT_PRODUCTION, "lengthen --production or shorten --every")
    assert_nothing_written(out)


def test_a_study_step_names_the_settings_as_yaml_keys(tmp_path):
    """A step's child keeps the settings marked in its error file; the study names them as keys of its YAML."""
    settings = {"timestep_fs": 2, "equilibration_fs": 0, "production_fs": 10, "snapshot_every_fs": 50}
    step = Step("md-chgnet", "md", {"structure": "w-bcc", "settings": settings, "potential": "chgnet"})
    with pytest.raises(UserError) as err:
        run_step(tmp_path, step, "0" * 16, {})
    assert str(err.value) == f"step md-chgnet: {SHORT_PRODUCTION}; lengthen md.production_fs or shorten md.snapshot_every_fs"
    assert setting("production_fs") in read_json(tmp_path / "md-chgnet" / ERROR_FILE)["message"]


@pytest.mark.parametrize("action, name, key", [
    ("md", "snapshot_every_fs", "md.snapshot_every_fs"),
    ("exafs", "rmax_a", "exafs.rmax_a"),
    ("exafs", "absorber", "absorber"),
    ("compare", "rmax_a", "experiment.rmax_a"),
    ("compare", "kmin_inv_a", "experiment.kmin_inv_a"),
    ("fit_experiment", "edge", "exafs.edge"),
    ("finetune", "n", "finetune.n"),
    ("finetune", "potential", "finetune.base"),
    ("compare", "rbkg_a", None),  # no YAML key: the plain setting name
])
def test_yaml_names_of_a_steps_settings(action, name, key):
    assert UserError(f"fix {setting(name)}").in_terms(yaml_names(action)) == f"fix {key or repr(name)}"
