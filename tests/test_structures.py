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


def test_min_image_half_width():
    assert np.isclose(min_image_half_width(load_structure("w-bcc", "4x4x4")), 2 * 3.165)
