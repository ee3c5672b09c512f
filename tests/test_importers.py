"""Import of users' DFT labels: explicit unit and sign conversion, one test per format."""

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
    assert import_files([VASP_DATA / "OUTCAR_example_1"], db) == {"added": 0, "skipped": 1}


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
