"""The analysis stage: σ² of known Gaussian disorder, blocking errors, RDF normalisation, angles, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

from conftest import assert_nothing_written, assert_one_line_error, cli, run_cli
from mlip_exafs.analysis import AnalysisSettings, analyze, blocking_error
from mlip_exafs.structures import load_structure

SIGMA_U_A = 0.05  # per Cartesian component: every pair's MSRD is 2 σ_u² = 0.005 Å²


def gaussian_frames(n_frames: int, sigma_u_a: float, seed: int, supercell: str = "4x4x1", ideal=None) -> list:
    """Ideal 2H-WS2 (or ``ideal``) with independent Gaussian displacements of every atom in every frame."""
    ideal = load_structure("ws2", supercell) if ideal is None else ideal
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        frame = ideal.copy()
        frame.positions += rng.normal(0.0, sigma_u_a, frame.positions.shape)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def synthetic_traj(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("traj") / "snapshots.extxyz"
    ase.io.write(path, gaussian_frames(200, SIGMA_U_A, seed=11), format="extxyz")
    return path


@pytest.mark.parametrize("reference", ["ws2", None])
def test_msrd_of_known_gaussian_disorder_is_recovered(synthetic_traj, tmp_path, reference):
    settings = AnalysisSettings(absorber="W", reference=reference, reference_supercell="4x4x1" if reference else None)
    result = analyze([synthetic_traj], settings, tmp_path)
    shells = {s["label"]: s for s in result["trajectories"][0]["shells"]}
    assert list(shells)[:3] == ["W-S1", "W-W1", "W-S2"]
    expected_r = {"W-S1": 2.405, "W-W1": 3.153, "W-S2": 3.966}  # 2H-WS2 shells (NOTES.md)
    true_sigma2 = 2 * SIGMA_U_A**2
    for label, r in expected_r.items():
        s = shells[label]
        assert s["n"] == 6
        assert s["r_ideal"] == pytest.approx(r, abs=0.01)
        assert s["sigma2"] == pytest.approx(true_sigma2, rel=0.05), (label, s)
        assert 0 < s["sigma2_err"] < 0.05 * true_sigma2
    for name in ("analysis.json", "rdf.csv", "rdf.png", "shells.png", "angles.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_msrd_scales_with_disorder(tmp_path):
    """σ² follows 2σ_u² for a second, larger disorder: the estimator is not tuned to one value."""
    path = tmp_path / "big.extxyz"
    ase.io.write(path, gaussian_frames(60, 0.1, seed=5, supercell="3x3x1"), format="extxyz")
    shells = analyze([path], AnalysisSettings(reference="ws2", reference_supercell="3x3x1"), tmp_path / "out")["trajectories"][0]["shells"]
    assert shells[0]["sigma2"] == pytest.approx(0.02, rel=0.05)


def test_blocking_error_sees_time_correlation():
    """AR(1) with φ = 0.9: the error of the mean is √((1+φ)/(1−φ)) ≈ 4.4× the naive one."""
    rng = np.random.default_rng(0)
    phi, n = 0.9, 2**15
    x = np.empty(n)
    x[0] = 0.0
    noise = rng.normal(size=n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    naive = x.std(ddof=1) / np.sqrt(n)
    assert blocking_error(x) / naive == pytest.approx(np.sqrt((1 + phi) / (1 - phi)), rel=0.3)
    white = rng.normal(size=n)
    assert blocking_error(white) == pytest.approx(white.std(ddof=1) / np.sqrt(n), rel=0.3)


def test_rdf_first_peak_integrates_to_the_coordination(synthetic_traj, tmp_path):
    analyze([synthetic_traj], AnalysisSettings(), tmp_path)
    header = (tmp_path / "rdf.csv").read_text().splitlines()[0].split(",")
    data = np.loadtxt(tmp_path / "rdf.csv", delimiter=",", skiprows=1)
    r, g = data[:, 0], data[:, [k for k, name in enumerate(header) if name.endswith(":S-W")][0]]
    atoms = load_structure("ws2", "4x4x1")
    density_s = sum(1 for s in atoms.get_chemical_symbols() if s == "S") / atoms.get_volume()
    peak = (r > 2.0) & (r < 2.8)
    n_ws = np.sum(4 * np.pi * r[peak] ** 2 * density_s * g[peak]) * (r[1] - r[0])
    assert n_ws == pytest.approx(6.0, rel=0.02)


def test_bond_angles_of_the_trigonal_prism(synthetic_traj, tmp_path):
    result = analyze([synthetic_traj], AnalysisSettings(reference="ws2", reference_supercell="4x4x1"), tmp_path)
    angles = {a["label"]: a for a in result["trajectories"][0]["angles"]}
    assert set(angles) == {"S-W-S", "W-S-W"}
    assert angles["S-W-S"]["per_center"] == 15 and angles["W-S-W"]["per_center"] == 3
    # prism: S-W-S ≈ 82° (in-plane and vertical edges) and ≈ 136° (diagonals); W-S-W ≈ 82°
    assert [round(a) for a in angles["S-W-S"]["ideal_deg"]] == [82, 136]
    assert [round(a) for a in angles["W-S-W"]["ideal_deg"]] == [82]
    assert 1.0 < angles["S-W-S"]["rms_deviation_deg"] < 5.0
    hist = angles["W-S-W"]["histogram"]
    assert np.sum(hist["density_per_deg"]) * 1.0 == pytest.approx(1.0, abs=1e-4)


def test_cli_compares_two_trajectories_and_labels_them(synthetic_traj, tmp_path):
    second = tmp_path / "run2" / "snapshots.extxyz"
    second.parent.mkdir()
    ase.io.write(second, gaussian_frames(20, 0.08, seed=3), format="extxyz")
    (second.parent / "md.json").write_text(json.dumps({"settings": {"potential": "sevennet-0", "temperature_k": 300.0}}))
    proc = run_cli("analyze", str(synthetic_traj), str(second.parent), "--absorber", "W", "--out", str(tmp_path / "cmp"), check=True)
    assert "W-S1" in proc.stdout
    summary = json.loads((tmp_path / "cmp" / "analysis.json").read_text())
    labels = [t["label"] for t in summary["trajectories"]]
    assert labels == [synthetic_traj.parent.name, "sevennet-0 300 K"]  # folder name; potential + T from md.json
    s1 = [t["shells"][0]["sigma2"] for t in summary["trajectories"]]
    assert s1[1] > s1[0]  # larger disorder in the second run
    assert "provenance" in summary


def test_cli_reference_of_wrong_size_is_a_one_line_error(synthetic_traj, tmp_path):
    proc = run_cli("analyze", str(synthetic_traj), "--reference", "ws2", "--out", str(tmp_path))
    assert_one_line_error(proc, "--reference-supercell")


def test_cli_reference_supercell_without_a_reference_is_a_one_line_error(capsys, synthetic_traj, tmp_path):
    """It was recorded in analysis.json and unused: without --reference each trajectory's average is the reference."""
    out = tmp_path / "out"
    assert_one_line_error(cli(capsys, "analyze", synthetic_traj, "--reference-supercell", "5x5x5", "--out", out),
                          "--reference-supercell 5x5x5 repeats the ideal structure of --reference, which is not given "
                          "(each trajectory's average is the reference); give --reference too, or leave --reference-supercell out")
    assert_nothing_written(out)


def test_cli_unknown_absorber_is_a_one_line_error(synthetic_traj, tmp_path):
    proc = run_cli("analyze", str(synthetic_traj), "--absorber", "Mo", "--out", str(tmp_path))
    assert_one_line_error(proc, "absorber")


def pyrite_frames(n_frames: int, sigma_u_a: float, seed: int) -> list:
    """FeS2 pyrite (Pa-3, a = 5.417 Å, S x = 0.385) 2x2x2: around Fe, S shells at 5.152 Å (6) and 5.265 Å (12)."""
    from ase.spacegroup import crystal

    ideal = crystal(["Fe", "S"], basis=[(0, 0, 0), (0.385, 0.385, 0.385)], spacegroup=205, cellpar=[5.417] * 3 + [90] * 3).repeat((2, 2, 2))
    return gaussian_frames(n_frames, sigma_u_a, seed, ideal=ideal)


@pytest.mark.slow
def test_shell_tolerance_keeps_close_shells_apart_and_is_an_option(tmp_path):
    """Pyrite's 5.15/5.26 Å Fe-S shells are two shells by default; --shell-tol 0.12 merges them (n = 18); Fe is the default absorber."""
    traj = tmp_path / "fes2.extxyz"
    ase.io.write(traj, pyrite_frames(4, 0.02, seed=1), format="extxyz")
    run_cli("analyze", str(traj), "--shell-rmax", "5.4", "--out", str(tmp_path / "default"), check=True)
    run_cli("analyze", str(traj), "--shell-rmax", "5.4", "--shell-tol", "0.12", "--out", str(tmp_path / "merged"), check=True)

    def far_fe_s(folder):
        summary = json.loads((tmp_path / folder / "analysis.json").read_text())
        return [(s["n"], round(s["r_ideal"], 2)) for s in summary["trajectories"][0]["shells"] if s["neighbor"] == "S" and s["r_ideal"] > 5.0]

    assert far_fe_s("default") == [(6, pytest.approx(5.152, abs=0.02)), (12, pytest.approx(5.265, abs=0.02))]
    assert far_fe_s("merged") == [(18, pytest.approx((6 * 5.152 + 12 * 5.265) / 18, abs=0.02))]
    assert json.loads((tmp_path / "default" / "analysis.json").read_text())["settings"]["absorber"] == "Fe"


def test_cli_shell_rmax_beyond_half_the_cell_is_a_one_line_error(synthetic_traj, tmp_path):
    proc = run_cli("analyze", str(synthetic_traj), "--shell-rmax", "6", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "--shell-rmax 6 Å exceeds half the supercell width (5.46 Å)", "--shell-rmax ≤ 5.46")
    assert not (tmp_path / "out").exists()


def test_shells_end_where_the_exafs_stage_cuts_never_past_half_the_cell(tmp_path):
    """bcc W 2x2x2: half the cell width is the second shell's distance (3.165 Å), so each of its 6 'neighbours' is one
    of 3 atoms counted twice. analyze reported that shell (n = 6, σ² of correlated pairs); like exafs it now stops
    in the gap below it, at the radius the EXAFS stage cuts (#23)."""
    from mlip_exafs.exafs import choose_rmax
    from mlip_exafs.structures import min_image_half_width

    ideal = load_structure("w-bcc", "2x2x2")
    half = min_image_half_width(ideal)
    assert half == pytest.approx(3.165, abs=1e-3)
    traj = tmp_path / "w.extxyz"
    ase.io.write(traj, gaussian_frames(8, 0.03, seed=2, ideal=ideal), format="extxyz")
    exafs_cut = choose_rmax(ideal, np.arange(len(ideal)), half)
    for rmax in (None, half):
        settings = AnalysisSettings(reference="w-bcc", reference_supercell="2x2x2", shell_rmax_a=rmax)
        (entry,) = analyze([traj], settings, tmp_path / f"out-{rmax}")["trajectories"]
        assert [(s["label"], s["n"]) for s in entry["shells"]] == [("W-W1", 8)]
        assert entry["shell_rmax"]["used_a"] == exafs_cut.rmax_a < half
        assert "moved to" in entry["shell_rmax"]["note"]


def test_bond_angles_keep_every_site_of_an_element():
    """Spinel Fe3O4: Fe on tetrahedral (4 O at 1.9 Å, 109.5°) and octahedral sites (6 O at 2.06 Å, 90° and 180°); each
    Fe's own nearest shell counts, not the element's shortest bond (which left the octahedral Fe out)."""
    from ase.spacegroup import crystal

    from mlip_exafs.analysis import angles_deg, nearest_neighbour_angles

    spinel = crystal(["Fe", "Fe", "O"], basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.2549, 0.2549, 0.2549)], spacegroup=227,
                     setting=2, cellpar=[8.396, 8.396, 8.396, 90, 90, 90])
    (o_fe_o,) = [a for a in nearest_neighbour_angles(spinel, 0.1) if a.label == "O-Fe-O"]
    ideal = angles_deg(o_fe_o, spinel.get_scaled_positions(wrap=False)[None], spinel.cell.array[None])[0]
    assert sorted({round(float(a)) for a in ideal}) == [88, 92, 109, 180]  # the octahedron is trigonally distorted (u ≠ 1/4)
    assert o_fe_o.per_center == pytest.approx((8 * 6 + 16 * 15) / 24)
