"""The CP2K driver: SCF convergence read from its output; the shell command ASE starts, with the path quoted."""

import pytest


def test_scf_convergence_is_read_from_the_cp2k_output(tmp_path):
    from mlip_exafs.cp2k import scf_converged

    out = tmp_path / "cp2k.out"
    out.write_text("  *** SCF run converged in    12 steps ***\n")
    assert scf_converged(out)
    with open(out, "a") as fh:
        offset = fh.tell()
        fh.write("  *** SCF run NOT converged ***\n")
    assert not scf_converged(out) and not scf_converged(out, offset)
    out.write_text("CP2K started, then was killed\n")
    assert not scf_converged(out)  # no verdict at all is not convergence


def test_scf_steps_add_up_over_the_runs_after_the_offset(tmp_path):
    from mlip_exafs.cp2k import scf_steps

    out = tmp_path / "cp2k.out"
    out.write_text("  *** SCF run converged in    12 steps ***\n")
    offset = out.stat().st_size
    with open(out, "a") as fh:
        fh.write("  *** SCF run converged in    23 steps ***\n  *** SCF run converged in     2 steps ***\n")
    assert scf_steps(out) == 37 and scf_steps(out, offset) == 25
    out.write_text("  *** SCF run NOT converged ***\n")
    assert scf_steps(out) is None


def test_shell_command_quotes_the_executable(monkeypatch):
    """ASE starts cp2k_shell through a shell: the one path in that string is quoted."""
    from mlip_exafs import cp2k

    monkeypatch.setattr(cp2k, "cp2k_executable", lambda: "/opt/my cp2k/cp2k_shell")
    assert cp2k.shell_command(1).endswith(" OMP_NUM_THREADS=1 '/opt/my cp2k/cp2k_shell'")


ABORT_BOX = """ *******************************************************************************
 *   ___                                                                       *
 *  /   \\                                                                      *
 * [ABORT]                                                                     *
 *  \\___/    The requested basis set <DZVP-MOLOPT-SR-GTH> for element <LA> was *
 *    |               not found in the basis set files <BASIS_MOLOPT>          *
 *  O/|                                                                        *
 * /| |                                                                        *
 * / \\                                          aobasis/basis_set_types.F:1509 *
 *******************************************************************************
"""


def test_cp2k_abort_message_is_read_from_its_box(tmp_path):
    from mlip_exafs.cp2k import abort_reason

    (tmp_path / "cp2k.out").write_text("earlier run\n" + ABORT_BOX)
    assert abort_reason(tmp_path / "cp2k.out") == ("The requested basis set <DZVP-MOLOPT-SR-GTH> for element <LA> was not found in the "
                                                   "basis set files <BASIS_MOLOPT>")
    assert abort_reason(tmp_path / "cp2k.out", offset=len("earlier run\n") + len(ABORT_BOX)) is None


def test_what_cp2k_cannot_label_is_refused_before_any_work(tmp_path, monkeypatch):
    """An element without the basis set, or a magnetic one (labels are spin-restricted), is one line before sampling."""
    from mlip_exafs.cp2k import Cp2kSettings, check_can_label
    from mlip_exafs.errors import UserError

    data = tmp_path / "data"
    data.mkdir()
    (data / "BASIS_MOLOPT").write_text("# comment\n W  DZVP-MOLOPT-SR-GTH DZVP-MOLOPT-SR-GTH-q14\n 2\n O  DZVP-MOLOPT-SR-GTH\n Fe DZVP-MOLOPT-SR-GTH\n")
    (data / "GTH_POTENTIALS").write_text("W GTH-PBE-q14 GTH-PBE\nO GTH-PBE-q6 GTH-PBE\nLa GTH-PBE-q11 GTH-PBE\nFe GTH-PBE-q16 GTH-PBE\n")
    monkeypatch.setenv("CP2K_DATA_DIR", str(data))
    check_can_label(Cp2kSettings(), {"W", "O"})
    with pytest.raises(UserError, match=r"BASIS_MOLOPT \(.*\) has no basis set DZVP-MOLOPT-SR-GTH for La; choose"):
        check_can_label(Cp2kSettings(), {"La", "O"})
    with pytest.raises(UserError, match="Fe compounds are usually magnetic, and these CP2K labels are spin-restricted"):
        check_can_label(Cp2kSettings(), {"Fe", "O"})
    check_can_label(Cp2kSettings(nonmagnetic=True), {"Fe", "O"})
    assert Cp2kSettings(nonmagnetic=True).settings_hash() == Cp2kSettings().settings_hash()  # an acknowledgement, not a level of theory
