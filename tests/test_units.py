"""Stress units and signs between ASE, VASP and CHGNet: the classic fine-tuning bug."""

import numpy as np
import pytest

from mlip_exafs.units import (
    GPA_PER_EV_A3,
    ase_stress_to_gpa,
    gpa_to_ase_stress,
    gpa_to_vasp_kbar,
    matrix_to_voigt,
    vasp_kbar_to_gpa,
    voigt_to_matrix,
)


def test_ev_per_a3_is_160_gpa():
    assert GPA_PER_EV_A3 == pytest.approx(160.21766, rel=1e-6)
    assert ase_stress_to_gpa([1.0])[0] == pytest.approx(160.21766, rel=1e-6)
    assert gpa_to_ase_stress(ase_stress_to_gpa([0.3, -0.2]))== pytest.approx([0.3, -0.2])


def test_vasp_kbar_is_compressive_positive():
    # 10 kbar of VASP pressure is 1 GPa compressive = -1 GPa in the tensile-positive convention.
    assert vasp_kbar_to_gpa([10.0])[0] == pytest.approx(-1.0)
    assert vasp_kbar_to_gpa(gpa_to_vasp_kbar([2.5, -0.7])) == pytest.approx([2.5, -0.7])


def test_voigt_matrix_round_trip_keeps_order():
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # xx yy zz yz xz xy
    m = voigt_to_matrix(voigt)
    assert m[1, 2] == 4.0 and m[0, 2] == 5.0 and m[0, 1] == 6.0
    assert np.allclose(m, m.T)
    assert np.allclose(matrix_to_voigt(m), voigt)


def compressed_ws2():
    from mlip_exafs.structures import load_structure

    atoms = load_structure("ws2")
    atoms.set_cell(atoms.cell.array * 0.97, scale_atoms=True)
    return atoms


def test_chgnet_gpa_is_ase_sign_and_compression_is_negative():
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    from mlip_exafs.potentials import calculator_for

    atoms = compressed_ws2()
    atoms.calc = calculator_for("chgnet", atoms, threads=1)
    ase_gpa = ase_stress_to_gpa(atoms.get_stress(voigt=True))
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    model_gpa = model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="efs")["s"]
    assert np.allclose(matrix_to_voigt(model_gpa), ase_gpa, atol=1e-3)
    assert (ase_gpa[:3] < 0).all()  # a compressed cell pushes outwards: negative (compressive) stress


def test_structuredata_receives_stress_in_chgnet_gpa():
    """Our training data path hands StructureData stresses that come out in GPa, tensile positive."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip_exafs.finetune.chgnet import structure_data

    atoms = compressed_ws2()
    stress_ev_a3 = np.array([-0.01, -0.02, -0.005, 0.001, 0.002, 0.003])
    atoms.calc = SinglePointCalculator(atoms, energy=-4800.0, forces=np.zeros((len(atoms), 3)), stress=stress_ev_a3)
    data = structure_data([atoms], {"W": -800.0, "S": -800.0})
    _, targets = data[0]
    assert np.allclose(targets["s"].numpy(), voigt_to_matrix(ase_stress_to_gpa(stress_ev_a3)), atol=1e-5)
    assert float(targets["e"]) == pytest.approx(0.0)  # -4800 eV over 6 atoms minus -800 eV/atom
