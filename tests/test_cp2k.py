"""The CP2K driver: SCF convergence and spin moments read from its output; the shell command ASE starts, with the path
quoted; spin-polarised settings, their input and multiplicity."""

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
    """An element without the basis set, or a magnetic one without a word on spin, is one line before sampling."""
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
    with pytest.raises(UserError, match=r"Fe compounds are usually magnetic, and these CP2K settings are spin-restricted; set .magnetic_moments_mub. \(e.g. {Fe: 3.0}\)"):
        check_can_label(Cp2kSettings(), {"Fe", "O"})
    check_can_label(Cp2kSettings(nonmagnetic=True), {"Fe", "O"})
    assert Cp2kSettings(nonmagnetic=True).settings_hash() == Cp2kSettings().settings_hash()  # an acknowledgement, not a level of theory
    check_can_label(Cp2kSettings(magnetic_moments_mub={"Fe": 3.0}), {"Fe", "O"})  # spin-polarised
    with pytest.raises(UserError, match=r"names Ni, which the structures do not hold; give moments to their elements \(Fe, O\)"):
        check_can_label(Cp2kSettings(magnetic_moments_mub={"Fe": 3.0, "Ni": 1.0}), {"Fe", "O"})


def test_spin_polarised_settings_are_a_level_of_theory_and_unused_spin_leaves_the_hash_alone():
    """The shipped datasets (ws2, mos2, w-bcc) were labelled before spin existed: their hash must not move."""
    from mlip_exafs.cp2k import Cp2kSettings

    assert Cp2kSettings().settings_hash() == "db9e3f5360131201"  # datasets/*/ metadata
    assert "magnetic_moments_mub" not in Cp2kSettings().as_params()  # and the label steps of committed studies keep theirs
    fe = Cp2kSettings(magnetic_moments_mub={"Fe": 3.0})
    assert fe.settings_hash() != Cp2kSettings().settings_hash()
    assert fe.level_of_theory()["magnetic_moments_mub"] == {"Fe": 3.0}
    assert Cp2kSettings(**fe.as_params()) == fe  # a study step rebuilds its settings from its parameters


def test_spin_settings_that_cannot_be_meant_are_refused():
    from pydantic import ValidationError

    from mlip_exafs.cp2k import Cp2kSettings

    with pytest.raises(ValidationError, match="not an element symbol: FE"):
        Cp2kSettings(magnetic_moments_mub={"FE": 3.0})
    with pytest.raises(ValidationError, match="contradict each other"):
        Cp2kSettings(nonmagnetic=True, magnetic_moments_mub={"Fe": 3.0})


def test_spin_polarised_input_starts_each_element_at_its_moment():
    from ase import Atoms

    from mlip_exafs.cp2k import Cp2kSettings, input_template, site_kinds

    settings = Cp2kSettings(magnetic_moments_mub={"Fe": 3.0, "O": 0.0})
    text = input_template(settings, (4, 4, 4), site_kinds(settings, Atoms("FeOFe")))
    assert "  &END DFT\n  &SUBSYS\n    &KIND Fe\n      MAGNETIZATION 3.0\n    &END KIND\n    &KIND O\n      MAGNETIZATION 0.0" in text
    assert "&SUBSYS" not in input_template(Cp2kSettings(), (4, 4, 4))


def _fake_potentials(folder, monkeypatch):
    """A GTH potential file with Fe (16 valence electrons: 3 6 7) and O (6), found where CP2K looks."""
    (folder / "GTH_POTENTIALS").write_text("Fe GTH-PBE-q16 GTH-PBE\n    3    6    7\n     0.36  2\nO GTH-PBE-q6 GTH-PBE\n    2    4\n")
    monkeypatch.setenv("CP2K_DATA_DIR", str(folder))


def test_the_multiplicity_holds_the_start_moment_at_the_parity_of_the_electrons(tmp_path, monkeypatch):
    """CP2K aborts on a multiplicity of the wrong parity ('LSD: try to use a different multiplicity'; measured: 1 Fe at 4)."""
    from ase import Atoms

    from mlip_exafs.cp2k import Cp2kSettings, spin_multiplicity

    _fake_potentials(tmp_path, monkeypatch)
    fe3 = Cp2kSettings(magnetic_moments_mub={"Fe": 3.0})
    assert spin_multiplicity(fe3, Atoms("Fe")) == 5  # 16 electrons: 3 unpaired cannot be, 4 can
    assert spin_multiplicity(fe3, Atoms("Fe2")) == 7  # 32 electrons, 6 unpaired
    assert spin_multiplicity(fe3, Atoms("FeO")) == 5  # 22 electrons
    assert spin_multiplicity(Cp2kSettings(magnetic_moments_mub={"Fe": 2.2}), Atoms("Fe2")) == 5  # 4.4 rounds to 4


SPIN_OUTPUT = """
                     Mulliken Population Analysis

 #  Atom  Element  Kind  Atomic population (alpha,beta) Net charge  Spin moment
       1     Fe       1         8.746698     7.545105    -0.291803     1.201593
       2     Fe       1         9.317283     6.390914     0.291803     2.926369
 # Total charge and spin       18.063981    13.936019     0.000000     4.127962
"""


def test_spin_moments_are_read_from_the_last_mulliken_table(tmp_path):
    """The lines are CP2K 2023.1's (2-atom bcc Fe, UKS); a spin-restricted output has no such table."""
    from mlip_exafs.cp2k import spin_moments

    out = tmp_path / "cp2k.out"
    out.write_text(SPIN_OUTPUT.replace("1.201593", "9.0"))
    offset = out.stat().st_size
    with open(out, "a") as fh:
        fh.write(SPIN_OUTPUT)
    assert spin_moments(out, offset).tolist() == [1.201593, 2.926369]
    assert spin_moments(out)[0] == 1.201593  # the last table
    out.write_text(" #  Atom  Element  Kind  Atomic population  Net charge\n       1     W       1        14.0  0.0\n # Total charge  14.0  0.0\n")
    assert spin_moments(out) is None


def test_an_antiferromagnet_starts_from_the_structures_own_moments_as_two_kinds(tmp_path, monkeypatch):
    """ASE names every atom by its element; the input names each sublattice's kind, and the multiplicity follows the sum."""
    from ase.build import bulk

    from mlip_exafs import cp2k

    _fake_potentials(tmp_path, monkeypatch)
    monkeypatch.setattr(cp2k, "cp2k_executable", lambda: "/usr/bin/cp2k_shell")
    settings = cp2k.Cp2kSettings(magnetic_moments_mub={"Fe": 3.0})
    fe = bulk("Fe", "bcc", a=2.83, cubic=True)
    fe.set_initial_magnetic_moments(None)  # ASE's bulk Fe comes with 2.3 μB on each atom
    assert cp2k.site_kinds(settings, fe) == [cp2k.Kind("Fe", "Fe", 3.0)] * 2  # no moments of its own: the element's
    fe.set_initial_magnetic_moments([2.5, -2.5])
    assert cp2k.site_kinds(settings, fe) == [cp2k.Kind("Fe", "Fe", 2.5), cp2k.Kind("Fe2", "Fe", -2.5)]
    assert cp2k.site_kinds(cp2k.Cp2kSettings(nonmagnetic=True), fe) == []
    calc = cp2k.make_calculator(settings, fe, tmp_path / "work", mpi_ranks=1)
    calc.atoms = fe.copy()
    text = calc._generate_input()
    coords = text.split("&COORD\n")[1].split("&END COORD")[0].split("\n")
    assert [line.split()[0] for line in coords if line.strip()] == ["Fe", "Fe2"]
    assert "&KIND Fe2\n         ELEMENT Fe\n         BASIS_SET DZVP-MOLOPT-SR-GTH\n         POTENTIAL GTH-PBE\n         MAGNETIZATION -2.5" in text
    assert "&KIND Fe\n         MAGNETIZATION 2.5\n         BASIS_SET DZVP-MOLOPT-SR-GTH" in text  # ASE adds the element kind's basis
    assert "MULTIPLICITY 1" in text  # ±2.5 sum to 0 unpaired of 32 electrons


def test_start_moments_in_the_structures_need_spin_and_one_number_per_atom():
    from ase.build import bulk

    from mlip_exafs.cp2k import Cp2kSettings, check_start_moments
    from mlip_exafs.errors import UserError

    fe = bulk("Fe", "bcc", a=2.83, cubic=True)
    fe.set_initial_magnetic_moments(None)  # ASE's bulk Fe comes with 2.3 μB on each atom
    check_start_moments(Cp2kSettings(nonmagnetic=True), [fe])
    fe.set_initial_magnetic_moments([2.5, -2.5])
    with pytest.raises(UserError, match="carry initial magnetic moments but the CP2K settings are spin-restricted; set 'magnetic_moments_mub'"):
        check_start_moments(Cp2kSettings(nonmagnetic=True), [fe])
    check_start_moments(Cp2kSettings(magnetic_moments_mub={"Fe": 3.0}), [fe])
    fe.set_initial_magnetic_moments(None)
    fe.set_initial_magnetic_moments([[0, 0, 2.5], [0, 0, -2.5]])
    with pytest.raises(UserError, match="non-collinear"):
        check_start_moments(Cp2kSettings(magnetic_moments_mub={"Fe": 3.0}), [fe])
