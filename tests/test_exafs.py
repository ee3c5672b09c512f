"""EXAFS stage: fast engine against per-snapshot FEFF8L, the no-disorder limit, outputs and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest

from conftest import assert_nothing_written, assert_one_line_error, cli, run_cli
from mlip_exafs.errors import UserError
from mlip_exafs.exafs import ExafsSettings, read_chi_csv, run_exafs
from mlip_exafs.spectra import FTWindow, k_weighted_r_factor
from mlip_exafs.structures import load_structure

WINDOW = FTWindow(kmin_inv_a=3.0, kmax_inv_a=15.0)


def gaussian_snapshots(name: str, supercell: str, n_frames: int, sigma_a: float, path, seed: int = 0):
    """Independent Gaussian displacements: enough disorder to test engine against engine."""
    rng = np.random.default_rng(seed)
    base = load_structure(name, supercell)
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, sigma_a, atoms.positions.shape)
        frames.append(atoms)
    ase.io.write(path, frames)
    return path


def both_engines(traj, tmp_path, **fields):
    chis = {}
    for engine in ("fast", "feff"):
        settings = ExafsSettings(engine=engine, scf_radius_a=None, n_blocks=2, **fields)
        k, chis[engine] = read_chi_csv(run_exafs(settings, traj, tmp_path / engine))
    return k, chis


def test_fast_engine_matches_per_snapshot_feff_with_multiple_scattering(tmp_path):
    # bcc W to 4.6 Å: two single-scattering shells, 3-leg triangles and 4-leg paths
    traj = gaussian_snapshots("w-bcc", "3x3x3", 3, 0.05, tmp_path / "w.extxyz")
    k, chi = both_engines(traj, tmp_path, absorber="W", edge="L3", rmax_a=4.6, max_frames=2, max_absorbers=2)
    r = k_weighted_r_factor(k, chi["fast"], chi["feff"], WINDOW)
    assert r <= 1e-3, r
    info = json.loads((tmp_path / "fast" / "exafs.json").read_text())
    assert info["engine_info"]["ms_path_types"] > 0
    assert np.max(np.abs(k**2 * chi["feff"])) > 0.5  # a real spectrum, not zeros


def test_focusing_paths_take_feffs_amplitude_at_their_instantaneous_angle(tmp_path):
    """bcc W to 6 Å holds the 180° path absorber → shell 1 → shell 5 (5.48 Å), whose forward-scattering amplitude
    changes within degrees of bending. With ideal-angle amplitudes the fast engine was R 1.2e-3 from per-snapshot
    FEFF here (σ 0.05 Å, 4 frames × 2 absorbers; 2.2e-3 at σ 0.07 Å); by angle 3.4e-4 (2.5e-4)."""
    traj = gaussian_snapshots("w-bcc", "4x4x4", 2, 0.05, tmp_path / "w.extxyz", seed=1)
    k, chi = both_engines(traj, tmp_path, absorber="W", edge="L3", rmax_a=6.0, nleg=4, max_frames=2, max_absorbers=2)
    r = k_weighted_r_factor(k, chi["fast"], chi["feff"], WINDOW)
    assert r <= 6e-4, r
    info = json.loads((tmp_path / "fast" / "exafs.json").read_text())["engine_info"]
    assert info["focusing_path_types"] >= 1


def test_a_bent_path_keeps_its_legs_and_takes_the_angle_asked():
    from mlip_exafs.exafs.fast import bent_to, type_legs, vertex_angles_deg
    from mlip_exafs.exafs.paths import PathType

    d, u = 2.741, np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    paths = {"0-1-5": PathType(3, np.array([d * u, 2 * d * u]), (1, 2), 2 * d),  # straight through shell 1
             "0-5-1": PathType(3, np.array([2 * d * u, d * u]), (2, 1), 2 * d),  # the same path reversed
             "0-1-5-1": PathType(4, np.array([d * u, 2 * d * u, d * u]), (1, 2, 1), 2 * d)}  # forward, back, forward
    for name, path in paths.items():
        assert vertex_angles_deg(type_legs(path)).max() == pytest.approx(180.0), name
        for angle in (180.0, 175.0, 160.0):
            scatterers, ipots = bent_to(path, angle)
            nodes = np.vstack([np.zeros(3), scatterers])
            legs = np.roll(nodes, -1, axis=0) - nodes
            assert vertex_angles_deg(legs).max() == pytest.approx(angle, abs=1e-6), (name, angle)
            assert np.linalg.norm(legs[:2], axis=1) == pytest.approx([d, d]), name  # the bend keeps both legs at the pivot
            assert sorted(ipots.tolist()) == sorted(path.ipots)
        assert bent_to(paths["0-5-1"], 170.0)[1].tolist() == [1, 2]  # reversed: its ipots with it


def test_fast_engine_reduces_to_feff_perfect_crystal_two_elements(tmp_path):
    # no disorder: FEFF's own perfect-crystal χ(k) (degenerate paths merged, σ² = 0)
    traj = gaussian_snapshots("ws2", "3x3x1", 1, 0.0, tmp_path / "ws2.extxyz")
    k, chi = both_engines(traj, tmp_path, absorber="W", edge="L3", rmax_a=3.8, max_absorbers=1)
    r = k_weighted_r_factor(k, chi["fast"], chi["feff"], WINDOW)
    assert r <= 1e-4, r


def test_outputs_and_convergence_diagnostics(tmp_path):
    folder = tmp_path / "md"
    folder.mkdir()
    gaussian_snapshots("w-bcc", "3x3x3", 4, 0.04, folder / "snapshots.extxyz")  # the md stage's file name
    settings = ExafsSettings(absorber="W", edge="L3", rmax_a=4.0, scf_radius_a=None, n_blocks=4)
    chi_csv = run_exafs(settings, folder, tmp_path / "out")
    assert chi_csv.read_text().splitlines()[0] == "k,chi"
    conv = np.loadtxt(tmp_path / "out" / "convergence.csv", delimiter=",", skiprows=1)
    assert conv.shape[1] == 5 and np.all(conv[:, 4] >= 0) and np.any(conv[:, 4] > 0)
    assert not np.allclose(conv[:, 2], conv[:, 3])  # different frames give different halves
    np.testing.assert_allclose(conv[:, 1], 0.5 * (conv[:, 2] + conv[:, 3]), atol=1e-7)  # equal-size halves
    info = json.loads((tmp_path / "out" / "exafs.json").read_text())
    assert info["n_frames"] == 4 and info["n_absorbers"] == 54
    assert 0 < info["half_vs_half_r_factor"] < 1
    assert {"settings", "timing_s", "provenance"} <= set(info)
    for png in ("chi_k2.png", "ft.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(absorber="Mo"), "absorber 'Mo' is not in the structure"),
        (dict(rmax_a=7.0), "exceeds half the supercell width"),
        (dict(edge="L7"), "edge 'L7'"),
        (dict(absorber="H", edge="L3"), "no L3 edge"),
    ],
)
def test_bad_input_is_one_line_user_error(tmp_path, fields, message):
    traj = gaussian_snapshots("w-bcc", "3x3x3", 1, 0.0, tmp_path / "w.extxyz")
    settings = ExafsSettings(**{"scf_radius_a": None, **fields})
    with pytest.raises(UserError) as err:
        run_exafs(settings, traj, tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_missing_trajectory_in_one_line(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "mlip_exafs", "exafs", str(tmp_path / "none.extxyz"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: trajectory") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--rmax", "7"], ["exceeds half the supercell width (4.75 Å)", "--rmax ≤ 4.75"]),
        (["--absorber", "Mo"], ["absorber 'Mo' is not in the structure", "choose --absorber"]),
        (["--absorber", "Xx"], ["not a chemical element symbol"]),
        (["--edge", "L7"], ["edge 'L7'", "use one of K, L1"]),
        (["--absorber", "H", "--edge", "L3"], ["no L3 edge"]),
        (["--engine", "warp"], ["--engine input should be", "'fast' or 'feff'"]),
        (["--rmax", "2"], ["--rmax 2 Å keeps no path: the first shell around W is at 2.741 Å"]),
        (["--ideal-supercell", "3x3x3"], ["--ideal-supercell 3x3x3 repeats the ideal structure of --ideal, which is not given (the frame average is the reference); "
                                          "give --ideal too, or leave --ideal-supercell out"]),  # was recorded in exafs.json and unused
    ],
    ids=["rmax", "absorber-not-in-structure", "absorber-not-an-element", "edge-unknown", "edge-not-of-element", "engine-unknown", "rmax-below-first-shell",
         "ideal-supercell-without-ideal"],
)
def test_bad_exafs_options(capsys, tmp_path, w_traj, args, needles):
    out = tmp_path / "exafs"
    assert_one_line_error(cli(capsys, "exafs", w_traj, "--out", out, *args), *needles)
    assert_nothing_written(out)


# ---------------------------------------------------------------- rmax against the shells, absorber and edge defaults


def test_rmax_just_past_a_shell_moves_into_the_gap():
    """bcc W: 5.5 Å sits 0.018 Å above the 8-atom shell at 5.482 Å; the cut goes to the 5.482-6.330 Å gap's middle."""
    from mlip_exafs.shells import cut_between_shells

    w = load_structure("w-bcc", "4x4x4")
    centers = np.arange(len(w))
    cut = cut_between_shells(w, centers, 5.5, limit_a=6.33)
    assert cut.rmax_a == pytest.approx(5.906, abs=1e-3) and cut.gap_a == pytest.approx((5.482, 6.330), abs=1e-3)
    assert "5.482" in cut.note and "moved to 5.906" in cut.note and "8 atoms per absorber" in cut.note
    clear = cut_between_shells(w, centers, 6.0, limit_a=6.33)  # 0.52 and 0.33 Å from the shells: kept
    assert clear.rmax_a == 6.0 and clear.note is None
    below = cut_between_shells(w, centers, 5.45, limit_a=6.33)  # below the shell: the gap below, which is narrow
    assert below.rmax_a == pytest.approx(0.5 * (5.249 + 5.482), abs=1e-3) and "narrow gap" in below.note
    small = load_structure("w-bcc", "3x3x3")  # half width 4.7475 Å, before the middle of the gap above 4.476 Å
    limited = cut_between_shells(small, np.arange(len(small)), 4.5, limit_a=4.7475)
    assert limited.rmax_a == 4.747 and "half the cell width, in the 4.476-5.249 Å gap" in limited.note
    assert cut_between_shells(small, np.arange(len(small)), 4.5, limit_a=4.55).rmax_a == pytest.approx(0.5 * (3.165 + 4.476), abs=1e-3)


@pytest.mark.parametrize(
    "symbols, absorber",
    [(["W"] * 4, "W"), (["W", "S", "S"], "W"), (["Fe", "S", "S"], "Fe"), (["As", "As", "S", "S", "S"], "As"), (["Cu", "O", "Cu"], "Cu")],
)
def test_default_absorber_is_the_only_element_heavier_than_ar(symbols, absorber):
    from mlip_exafs.geometry import default_absorber

    assert default_absorber(symbols) == absorber


def test_no_default_absorber_among_two_heavy_elements():
    from mlip_exafs.geometry import default_absorber

    with pytest.raises(UserError, match="cannot tell the absorber among Ti, Sr; give 'absorber'"):
        default_absorber(["Sr", "Ti", "O", "O", "O"])


@pytest.mark.parametrize("element, edge", [("Cu", "K"), ("Sr", "K"), ("As", "K"), ("Sn", "K"), ("Sb", "L3"), ("W", "L3")])
def test_default_edge_k_up_to_sn_l3_above(element, edge):
    from mlip_exafs.spectra import default_edge

    assert default_edge(element) == edge


@pytest.mark.slow
def test_exafs_cli_defaults_absorber_edge_reports_setup_and_moves_rmax(tmp_path):
    """No --absorber/--edge: W and L3 from the snapshots; --rmax 4.5 on a 3x3x3 cell moves to half the cell width; setup lines on stderr."""
    traj = gaussian_snapshots("w-bcc", "3x3x3", 2, 0.03, tmp_path / "w.extxyz")
    proc = run_cli("exafs", str(traj), "--out", str(tmp_path / "out"), "--rmax", "4.5", "--scf-radius", "0", "--blocks", "2", "--nleg", "2")
    assert proc.returncode == 0, proc.stderr
    assert "note: rmax 4.5 Å lay 0.024 Å from the shell at 4.476 Å" in proc.stdout and "W absorbers (L3 edge, rmax 4.747 Å)" in proc.stdout
    assert "FEFF8L potentials of a" in proc.stderr and "tabulating FEFF amplitudes" in proc.stderr
    info = json.loads((tmp_path / "out" / "exafs.json").read_text())
    assert (info["absorber"], info["edge"]) == ("W", "L3")
    assert info["rmax"]["requested_a"] == 4.5 and info["rmax"]["used_a"] == info["settings"]["rmax_a"] == 4.747


def test_default_rmax_is_six_or_half_the_cell_then_clear_of_shells():
    from mlip_exafs.exafs import choose_rmax

    big, small = load_structure("w-bcc", "4x4x4"), load_structure("w-bcc", "3x3x3")
    assert choose_rmax(big, np.arange(len(big)), None).rmax_a == 6.0  # clear of 5.482 and 6.330 Å
    assert choose_rmax(small, np.arange(len(small)), None).rmax_a == pytest.approx(1.5 * 3.165)  # half the cell, 0.27 Å past 4.476 Å


def test_exafs_help_states_the_defaults(capsys):
    """Defaults in round brackets: rich would take '[default: ...]' for markup and print nothing."""
    text = " ".join(cli(capsys, "exafs", "--help").stdout.replace("│", " ").split())
    assert "(default: the only element, or the only one heavier than Ar)" in text
    assert "(default: K up to Sn (Z 50), L3 above)" in text and "(default: 6, or half the cell width)" in text


@pytest.mark.parametrize("bad", ["nan-position", "inf-position", "nan-cell"])
@pytest.mark.parametrize("verb", ["exafs", "analyze"])
def test_non_finite_trajectory_is_refused_before_spglib(capsys, tmp_path, w_traj, verb, bad):
    """NaN positions used to reach spglib, which segfaulted (exit 139, no message)."""
    frames = ase.io.read(w_traj, index=":")
    if bad == "nan-cell":
        frames[1].set_cell(np.where(np.eye(3, dtype=bool), np.nan, frames[1].cell.array))
    else:
        positions = frames[1].get_positions()
        positions[3, 1] = np.nan if bad == "nan-position" else np.inf
        frames[1].set_positions(positions)
    traj = tmp_path / "bad.extxyz"
    ase.io.write(traj, frames)
    out = tmp_path / "out"
    assert_one_line_error(cli(capsys, verb, traj, "--out", out), "frame 1 of", "NaN or infinite positions or cell")
    assert_nothing_written(out)


def test_all_potentials_figure_is_journal_sized_png_and_svg(tmp_path):
    """The report's overlay of every potential goes into a paper as it is: PNG and SVG, at most a page (7.5 in) wide."""
    import re

    from mlip_exafs.exafs import plot_models
    from mlip_exafs.spectra import FTWindow

    k = np.linspace(0, 16, 321)
    chis = {name: (k, np.sin(2 * k * r) * np.exp(-0.01 * k**2) / (k + 1)) for name, r in (("experiment", 2.7), ("chgnet", 2.72))}
    plot_models(chis, FTWindow(3.0, 14.0, 1.0, 2), tmp_path / "models.png", reference="experiment")
    assert (tmp_path / "models.png").stat().st_size > 5_000
    svg = (tmp_path / "models.svg").read_text()
    assert float(re.search(r'width="([\d.]+)pt"', svg).group(1)) / 72 <= 7.5


def test_equal_reference_clusters_share_one_feff_potentials(tmp_path, monkeypatch):
    """Two MDs of one structure (another seed, as another temperature or potential) compute FEFF8L's potentials once."""
    monkeypatch.setenv("MLIP_EXAFS_CACHE", str(tmp_path / "cache"))
    settings = ExafsSettings(absorber="W", edge="L3", rmax_a=3.0, scf_radius_a=None, n_blocks=2)
    for seed in (1, 2):
        folder = tmp_path / f"md{seed}"
        folder.mkdir()
        gaussian_snapshots("w-bcc", "3x3x3", 4, 0.01, folder / "snapshots.extxyz", seed=seed)
        run_exafs(settings, folder, tmp_path / f"out{seed}")
    entries = list((tmp_path / "cache" / "feff-potentials").iterdir())
    assert len(entries) == 1, entries
    first, second = (tmp_path / f"out{seed}" / "potentials" for seed in (1, 2))
    assert (first / "feff_pot.inp").read_text() == (second / "feff_pot.inp").read_text()
    assert (first / "phase.pad").read_bytes() == (second / "phase.pad").read_bytes() == (entries[0] / "phase.pad").read_bytes()


def test_cluster_key_does_not_depend_on_atom_order():
    from mlip_exafs.exafs.feff import Cluster
    from mlip_exafs.exafs.stage import _round_cluster

    rng = np.random.default_rng(0)
    positions = np.vstack([np.zeros(3), rng.choice([-1.5, 0.0, 1.5], size=(12, 3))])
    ipots = np.concatenate([[0], rng.integers(1, 3, 12)])
    order = np.concatenate([[0], 1 + rng.permutation(12)])
    a, b = _round_cluster(Cluster(positions, ipots)), _round_cluster(Cluster(-0.0 * positions + positions[order], ipots[order]))
    np.testing.assert_array_equal(a.positions_a, b.positions_a)
    np.testing.assert_array_equal(a.ipots, b.ipots)
    assert a.ipots[0] == 0 and not np.any(a.positions_a[0])


# ---------------------------------------------------------------- references and frames the path sum cannot use


def _hot_w_frames(n: int = 10, sigma_a: float = 0.1, seed: int = 2) -> list:
    from test_analysis import gaussian_frames

    return gaussian_frames(n, sigma_a, seed, ideal=load_structure("w-bcc", "4x4x4"))


def test_a_failed_symmetrization_leaves_the_plain_average():
    """spglib failed half way through refining this average (two atoms 0 Å apart, shifts of 2 Å): refined on a copy and
    checked now, the reference stays within thermal noise of the ideal bcc sites."""
    from mlip_exafs.geometry import snapshots_from_frames

    reference = snapshots_from_frames(_hot_w_frames(), None).reference
    ideal = load_structure("w-bcc", "4x4x4")
    shift = np.abs(reference.positions - ideal.positions).max()
    assert shift < 0.2, reference.info["reference"]
    assert reference.get_all_distances(mic=True)[np.triu_indices(len(reference), 1)].min() > 2.5


def test_an_ideal_in_another_atom_order_or_overlapping_atoms_are_refused():
    from mlip_exafs.geometry import snapshots_from_frames

    frames = _hot_w_frames(3, 0.03)
    permuted = load_structure("w-bcc", "4x4x4")[np.random.default_rng(0).permutation(128)]
    with pytest.raises(UserError, match="same elements in another atom order or with another origin"):
        snapshots_from_frames(frames, permuted)
    frames[2].positions[5] = frames[2].positions[0] + 0.3
    with pytest.raises(UserError, match=r"frame 2 has atoms (0 and 5|5 and 0) 0\.\d\d Å apart .*the MD blew up"):
        snapshots_from_frames(frames, None)


def test_a_feff_program_that_stops_with_status_0_is_an_error(tmp_path):
    """rdinp without an atom of a listed potential prints 'Cannot calculate potentials' and STOPs with status 0;
    the next program then failed to find its input, and the user got a FileNotFoundError of phase.pad."""
    from mlip_exafs.exafs.feff import Cluster, Potentials, feff_input, run_module

    w = load_structure("w-bcc", "3x3x3")
    pos = w.positions - w.positions[0]
    pos = pos[np.argsort(np.linalg.norm(pos, axis=1))][:15]
    ipots = np.ones(len(pos), int)
    ipots[0] = 0
    (tmp_path / "feff.inp").write_text(feff_input(Cluster(pos, ipots), Potentials("W", ("Mo", "W")), "L3", 1.0, 2, None))
    with pytest.raises(UserError, match="FEFF8L rdinp failed in .*Cannot calculate potentials"):
        run_module("rdinp", tmp_path)


def test_lowercase_absorber_and_edge_are_read_as_compare_reads_them():
    settings = ExafsSettings(absorber="w", edge="l3")
    assert (settings.absorber, settings.edge) == ("W", "L3")


def test_a_minority_element_beyond_the_potentials_radius_still_gets_its_potential(tmp_path):
    """One Mo more than 6 Å from the first absorber: FEFF was given a Mo potential without a Mo atom and stopped."""
    atoms = load_structure("w-bcc", "4x4x4")
    far = int(np.argmax(atoms.get_distances(0, range(len(atoms)), mic=True)))
    atoms.symbols[far] = "Mo"
    ase.io.write(tmp_path / "wmo.extxyz", [atoms, atoms])
    settings = ExafsSettings(absorber="W", edge="L3", rmax_a=3.0, scf_radius_a=None, max_absorbers=2)
    chi = read_chi_csv(run_exafs(settings, tmp_path / "wmo.extxyz", tmp_path / "out"))
    assert np.abs(chi[1]).max() > 0
