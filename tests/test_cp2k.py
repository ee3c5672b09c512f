"""The CP2K driver: SCF convergence read from its output; the shell command ASE starts, with the path quoted."""

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
