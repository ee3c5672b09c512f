"""compare stage: the real W-foil spectrum against an MD-style χ(k), and malformed spectrum files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlip_exafs.compare import CompareSettings, compare, shifted_theory
from mlip_exafs.errors import UserError
from mlip_exafs.exafs import ExafsSettings, read_chi_csv, run_exafs
from mlip_exafs.spectra import read_experiment

W_FOIL = Path(__file__).resolve().parents[1] / "examples" / "data" / "W_metal_rt_01.xdi"
pytestmark = pytest.mark.skipif(not W_FOIL.exists(), reason="W foil spectrum not available")


@pytest.fixture(scope="module")
def theory_chi(tmp_path_factory) -> Path:
    """χ(k) of Gaussian-disordered bcc W (σ ≈ 300 K) from the fast engine, non-SCF potentials."""
    import ase.io

    from mlip_exafs.structures import load_structure

    tmp = tmp_path_factory.mktemp("theory")
    rng = np.random.default_rng(3)
    base = load_structure("w-bcc", "4x4x4")
    frames = []
    for _ in range(4):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, 0.04, atoms.positions.shape)
        frames.append(atoms)
    ase.io.write(tmp / "w.extxyz", frames)
    settings = ExafsSettings(absorber="W", edge="L3", rmax_a=6.0, scf_radius_a=None, ideal="w-bcc", ideal_supercell="4x4x4", max_absorbers=16)
    return run_exafs(settings, tmp / "w.extxyz", tmp / "exafs")


def test_w_foil_comparison_fits_s02_and_de0(theory_chi, tmp_path):
    result = compare(theory_chi.parent, W_FOIL, CompareSettings(absorber="W", edge="L3"), tmp_path)
    saved = json.loads((tmp_path / "compare.json").read_text())
    for key in ("r_factor_k", "r_factor_r", "s02", "de0_ev", "kmin", "kmax", "rmin", "rmax", "provenance"):
        assert key in saved
    assert 0.5 < result["s02"] < 1.3
    assert abs(result["de0_ev"]) < 15
    assert result["r_factor_r"] < 0.1 and result["r_factor_k"] < 0.3
    assert (tmp_path / "compare.png").stat().st_size > 1000
    fitted = np.loadtxt(tmp_path / "fitted.csv", delimiter=",", skiprows=1)  # what the report overlays
    exp = read_experiment(W_FOIL, "W", "L3")
    assert np.allclose(fitted[:, 1], exp.chi, rtol=1e-6, atol=1e-9)
    assert np.allclose(fitted[:, 2], shifted_theory(*read_chi_csv(theory_chi), exp.k_inv_a, result["s02"], result["de0_ev"]), rtol=1e-6, atol=1e-9)
    # the fit is a real optimum: a wrong ΔE0 or S0² fits worse
    worse = compare_with_fixed(theory_chi, result["s02"] * 0.7, result["de0_ev"] + 5.0)
    assert worse > result["r_factor_r"]


def compare_with_fixed(theory_csv: Path, s02: float, de0: float) -> float:
    from mlip_exafs.exafs import read_chi_csv
    from mlip_exafs.spectra import FTWindow, fourier_transform, r_factor

    k_th, chi_th = read_chi_csv(theory_csv)
    exp = read_experiment(W_FOIL, "W", "L3")
    window = FTWindow(3.0, 14.0)
    model = shifted_theory(k_th, chi_th, exp.k_inv_a, s02, de0)
    a, b = fourier_transform(exp.k_inv_a, model, window), fourier_transform(exp.k_inv_a, exp.chi, window)
    m = (b.r >= 1.0) & (b.r <= 5.0)
    return r_factor(a.chir[m], b.chir[m])


def test_two_column_files_give_the_same_chi_as_xdi(tmp_path):
    xdi = read_experiment(W_FOIL, "W", "L3")
    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    np.savetxt(tmp_path / "mu.dat", np.c_[energy, np.log(i0 / itrans)], header="energy mu")
    from_mu = read_experiment(tmp_path / "mu.dat", "W", "L3")
    n = min(len(xdi.chi), len(from_mu.chi))
    np.testing.assert_allclose(from_mu.chi[:n], xdi.chi[:n], atol=1e-6)
    np.savetxt(tmp_path / "chi.dat", np.c_[xdi.k_inv_a, xdi.chi], header="k chi")
    from_chi = read_experiment(tmp_path / "chi.dat", "W", "L3")
    np.testing.assert_allclose(from_chi.chi[: len(xdi.chi)], xdi.chi, atol=1e-6)


def _xdi_lines() -> list[str]:
    return W_FOIL.read_text().splitlines(keepends=True)


def _write(path: Path, lines) -> Path:
    path.write_text("".join(lines))
    return path


def _header_end(lines) -> int:
    return max(i for i, line in enumerate(lines) if line.startswith("#")) + 1


def malformed_truncated(tmp: Path) -> Path:
    lines = _xdi_lines()
    return _write(tmp / "truncated.xdi", lines[: _header_end(lines) + 8])


def malformed_no_energy(tmp: Path) -> Path:
    lines = [line.replace("Column.1: energy eV", "Column.1: time s").replace("#  energy ", "#  time ") for line in _xdi_lines()]
    return _write(tmp / "noenergy.xdi", lines)


def malformed_non_monotonic(tmp: Path) -> Path:
    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    energy[100], energy[101] = energy[101], energy[100]
    np.savetxt(tmp / "swapped.dat", np.c_[energy, np.log(i0 / itrans)])
    return tmp / "swapped.dat"


def malformed_wrong_edge(tmp: Path) -> Path:
    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    np.savetxt(tmp / "shifted.dat", np.c_[energy + 1500.0, np.log(i0 / itrans)])  # edge 1.5 keV off W L3
    return tmp / "shifted.dat"


def malformed_text(tmp: Path) -> Path:
    return _write(tmp / "words.dat", ["energy mu\n", "a b\n"] * 30)


@pytest.mark.parametrize(
    "make, message",
    [
        (malformed_truncated, "truncated"),
        (malformed_no_energy, "no energy column"),
        (malformed_non_monotonic, "not strictly increasing"),
        (malformed_wrong_edge, "W L3 is at 10207 eV"),
        (malformed_text, "not a table of numbers"),
    ],
)
def test_malformed_spectrum_is_one_line_user_error(tmp_path, make, message):
    with pytest.raises(UserError) as err:
        read_experiment(make(tmp_path), "W", "L3")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_exit_code_2_for_malformed_file(theory_chi, tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    bad = malformed_truncated(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mlip_exafs", "compare", str(theory_chi), "--experiment", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "truncated" in lines[0]


def test_athena_project_reads_like_the_xdi(tmp_path):
    from larch import Group
    from larch.io import AthenaProject

    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    project = AthenaProject(str(tmp_path / "w.prj"))
    project.add_group(Group(energy=energy, mu=np.log(i0 / itrans), filename="w_foil"))
    project.save()
    from_prj = read_experiment(tmp_path / "w.prj", "W", "L3")
    xdi = read_experiment(W_FOIL, "W", "L3")
    n = min(len(xdi.chi), len(from_prj.chi))
    np.testing.assert_allclose(from_prj.chi[:n], xdi.chi[:n], atol=1e-6)


# ---------------------------------------------------------------- the experiment's own shell fit

ROOM_TEMPERATURE = {"s02": 0.85, "de0_ev": 3.0, "W-W1": (0.012, 0.0032), "W-W2": (-0.008, 0.0045)}  # shell: (ΔR Å, σ² Å²)
HOT = {"s02": 0.95, "de0_ev": -2.0, "W-W1": (0.02, 0.0060), "W-W2": (0.01, 0.0066)}


@pytest.fixture(scope="module")
def bcc_w_paths(tmp_path_factory):
    """FEFF8L paths of the first two shells of ideal bcc W (non-SCF potentials: 1 s instead of 30)."""
    from mlip_exafs.exafs.fit import ShellFitSettings, shell_paths
    from mlip_exafs.structures import load_structure

    settings = ShellFitSettings(n_shells=2, scf_radius_a=None)
    return shell_paths(load_structure("w-bcc"), "W", "L3", settings, tmp_path_factory.mktemp("paths"))


def synthetic_spectrum(shells, truth: dict, noise: float, seed: int = 1):
    """χ(k) made by larch from the same FEFF paths with known S0², ΔE0, ΔR, σ², plus white noise."""
    from larch.xafs import feffpath, ff2chi

    from mlip_exafs.spectra import Spectrum

    paths = [feffpath(str(f), s02=truth["s02"], e0=truth["de0_ev"], deltar=truth[s.label][0], sigma2=truth[s.label][1])
             for s in shells for f in s.feff_files]
    group = ff2chi(paths, kmax=16.0)
    chi = group.chi + np.random.default_rng(seed).normal(0.0, noise, group.chi.shape)
    return Spectrum(np.asarray(group.k), chi, source="synthetic")


def test_shell_paths_have_the_crystals_names_and_coordinations(bcc_w_paths):
    shells, next_shell_a = bcc_w_paths
    assert [(s.label, s.coordination) for s in shells] == [("W-W1", 8.0), ("W-W2", 6.0)]  # analyze's names
    assert shells[0].r_ideal_a == pytest.approx(3.165 * np.sqrt(3) / 2, abs=1e-4) and next_shell_a == pytest.approx(3.165 * np.sqrt(2), abs=1e-4)


@pytest.mark.parametrize("truth", [ROOM_TEMPERATURE, HOT], ids=["room-temperature", "hot"])
def test_shell_fit_recovers_known_sigma2_of_a_synthetic_spectrum(bcc_w_paths, truth):
    """Noise 0.0005 on χ is 0.1 on k²χ at k = 14 Å⁻¹, ≈ 5 % of the signal there, as in a good transmission scan."""
    from mlip_exafs.exafs.fit import fit_shells
    from mlip_exafs.spectra import FTWindow

    shells, next_shell_a = bcc_w_paths
    spectrum = synthetic_spectrum(shells, truth, noise=0.0005)
    fit = fit_shells(spectrum, shells, FTWindow(3.0, 14.0), 1.0, next_shell_a - 0.5, third_cumulant=False)
    for label in ("W-W1", "W-W2"):
        dr, sigma2 = truth[label]
        got = fit["shells"][label]
        assert got["sigma2"] == pytest.approx(sigma2, rel=0.05), label
        assert 0 < got["sigma2_err"] < 0.05 * sigma2, label
        assert got["r"] == pytest.approx(got["r_ideal"] + dr, abs=0.003), label
    assert fit["s02"] == pytest.approx(truth["s02"], rel=0.05)
    assert fit["de0_ev"] == pytest.approx(truth["de0_ev"], abs=0.5)
    assert fit["r_factor"] < 0.01
    assert fit["fit_failed"] is None and fit["at_bound"] == []


@pytest.mark.slow
def test_w_foil_shell_fit_through_the_cli(theory_chi, tmp_path):
    """compare --fit-shells 2 on the real W foil: σ² per shell with errors and a good fit (SCF potentials, ≈ 30 s)."""
    from conftest import run_cli

    proc = run_cli("compare", str(theory_chi.parent), "--experiment", str(W_FOIL), "--out", str(tmp_path), "--fit-shells", "2", check=True)
    fit = json.loads((tmp_path / "compare.json").read_text())["experiment_fit"]
    assert set(fit["shells"]) == {"W-W1", "W-W2"} and fit["r_factor"] <= 0.02
    for shell in fit["shells"].values():
        assert 0.002 < shell["sigma2"] < 0.005 and 0 < shell["sigma2_err"] < 0.001
    assert 0.7 < fit["s02"] < 1.1
    assert "W-W1: N = 8" in proc.stdout
    assert (tmp_path / "experiment_fit" / "experiment_fit.svg").exists()


def test_shell_fit_without_an_ideal_structure_is_a_one_line_error(tmp_path):
    from conftest import assert_one_line_error, run_cli

    k = np.arange(0.05, 18, 0.05)
    (tmp_path / "chi.csv").write_text("k,chi\n" + "".join(f"{a},{np.sin(5 * a) / a}\n" for a in k))
    proc = run_cli("compare", str(tmp_path / "chi.csv"), "--experiment", str(W_FOIL), "--out", str(tmp_path / "o"), "--fit-shells", "2")
    assert_one_line_error(proc, "give --structure")
    assert not (tmp_path / "o").exists()


def test_compare_without_a_theory_spectrum(capsys, tmp_path):
    from conftest import assert_nothing_written, assert_one_line_error, cli

    out = tmp_path / "cmp"
    proc = cli(capsys, "compare", tmp_path / "chi.csv", "--experiment", tmp_path / "w.xdi", "--out", out)
    assert_one_line_error(proc, "chi.csv does not exist", "run 'mlip-exafs exafs' first")
    assert_nothing_written(out)


# ---------------------------------------------------------------- #28: absorber/edge from the data, fit health


def test_absorber_edge_from_the_header_and_fit_health(theory_chi, tmp_path):
    """No absorber/edge given: W L3 from the XDI header (and the theory's exafs.json); fit health recorded."""
    result = compare(theory_chi.parent, W_FOIL, CompareSettings(), tmp_path)
    assert (result["absorber"], result["edge"]) == ("W", "L3")
    health = json.loads((tmp_path / "compare.json").read_text())["fit_health"]
    assert health["s02_physical"] == (0.7 <= result["s02"] <= 1.1) and health["at_bound"] == []
    half_r = json.loads((theory_chi.parent / "exafs.json").read_text())["half_vs_half_r_factor"]
    assert health["theory_half_vs_half_r_factor"] == half_r and health["theory_converged"] == (half_r <= 0.01)
    pinned = compare(theory_chi.parent, W_FOIL, CompareSettings(s02_bounds=(0.3, 0.5)), tmp_path / "pinned")
    assert pinned["s02"] == pytest.approx(0.5) and pinned["fit_health"]["at_bound"] == ["s02"]
    assert not pinned["fit_health"]["s02_physical"]
    assert "s02 ended at a fit bound" in pinned["fit_failed"] and "R-factor" not in pinned["fit_failed"]  # R is small: only the bound fails it
    assert any("at a fit bound" in line for line in pinned["fit_health"]["warnings"])
    assert any("outside 0.7-1.1" in line and "too soft" in line for line in pinned["fit_health"]["warnings"])


def test_theory_of_another_absorber_or_edge_is_refused(theory_chi, tmp_path):
    """A Cu K χ(k) (its exafs.json says so) against the W L3 foil: refused before any fit."""
    import shutil

    cu = tmp_path / "cu"
    cu.mkdir()
    shutil.copy(theory_chi, cu / "chi.csv")
    (cu / "exafs.json").write_text(json.dumps({"absorber": "Cu", "edge": "K", "half_vs_half_r_factor": 0.001, "settings": {"absorber": "Cu", "edge": "K"}}))
    with pytest.raises(UserError, match=r"the theory is Cu K \(exafs.json\) but the spectrum is W L3") as err:
        compare(cu, W_FOIL, CompareSettings(), tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_compare_cli_prints_fit_health_and_takes_the_new_options(theory_chi, tmp_path):
    from conftest import run_cli

    proc = run_cli("compare", str(theory_chi.parent), "--experiment", str(W_FOIL), "--out", str(tmp_path),
                   "--kweight", "3", "--e0", "10207", "--s02-bounds", "0.1", "2.5", check=True)
    assert "W L3: S0² =" in proc.stdout and "fit health: S0² physical" in proc.stdout
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["kweight"] == 3 and saved["experiment_e0_ev"] == 10207.0 and saved["settings"]["s02_bounds"] == [0.1, 2.5]


# ---------------------------------------------------------------- #23: a fit that cannot start or ends far from the data


def _foil_as_theory(tmp: Path, name: str, transform=lambda k, chi: (k, chi)) -> Path:
    """The W foil's own χ(k) as a 'theory' chi.csv: the fit is exact (S0² 1, ΔE0 0) unless transformed; no FEFF needed."""
    exp = read_experiment(W_FOIL, "W", "L3")
    k, chi = transform(exp.k_inv_a, exp.chi)
    folder = tmp / name
    folder.mkdir()
    (folder / "chi.csv").write_text("k,chi\n" + "".join(f"{a},{b}\n" for a, b in zip(k, chi)))
    return folder / "chi.csv"


@pytest.mark.parametrize(
    "transform, options, message",
    [
        (lambda k, chi: (k, np.where(np.arange(len(k)) == 100, np.nan, chi)), [], "has a NaN or infinite k or χ (data row 101)"),
        (lambda k, chi: (k[::-1], chi[::-1]), [], "decreases; sort the rows by increasing k"),
        (None, ["--rmin", "2.0", "--rmax", "2.01"], "holds 0.1 independent points for 2 fitted parameters; widen the R range"),
        (None, ["--rbkg", "9"], "--rbkg (9 Å) must not exceed --rmin (1 Å)"),
        (None, ["--rbkg", "1e6"], "must not exceed --rmin"),
        (None, ["--rbkg", "2.4"], "--rbkg (2.4 Å) must not exceed --rmin (1 Å): the background removal takes out what lies below rbkg"),
        (None, ["--fit-shells", "2", "--structure", "w-bcc", "--fit-rmax", "1.2"], "the shell fit (--fit-rmax, --rmin): the window k 3-14 1/Å, R 1-1.2 Å holds 1.4 independent points for 6 fitted parameters"),
    ],
    ids=["nan-theory", "decreasing-k-theory", "tiny-r-window", "rbkg-above-rmax", "huge-rbkg", "rbkg-above-rmin", "tiny-shell-fit-window"],
)
def test_a_fit_that_cannot_start_is_refused_before_fitting(capsys, tmp_path, transform, options, message):
    """Each crashed with 'Initial guess is outside of provided bounds' or gave a NaN/meaningless 'result'."""
    from conftest import assert_nothing_written, assert_one_line_error, cli

    theory = _foil_as_theory(tmp_path, "theory", transform or (lambda k, chi: (k, chi)))
    out = tmp_path / "out"
    proc = cli(capsys, "compare", theory, "--experiment", W_FOIL, "--out", out, *options)
    assert_one_line_error(proc, message)
    assert proc.returncode == 2
    assert_nothing_written(out)


@pytest.mark.parametrize("options, name", [(["--structure", "w-bcc"], "--structure"), (["--third-cumulant"], "--third-cumulant"), (["--fit-rmax", "3"], "--fit-rmax")],
                         ids=["structure", "third-cumulant", "fit-rmax"])
def test_shell_fit_settings_without_the_shell_fit_are_refused(capsys, tmp_path, options, name):
    """Without --fit-shells there is no shell fit: each was recorded in compare.json and unused."""
    from conftest import assert_nothing_written, assert_one_line_error, cli

    out = tmp_path / "out"
    proc = cli(capsys, "compare", _foil_as_theory(tmp_path, "theory"), "--experiment", W_FOIL, "--out", out, *options)
    assert_one_line_error(proc, f"{name} is a setting of the shell fit, which runs only with --fit-shells above 0; "
                                f"give --fit-shells K to fit the experiment's first K shells, or leave {name} out")
    assert proc.returncode == 2
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "transform, reason",
    [
        (lambda k, chi: (k, 0.01 * chi), "R-factor 0.941 > 0.5: the fit ends far from the data and s02 ended at a fit bound"),  # 100x too weak: S0² pinned at 3
        (lambda k, chi: (k, -chi), "R-factor 1 > 0.5"),  # sign-flipped: no S0² > 0 fits it
        (lambda k, chi: (k, np.random.default_rng(0).normal(0.0, 0.05, len(k))), "R-factor 0.967 > 0.5"),  # noise: R 0.97
    ],
    ids=["scaled", "sign-flipped", "unrelated"],
)
def test_a_fit_far_from_the_data_is_recorded_as_failed_and_the_cli_says_so(capsys, tmp_path, transform, reason):
    from conftest import assert_one_line_error, cli

    theory = _foil_as_theory(tmp_path, "theory", transform)
    result = compare(theory, W_FOIL, CompareSettings(), tmp_path / "lib")
    assert reason in result["fit_failed"] and result["fit_health"]["failed"] == result["fit_failed"]
    assert json.loads((tmp_path / "lib" / "compare.json").read_text())["fit_failed"] == result["fit_failed"]
    proc = cli(capsys, "compare", theory, "--experiment", W_FOIL, "--out", tmp_path / "cli")
    assert_one_line_error(proc, "the S0²/ΔE0 fit failed", reason, "records it as failed, not as a result")
    assert "S0² =" in proc.stdout  # the numbers are shown, and kept in compare.json, for diagnosis


def test_a_good_fit_is_not_failed_and_a_narrow_de0_bound_starts_inside_it(tmp_path):
    """The coarse ΔE0 scan (±15 eV) started outside a --de0-bound below 15 eV: 'Initial guess is outside of provided bounds'."""
    theory = _foil_as_theory(tmp_path, "theory")
    result = compare(theory, W_FOIL, CompareSettings(de0_bound_ev=0.5), tmp_path / "out")
    assert result["fit_failed"] is None and result["r_factor_r"] < 1e-6
    assert result["s02"] == pytest.approx(1.0, abs=1e-4) and abs(result["de0_ev"]) < 0.01


def test_shell_fit_far_from_the_data_is_failed_and_a_tiny_window_refused(bcc_w_paths):
    """The experiment's own shell fit: a spectrum 100x too weak pins S0² and ΔE0 at their bounds, noise ends far from
    the data (both recorded as failed), and an R range without enough independent points for its 6 parameters is
    refused before feffit starts. (A sign-flipped χ is fitted well by a π phase, ΔE0 ≈ −18 eV and ΔR ≈ +0.09 Å:
    only those unphysical values give it away; docs/robustness.md.)"""
    from mlip_exafs.exafs.fit import fit_shells
    from mlip_exafs.spectra import FTWindow, Spectrum

    shells, next_shell_a = bcc_w_paths
    good = synthetic_spectrum(shells, ROOM_TEMPERATURE, noise=0.0005)
    weak = fit_shells(Spectrum(good.k_inv_a, 0.01 * good.chi, source="weak"), shells, FTWindow(3.0, 14.0), 1.0, next_shell_a - 0.5, third_cumulant=False)
    assert weak["at_bound"] == ["s02", "de0"] and weak["fit_failed"].startswith("s02, de0 ended at a fit bound")
    noise = Spectrum(good.k_inv_a, np.random.default_rng(0).normal(0.0, 0.05, len(good.chi)), source="noise")
    fit = fit_shells(noise, shells, FTWindow(3.0, 14.0), 1.0, next_shell_a - 0.5, third_cumulant=False)
    assert fit["fit_failed"].startswith("R-factor 0.779 > 0.5")
    with pytest.raises(UserError, match="holds 0.7 independent points for 6 fitted parameters; widen the R range") as err:
        fit_shells(good, shells, FTWindow(3.0, 14.0), 2.0, 2.1, third_cumulant=False)
    assert "\n" not in str(err.value)


def test_a_one_frame_theory_is_not_converged_and_says_why(theory_chi, tmp_path):
    """exafs.json without two halves (too few frames) is no evidence of convergence: converged false, the reason named."""
    import shutil

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(theory_chi, one / "chi.csv")
    record = json.loads((theory_chi.parent / "exafs.json").read_text())
    (one / "exafs.json").write_text(json.dumps({**record, "half_vs_half_r_factor": None, "n_frames": 1, "n_blocks": 1}))
    health = compare(one, W_FOIL, CompareSettings(), tmp_path / "out")["fit_health"]
    assert health["theory_converged"] is False
    assert any("averages 1 frame(s), too few for two halves" in line for line in health["warnings"])


def test_a_k_window_too_short_names_the_limit_that_cut_it(theory_chi, tmp_path):
    with pytest.raises(UserError, match=r"overlap only up to k = 14.0 1/Å \('?kmax_inv_a'?\), less than 3 1/Å above '?kmin_inv_a'? 12; lower"):
        compare(theory_chi.parent, W_FOIL, CompareSettings(kmin_inv_a=12.0), tmp_path / "out")


def test_one_shell_fit_of_a_compound_gets_every_potential_into_feffs_cluster(tmp_path):
    """SrTiO3's first Sr shell is O at 2.76 Å; the fit's cluster (shell + 1.1 Å) held no Sr or Ti besides the absorber,
    and FEFF8L stopped with 'Cannot calculate potentials'. The cluster now grows until it holds every potential."""
    from mlip_exafs.exafs.fit import ShellFitSettings, shell_paths
    from mlip_exafs.structures import load_structure

    paths, next_shell_a = shell_paths(load_structure("srtio3"), "Sr", "K", ShellFitSettings(n_shells=1, scf_radius_a=None), tmp_path)
    assert len(paths) == 1 and next_shell_a == pytest.approx(3.905 * 3**0.5 / 2, abs=1e-3)  # Sr–Ti
