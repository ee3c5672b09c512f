"""Import of users' DFT labels: explicit unit and sign conversion, one test per format."""

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from conftest import assert_one_line_error, run_cli
from mlip_exafs.dataset import load_structures
from mlip_exafs.errors import UserError
from mlip_exafs.importers import import_files, vasp_kbar_to_ase
from mlip_exafs.structures import load_structure

VASP_DATA = Path(str(resources.files("ase.test") / "testdata" / "vasp"))  # real VASP outputs shipped with ASE


def test_vasp_kbar_conversion_reorders_and_flips_sign():
    # VASP 'in kB' order XX YY ZZ XY YZ ZX, compressive positive -> ASE xx yy zz yz xz xy, tensile positive
    ase_gpa = vasp_kbar_to_ase(np.array([-10.0, -20.0, -30.0, 1.0, 2.0, 3.0])) / GPa
    assert np.allclose(ase_gpa, [1.0, 2.0, 3.0, -0.2, -0.3, -0.1])


def test_outcar_import(tmp_path):
    db = tmp_path / "train.db"
    assert import_files([VASP_DATA / "OUTCAR_example_1"], db)["added"] == 1
    (atoms,) = load_structures(db)
    # the file's last 'in kB' line: -4.29429 -4.58894 -4.50342 0.50047 -0.94049 0.36481
    expected_gpa = [0.429429, 0.458894, 0.450342, 0.094049, -0.036481, -0.050047]
    assert np.allclose(atoms.get_stress() / GPa, expected_gpa, atol=1e-6)
    assert np.isclose(atoms.get_potential_energy(), -68.22868532)  # force-consistent free energy (eV)
    assert atoms.info["dft_code"].startswith("VASP 5.3.3")
    assert import_files([VASP_DATA / "OUTCAR_example_1"], db) == {"added": 0, "skipped": 1, "not_converged": 0}


def test_vasprun_import(tmp_path):
    db = tmp_path / "train.db"
    import_files([VASP_DATA / "vasprun_pstress.xml"], db)
    (atoms,) = load_structures(db)
    # vasprun stress: -165.99562580 kbar on the diagonal (VASP sign) = +16.59956258 GPa tensile (ASE sign)
    assert np.allclose(atoms.get_stress() / GPa, [16.59956258] * 3 + [0, 0, 0], atol=1e-7)
    assert np.abs(atoms.get_forces()).max() < 10


def _labelled_extxyz(path, stress_voigt, **extra_info):
    import ase.io

    atoms = load_structure("ws2")
    atoms.rattle(0.02, seed=1)
    atoms.calc = SinglePointCalculator(atoms, energy=-49.0, forces=np.full((6, 3), 0.1), stress=np.asarray(stress_voigt, float))
    atoms.info.update(extra_info)
    ase.io.write(path, atoms, format="extxyz")


@pytest.mark.parametrize(
    "units, written, expected_gpa",
    [
        ("ev/a3", np.array([1, 2, 3, 4, 5, 6]) * GPa, [1, 2, 3, 4, 5, 6]),
        ("gpa", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]),
        ("kbar-vasp", [10, 20, 30, 40, 50, 60], [-1, -2, -3, -4, -5, -6]),
    ],
)
def test_extxyz_import_with_stated_stress_units(tmp_path, units, written, expected_gpa):
    src = tmp_path / "labels.extxyz"
    _labelled_extxyz(src, written)
    db = tmp_path / "train.db"
    import_files([src], db, stress_units=units)
    (atoms,) = load_structures(db)
    assert np.allclose(atoms.get_stress() / GPa, expected_gpa)
    assert np.isclose(atoms.get_potential_energy(), -49.0)
    assert np.allclose(atoms.get_forces(), 0.1)


def test_extxyz_without_labels_and_with_nan_are_refused_before_writing(tmp_path):
    import ase.io

    bare = tmp_path / "bare.extxyz"
    ase.io.write(bare, load_structure("ws2"), format="extxyz")
    with pytest.raises(UserError, match="no energy or forces"):
        import_files([bare], tmp_path / "a.db")
    nan = tmp_path / "nan.extxyz"
    _labelled_extxyz(nan, [np.nan] * 6)
    with pytest.raises(UserError, match="NaN or infinite"):
        import_files([nan], tmp_path / "a.db")
    assert not (tmp_path / "a.db").exists()


def test_import_cli(tmp_path):
    db = tmp_path / "d" / "train.db"
    run_cli("import", str(VASP_DATA / "OUTCAR_example_1"), "--db", str(db), check=True)
    info = run_cli("dataset", "info", str(db), "--json", check=True).stdout
    assert '"n_all": 1' in info and '"VASP"' in info
    assert_one_line_error(run_cli("import", str(tmp_path / "nope.xml"), "--db", str(db)), "does not exist")
    # option values in any case, as --absorber and --device: GPa is gpa, OUTCAR is outcar; --format's error names auto
    run_cli("import", str(VASP_DATA / "OUTCAR_example_1"), "--db", str(db), "--format", "OUTCAR", "--stress-units", "GPa", check=True)
    assert_one_line_error(run_cli("import", str(VASP_DATA / "OUTCAR_example_1"), "--db", str(db), "--format", "poscar"),
                          "use auto, outcar, vasprun or extxyz")


def _chgnet_labelled_strained_cells(tmp_path, scale_gpa):
    """Five strained WS2 cells labelled by CHGNet, stress written in GPa times ``scale_gpa``."""
    import ase.io

    from mlip_exafs.potentials import calculator_for

    base = load_structure("ws2")
    calc = calculator_for("chgnet", base, threads=1)
    frames = []
    for i, strain in enumerate(np.linspace(-0.03, 0.03, 5)):
        atoms = base.copy()
        atoms.set_cell(base.cell * (1 + strain), scale_atoms=True)
        atoms.rattle(0.01, seed=i)
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress() / GPa * scale_gpa
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        frames.append(atoms)
    path = tmp_path / "strained.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize("scale, needle", [(-1.0, "sign-flipped"), (10.0, "factor of ~10"), (1.0, None)])
def test_stress_units_off_by_sign_or_ten_are_detected(tmp_path, scale, needle):
    src = _chgnet_labelled_strained_cells(tmp_path, scale)
    db = tmp_path / "train.db"
    if needle is None:
        assert import_files([src], db, stress_units="gpa")["added"] == 5
    else:
        with pytest.raises(UserError, match=needle):
            import_files([src], db, stress_units="gpa")
        assert not db.exists()


def test_train_test_overlap_is_refused():
    from mlip_exafs.dataset import assert_disjoint

    a, b = load_structure("ws2"), load_structure("ws2")
    b.rattle(0.05, seed=3)
    assert_disjoint([a], [b])
    with pytest.raises(UserError, match="both the training pool and the test set"):
        assert_disjoint([a, b], [b.copy()])


def test_db_below_a_file_is_one_line_error(capsys, tmp_path):
    """A --db whose folder is a file used to crash with a traceback; the file is left alone."""
    from conftest import cli

    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    proc = cli(capsys, "import", VASP_DATA / "OUTCAR_example_1", "--db", blocker / "train.db")
    assert_one_line_error(proc, f"database file {blocker / 'train.db'} cannot be created: {blocker} is a file")
    assert blocker.read_text() == "keep me"


def _rows(db):
    import ase.db

    with ase.db.connect(db) as con:
        return list(con.select())


def test_forces_on_fixed_atoms_are_the_dft_forces(tmp_path):
    """A POSCAR with selective dynamics beside the OUTCAR makes ASE zero the fixed atoms' forces; the labels keep them."""
    import ase.io
    from ase.constraints import FixAtoms

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(VASP_DATA / "OUTCAR_example_1", run / "OUTCAR")
    raw = ase.io.read(run / "OUTCAR", format="vasp-out")
    dft_forces = raw.calc.results["forces"].copy()
    fixed = raw.copy()
    fixed.set_constraint(FixAtoms(indices=[0, 1]))
    ase.io.write(run / "POSCAR", fixed, format="vasp", direct=True)
    assert np.allclose(ase.io.read(run / "OUTCAR", format="vasp-out").get_forces()[:2], 0)  # what ASE hands over
    import_files([run / "OUTCAR"], tmp_path / "train.db")
    (row,) = _rows(tmp_path / "train.db")
    assert np.abs(dft_forces[:2]).max() > 0.1
    assert np.allclose(row.forces, dft_forces)


def test_uid_is_the_label_not_the_file_name(tmp_path):
    """Two files of one name with other cells are two labels; one label from two files (or twice in a call) is one."""
    for folder, a in (("a", 3.10), ("b", 3.25)):
        (tmp_path / folder).mkdir()
        _labelled_w(tmp_path / folder / "labels.extxyz", a)
    db = tmp_path / "train.db"
    assert import_files([tmp_path / "a" / "labels.extxyz", tmp_path / "b" / "labels.extxyz"], db, check_units=False)["added"] == 2
    shutil.copy(tmp_path / "a" / "labels.extxyz", tmp_path / "copy.extxyz")
    assert import_files([tmp_path / "copy.extxyz"], db, check_units=False)["added"] == 0
    twice = tmp_path / "twice.db"
    assert import_files([VASP_DATA / "OUTCAR_example_1"] * 2, twice)["added"] == 1
    assert len(_rows(twice)) == 1


def _labelled_w(path, a, **info):
    import ase.io
    from ase.build import bulk

    atoms = bulk("W", "bcc", a=a)
    atoms.calc = SinglePointCalculator(atoms, energy=-13.0 * a, forces=np.zeros((1, 3)))
    atoms.info.update(info)
    ase.io.write(path, atoms, format="extxyz")
    return atoms


def test_labels_of_another_code_are_refused(tmp_path, data):
    """A database never mixes levels of theory: VASP into a CP2K-labelled one, CP2K into an imported one."""
    import ase.db

    from mlip_exafs.cp2k import Cp2kSettings
    from mlip_exafs.label import ensure_settings

    cp2k_db = tmp_path / "cp2k.db"
    shutil.copy(data / "test.db", cp2k_db)
    with ase.db.connect(cp2k_db) as db:
        db.metadata = {"dft_code": {"name": "CP2K", "version": "2023.1"}, "settings_hash": "abc"}
    with pytest.raises(UserError, match="holds CP2K labels from mlip-exafs label and .* VASP 5.3.3 ones"):
        import_files([VASP_DATA / "OUTCAR_example_1"], cp2k_db)
    assert len(_rows(cp2k_db)) == 2
    vasp_db = tmp_path / "vasp.db"
    import_files([VASP_DATA / "OUTCAR_example_1"], vasp_db)
    with pytest.raises(UserError, match="mixes levels of theory"):
        ensure_settings(vasp_db, Cp2kSettings())
    _labelled_w(tmp_path / "w.extxyz", 3.17)
    with pytest.raises(UserError, match="holds VASP labels"):
        import_files([tmp_path / "w.extxyz"], vasp_db, check_units=False)


def test_extxyz_virial_becomes_stress(tmp_path):
    """GAP/MACE/NequIP datasets give a virial (eV): stress = −virial / volume, eV/Å³."""
    virial = np.array([[0.6, 0.1, 0.0], [0.1, 0.3, 0.0], [0.0, 0.0, -0.9]])
    atoms = _labelled_w(tmp_path / "v.extxyz", 3.17, virial=virial)
    import_files([tmp_path / "v.extxyz"], tmp_path / "train.db", check_units=False)
    (row,) = _rows(tmp_path / "train.db")
    v = atoms.get_volume()
    assert np.allclose(row.stress, -np.array([0.6, 0.3, -0.9, 0.0, 0.0, 0.1]) / v)


def test_non_periodic_frames_are_refused_before_anything(tmp_path):
    import ase.io
    from ase.build import molecule

    frames = []
    for i in range(3):
        mol = molecule("H2O")
        mol.rattle(0.01, seed=i)
        mol.calc = SinglePointCalculator(mol, energy=-14.0, forces=np.zeros((3, 3)), stress=np.ones(6) * 0.01)
        frames.append(mol)
    ase.io.write(tmp_path / "mol.extxyz", frames, format="extxyz")
    with pytest.raises(UserError, match="frame 0 is not periodic in three dimensions"):
        import_files([tmp_path / "mol.extxyz"], tmp_path / "train.db")
    assert not (tmp_path / "train.db").exists()


def test_outcar_without_stress_and_gzipped(tmp_path):
    """ISIF = 0 (VASP's default for MD) writes no stress: the labels are energy and forces; .gz files are read too."""
    import gzip

    text = (VASP_DATA / "OUTCAR_example_1").read_text()
    (tmp_path / "OUTCAR").write_text("\n".join(line for line in text.splitlines() if "in kB" not in line))
    import_files([tmp_path / "OUTCAR"], tmp_path / "a.db")
    (row,) = _rows(tmp_path / "a.db")
    assert "stress" not in row.get("calculator_parameters", {}) and row.get("stress") is None
    (tmp_path / "OUTCAR.gz").write_bytes(gzip.compress(text.encode()))
    import_files([tmp_path / "OUTCAR.gz"], tmp_path / "b.db")
    (row,) = _rows(tmp_path / "b.db")
    assert np.isclose(row.energy, -68.22868532) and row.stress is not None
    vasprun = (VASP_DATA / "vasprun_pstress.xml").read_bytes()
    (tmp_path / "vasprun.xml.gz").write_bytes(gzip.compress(vasprun))
    assert import_files([tmp_path / "vasprun.xml.gz"], tmp_path / "c.db")["added"] == 1


def test_scf_loops_that_ran_into_nelm_are_marked_unconverged(tmp_path):
    """VASP 6 says 'EDIFF was not reached', VASP 5 says nothing; vasprun.xml: as many SCF steps as NELM."""
    text = (VASP_DATA / "OUTCAR_example_1").read_text()
    (tmp_path / "OUTCAR").write_text(text.replace("aborting loop because EDIFF is reached", "aborting loop EDIFF was not reached (unconverged)"))
    (tmp_path / "vasp5").mkdir()
    (tmp_path / "vasp5" / "OUTCAR").write_text(text.replace("aborting loop because EDIFF is reached", ""))
    xml = (VASP_DATA / "vasprun_pstress.xml").read_text()
    n_scf = xml.count("<scstep>")
    (tmp_path / "vasprun.xml").write_text(xml.replace('<i type="int" name="NELM">    60</i>', f'<i type="int" name="NELM">    {n_scf}</i>'))
    for source in (tmp_path / "OUTCAR", tmp_path / "vasp5" / "OUTCAR", tmp_path / "vasprun.xml"):
        db = source.parent / f"{source.name}.db"
        assert import_files([source], db)["not_converged"] == 1
        (row,) = _rows(db)
        assert row.scf_converged is False
    assert import_files([VASP_DATA / "vasprun_pstress.xml"], tmp_path / "ok.db")["not_converged"] == 0


@pytest.mark.parametrize("name, content, needle", [
    ("mydata", None, "needs the .db suffix"),
    ("train.json", None, "needs the .db suffix"),
    ("notes.db", "my notes", "exists and is not an SQLite database"),
])
def test_db_that_is_no_database_is_one_line_error(capsys, tmp_path, name, content, needle):
    from conftest import cli

    target = tmp_path / name
    if content:
        target.write_text(content)
    assert_one_line_error(cli(capsys, "import", VASP_DATA / "OUTCAR_example_1", "--db", target), needle)
    assert (target.read_text() == content) if content else not target.exists()
