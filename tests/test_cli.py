import re

import mlip_exafs
from conftest import assert_one_line_error, run_cli


def test_version():
    proc = run_cli("--version", check=True)
    assert proc.stdout.strip() == f"mlip-exafs {mlip_exafs.__version__}"


def test_potentials_lists_both_models():
    out = run_cli("potentials", check=True).stdout
    assert "chgnet" in out and "sevennet-0" in out


def test_singlepoint_prints_energy_force_stress():
    out = run_cli("singlepoint", "w-bcc", "--potential", "chgnet", "--supercell", "2x2x2", "--threads", "1", check=True).stdout
    energy = float(re.search(r"energy\s+(-?\d+\.\d+) eV", out).group(1))
    assert -14.0 < energy / 16 < -10.0
    assert float(re.search(r"max \|force\|\s+(\S+)", out).group(1)) < 1e-3
    assert "stress (GPa)" in out


def test_singlepoint_bad_inputs_are_one_line_errors(tmp_path):
    assert_one_line_error(run_cli("singlepoint", "ws2", "--potential", "nope"), "unknown potential", "chgnet")
    assert_one_line_error(run_cli("singlepoint", str(tmp_path / "x.cif")), "neither a file nor a built-in")
    assert_one_line_error(run_cli("singlepoint", "ws2", "--supercell", "3x3"), "NxMxL")
