import re

import numpy as np
import pytest

from mlip_exafs.errors import UserError
from mlip_exafs.structures import load_structure, min_image_half_width, parse_supercell


def test_ws2_first_shell_is_w_s_at_2p41():
    atoms = load_structure("ws2")
    assert atoms.get_chemical_formula() == "S4W2"
    w = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "W"]
    s = [i for i, sym in enumerate(atoms.get_chemical_symbols()) if sym == "S"]
    d = atoms.get_all_distances(mic=True)[np.ix_(w, s)]
    assert 2.40 <= d.min() <= 2.42
    assert np.isclose(atoms.cell.cellpar()[2], 12.323)


def test_mos2_shells_around_mo():
    """2Hc-MoS2: six S at 2.418 Å and six Mo at a = 3.1604 Å, as the cited experimental structure gives."""
    from ase.neighborlist import neighbor_list

    atoms = load_structure("mos2")
    assert atoms.get_chemical_formula() == "Mo2S4"
    i, j, d = neighbor_list("ijd", atoms, 3.5)
    mo = atoms.numbers[i] == 42
    to_s, to_mo = mo & (atoms.numbers[j] == 16), mo & (atoms.numbers[j] == 42)
    assert np.allclose(d[to_s], 2.418, atol=1e-3) and to_s.sum() == 12  # 6 per Mo, 2 Mo
    assert np.allclose(d[to_mo], 3.1604, atol=1e-4) and to_mo.sum() == 12


def test_w_bcc_nearest_neighbour():
    atoms = load_structure("w-bcc", "2x2x2")
    assert len(atoms) == 16
    d = atoms.get_all_distances(mic=True)
    assert np.isclose(d[d > 0].min(), 3.165 * np.sqrt(3) / 2)


def test_supercell_parsing_and_errors():
    assert parse_supercell("3x3x1") == (3, 3, 1)
    assert len(load_structure("ws2", "3x3x1")) == 54
    for bad in ("3x3", "0x1x1", "axbxc"):
        with pytest.raises(UserError, match="NxMxL"):
            parse_supercell(bad)


def test_structure_file_roundtrip_and_errors(tmp_path):
    import ase.io

    path = tmp_path / "POSCAR"
    ase.io.write(path, load_structure("ws2"), format="vasp")
    assert len(load_structure(path)) == 6
    with pytest.raises(UserError, match="neither a file nor a built-in"):
        load_structure(tmp_path / "missing.cif")
    garbage = tmp_path / "bad.cif"
    garbage.write_text("this is not a cif\n")
    with pytest.raises(UserError, match="cannot read structure file"):
        load_structure(garbage)
    with pytest.raises(UserError, match="no structure given"):
        load_structure("")


def test_overlapping_atoms_and_flat_cells_are_refused(tmp_path):
    """Duplicated sites gave NaN energies with exit 0; a cell of three coplanar vectors a LinAlgError."""
    import ase.io
    from ase import Atoms

    overlap = tmp_path / "overlap.extxyz"
    ase.io.write(overlap, Atoms("Cu2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[3.6] * 3, pbc=True))
    with pytest.raises(UserError, match=r"atoms 0 \(Cu\) and 1 \(Cu\) are 0.10 Å apart"):
        load_structure(overlap)
    image = tmp_path / "image.extxyz"  # the partner is a periodic image
    ase.io.write(image, Atoms("Cu2", positions=[[0, 0, 0], [3.55, 0, 0]], cell=[3.6] * 3, pbc=True))
    with pytest.raises(UserError, match="0.05 Å apart"):
        load_structure(image)
    flat = tmp_path / "flat.extxyz"
    ase.io.write(flat, Atoms("Cu", cell=[[3.6, 0, 0], [0, 3.6, 0], [1.8, 1.8, 0]], pbc=True))
    with pytest.raises(UserError, match="cell of zero volume"):
        load_structure(flat)


def test_min_image_half_width():
    assert np.isclose(min_image_half_width(load_structure("w-bcc", "4x4x4")), 2 * 3.165)


def test_srtio3_shells_around_sr():
    """Cubic SrTiO3 (a = 3.905 Å): around Sr 12 O at a/√2, 8 Ti at a√3/2, 6 Sr at a."""
    from ase.neighborlist import neighbor_list

    atoms = load_structure("srtio3")
    assert atoms.get_chemical_formula() == "O3SrTi" and np.allclose(atoms.cell.cellpar(), [3.905] * 3 + [90] * 3)
    i, j, d = neighbor_list("ijd", atoms, 4.0)
    sr = atoms.numbers[i] == 38
    for z, distance, count in ((8, 3.905 / np.sqrt(2), 12), (22, 3.905 * np.sqrt(3) / 2, 8), (38, 3.905, 6)):
        shell = d[sr & (atoms.numbers[j] == z)]
        assert len(shell) == count and np.allclose(shell, distance, atol=1e-3)


@pytest.mark.parametrize("name, fmt", [("srtio3.cif", "cif"), ("POSCAR", "vasp"), ("CONTCAR", "vasp"), ("srtio3.extxyz", "extxyz")])
def test_structure_files_that_ase_writes_are_read_back(tmp_path, name, fmt):
    """CIF, POSCAR/CONTCAR and extxyz: the same crystal, cell and atoms, as the study's `structure` accepts them."""
    import ase.io

    reference = load_structure("srtio3")
    ase.io.write(tmp_path / name, reference, format=fmt)
    atoms = load_structure(tmp_path / name, "2x2x2")
    assert len(atoms) == 40 and atoms.get_chemical_formula() == "O24Sr8Ti8"
    assert np.allclose(atoms.cell.cellpar(), [7.81] * 3 + [90] * 3, atol=1e-4)


def test_a_structure_file_without_a_cell_or_unreadable_is_a_one_line_error(tmp_path):
    import ase.io
    from ase import Atoms

    ase.io.write(tmp_path / "molecule.extxyz", Atoms("SrO", positions=[(0, 0, 0), (0, 0, 2.1)]))
    with pytest.raises(UserError, match="not a 3D periodic crystal; give a file with a full unit cell") as error:
        load_structure(tmp_path / "molecule.extxyz")
    binary = tmp_path / "srtio3.cif"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="cannot read structure file") as unreadable:
        load_structure(binary)
    assert "\n" not in str(error.value) + str(unreadable.value)


PARTIAL_CIF = """data_x
_cell_length_a 4.2
_cell_length_b 4.2
_cell_length_c 4.2
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{sites}
O1 O 0.5 0.5 0.5 1.0
"""


@pytest.mark.parametrize("sites, needle", [
    ("Fe1 Fe 0 0 0 0.5\nNi1 Ni 0 0 0 0.5", "partially occupied site (Fe 0.5 + Ni 0.5)"),
    ("Fe1 Fe 0 0 0 0.9", "partially occupied site (Fe 0.9)"),
    ("Fe1 Fe 0 0 0 0.9999", None),
])
def test_partially_occupied_cif_sites_are_refused(tmp_path, sites, needle):
    """ASE would put the majority species on the site: Fe0.5Ni0.5O would run as NiO, Fe0.9O as FeO."""
    path = tmp_path / "x.cif"
    path.write_text(PARTIAL_CIF.format(sites=sites))
    if needle is None:
        assert load_structure(path).get_chemical_formula() == "Fe4O4"
        return
    with pytest.raises(UserError, match=re.escape(needle)):
        load_structure(path)
