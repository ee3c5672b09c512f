"""Spectrum headers: the absorber and edge a file names, the defaults, and theory against data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mlip_exafs.errors import UserError
from mlip_exafs.exafs import theory_absorber_edge
from mlip_exafs.spectra import absorber_and_edge, spectrum_header

REPO = Path(__file__).resolve().parents[1]
W_FOIL = REPO / "examples" / "data" / "W_metal_rt_01.xdi"
SHARED = Path("/work/shared/data/exafs")  # the other real spectra (Sr K, As K), where this machine has them


@pytest.mark.parametrize(
    "name, expected",
    [("W_metal_rt_01.xdi", ("W", "L3")), ("SrTiO3_rt_01.xdi", ("Sr", "K")), ("as2s3_roomt_scan1.xdi", ("As", "K"))],
)
def test_xdi_header_names_element_and_edge(name, expected):
    path = W_FOIL if name == W_FOIL.name else SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    assert spectrum_header(path) == expected
    assert absorber_and_edge(path) == expected  # no --absorber/--edge needed


def test_athena_project_header(tmp_path):
    """An Athena project written by larch: the element from the background group, the edge from its E0."""
    from larch.io import read_xdi
    from larch.io.athena_project import AthenaProject

    xdi = read_xdi(str(W_FOIL))
    xdi.mu = np.log(xdi.i0 / xdi.itrans)
    project = AthenaProject()
    project.add_group(xdi)
    project.save(str(tmp_path / "w.prj"))
    assert spectrum_header(tmp_path / "w.prj") == ("W", "L3")


def test_columns_have_no_header_and_fall_back_to_the_theory_then_the_default_edge(tmp_path):
    columns = tmp_path / "chi.txt"
    np.savetxt(columns, np.column_stack([np.arange(0.5, 15, 0.05), np.zeros(290)]))
    assert spectrum_header(columns) == (None, None)
    assert absorber_and_edge(columns, theory=("Cu", "K")) == ("Cu", "K")
    assert absorber_and_edge(columns, absorber="Cu") == ("Cu", "K")
    assert absorber_and_edge(columns, absorber="Pt") == ("Pt", "L3")
    with pytest.raises(UserError, match="does not name its element .* give 'absorber'"):
        absorber_and_edge(columns)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(theory=("Cu", "K")), "the theory is Cu K .exafs.json. but the spectrum is W L3"),
        (dict(absorber="Cu"), "is a W L3 spectrum .its header. but 'absorber' is Cu"),
        (dict(edge="K"), "but 'edge' is K"),
    ],
    ids=["theory-differs", "absorber-differs", "edge-differs"],
)
def test_theory_or_options_against_the_header_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        absorber_and_edge(W_FOIL, **kwargs)
    assert "\n" not in str(err.value)


def test_theory_absorber_edge_from_exafs_json(tmp_path):
    assert theory_absorber_edge(tmp_path / "chi.csv") == (None, None)
    (tmp_path / "exafs.json").write_text(json.dumps({"absorber": "Cu", "edge": "K", "settings": {"absorber": "Cu", "edge": "K"}}))
    assert theory_absorber_edge(tmp_path / "chi.csv") == ("Cu", "K") == theory_absorber_edge(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / "exafs.json").write_text(json.dumps({"settings": {"absorber": "W", "edge": "L3"}}))  # written before #28
    assert theory_absorber_edge(old) == ("W", "L3")


def test_given_e0_sets_k_zero():
    from mlip_exafs.spectra import read_experiment

    auto = read_experiment(W_FOIL, "W", "L3")
    given = read_experiment(W_FOIL, "W", "L3", e0_ev=auto.e0_ev + 5.0)
    assert given.e0_ev == auto.e0_ev + 5.0
    assert not np.allclose(given.chi[100:200], auto.chi[100:200])  # the k scale moved


# ---------------------------------------------------------------- #23: finite, monotonic, units detected


def _foil_columns() -> tuple[np.ndarray, np.ndarray]:
    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    return energy, np.log(i0 / itrans)


def _foil_chi() -> tuple[np.ndarray, np.ndarray]:
    from mlip_exafs.spectra import read_experiment

    exp = read_experiment(W_FOIL, "W", "L3")
    return exp.k_inv_a, exp.chi


def _bad_spectrum(kind: str, tmp: Path) -> Path:
    energy, mu = _foil_columns()
    k, chi = _foil_chi()
    columns = {
        "kev": (energy / 1000.0, mu),  # was read as k and χ: a silent wrong result
        "nan-mu": (energy, np.where(np.arange(len(mu)) == 50, np.nan, mu)),
        "nan-chi": (k, np.where(np.arange(len(k)) == 50, np.nan, chi)),
        "nan-energy": (np.where(np.arange(len(energy)) == 5, np.nan, energy), mu),
        "k-decreasing": (k[::-1], chi[::-1]),
        "chi-zero": (k, np.zeros_like(k)),
        "neither": (np.linspace(0.0, 40.0, 300), np.linspace(1.0, 2.0, 300)),  # not χ (no oscillation), not a W L3 scan in keV
    }[kind]
    path = tmp / f"{kind}.dat"
    np.savetxt(path, np.column_stack(columns))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("kev", "look like keV (10.057-11.3081, around the edge at 10.207 keV); give energies in eV (multiply that column by 1000)"),
        ("nan-mu", "NaN or infinite value (data row 51)"),
        ("nan-chi", "NaN or infinite value (data row 51)"),
        ("nan-energy", "NaN or infinite value (data row 6)"),
        ("k-decreasing", "k in .* decreases; sort the rows by increasing k"),
        ("chi-zero", "cannot tell whether"),
        ("neither", "cannot tell whether .* holds k .* and χ or E and μ"),
    ],
)
def test_two_column_units_and_values_are_checked(tmp_path, kind, message):
    from mlip_exafs.spectra import read_experiment

    with pytest.raises(UserError) as err:
        read_experiment(_bad_spectrum(kind, tmp_path), "W", "L3")
    assert message in str(err.value) or re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


def test_k_chi_and_e_mu_columns_are_told_apart(tmp_path):
    """χ(k) oscillates about zero, μ(E) steps at the edge: each file is read the way it was written."""
    from mlip_exafs.spectra import column_kind, read_experiment

    energy, mu = _foil_columns()
    k, chi = _foil_chi()
    assert column_kind(k, chi, tmp_path / "chi.dat", 10207.0) == "k"
    assert column_kind(energy, mu, tmp_path / "mu.dat", 10207.0) == "ev"
    np.savetxt(tmp_path / "kev.xdi.dat", np.column_stack([energy / 1000.0, mu]))
    with pytest.raises(UserError, match="look like keV"):
        read_experiment(tmp_path / "kev.xdi.dat", "W", "L3")


def test_keV_energies_in_an_xdi_file_are_refused(tmp_path):
    """The same check for μ(E) from an XDI file (was: 'edge at 10 eV but W L3 is at 10207 eV')."""
    from mlip_exafs.spectra import read_experiment

    lines = W_FOIL.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        if line.startswith("#") or not line.strip():
            out.append(line)
        else:
            e, *rest = line.split()
            out.append(" ".join([f"{float(e) / 1000.0:.6f}", *rest]) + "\n")
    (tmp_path / "kev.xdi").write_text("".join(out))
    with pytest.raises(UserError, match="look like keV"):
        read_experiment(tmp_path / "kev.xdi", "W", "L3")


def test_a_huge_rbkg_is_refused_not_a_nan_spectrum():
    from mlip_exafs.spectra import read_experiment

    with pytest.raises(UserError, match="gave no usable χ.k.; use a smaller 'rbkg_a'"):
        read_experiment(W_FOIL, "W", "L3", rbkg_a=1e6)


def test_a_folder_given_as_the_spectrum_is_one_line_error(tmp_path):
    """Was an IsADirectoryError traceback (the file's first bytes are read to tell XDI from columns)."""
    from mlip_exafs.spectra import read_experiment, spectrum_temperature_k

    for read in (lambda p: read_experiment(p, "W", "L3"), spectrum_header, spectrum_temperature_k):
        with pytest.raises(UserError, match="is a folder, not a file; give the spectrum file"):
            read(tmp_path)


def _w_foil_columns(tmp_path: Path, name: str, columns) -> Path:
    energy, itrans, i0 = np.loadtxt(W_FOIL, comments="#", unpack=True)
    arrays = {"e": energy, "mu": np.log(i0 / itrans), "itrans": itrans, "i0": i0}
    path = tmp_path / name
    np.savetxt(path, np.column_stack([arrays[c] for c in columns]))
    return path


@pytest.mark.parametrize("columns, rows, e0_ev, needle", [
    (("e", "mu"), slice(None), 10.207, "10.207 looks like keV; give it in eV (10207)"),
    (("e", "mu"), slice(None), 20000.0, "20000 eV lies outside the energies of"),
    (("e", "mu"), slice(None), 10500.0, "10500 eV is +293 eV from the W L3 edge"),
    (("e", "itrans", "i0"), slice(None), None, "falls across the edge at"),  # a beamline file: It read as μ
    (("e", "itrans", "i0"), slice(None), None, "(its second of 3 columns was read as μ: give a file of E and μ)"),
    (("e", "mu"), "post-edge", None, "eV below the edge (E0 found"),
])
def test_a_mu_that_would_fit_nothing_is_refused_with_what_to_do(tmp_path, columns, rows, e0_ev, needle):
    """Each of these ran the whole comparison before and ended in a generic 'fit failed' or ignored --e0."""
    from mlip_exafs.spectra import read_experiment

    path = _w_foil_columns(tmp_path, "w.dat", columns)
    if rows == "post-edge":  # the scan starts 25 eV above the edge
        data = np.loadtxt(path)
        np.savetxt(path, data[data[:, 0] > 10232.0])
    with pytest.raises(UserError, match=re.escape(needle)) as err:
        read_experiment(path, "W", "L3", e0_ev=e0_ev)
    assert "\n" not in str(err.value)


def test_e0_inside_the_scan_is_used_and_chi_files_refuse_it(tmp_path):
    from mlip_exafs.spectra import read_experiment

    path = _w_foil_columns(tmp_path, "w.dat", ("e", "mu"))
    assert read_experiment(path, "W", "L3", e0_ev=10210.0).e0_ev == pytest.approx(10210.0)
    k = np.linspace(0.05, 14, 280)
    np.savetxt(tmp_path / "chi.dat", np.column_stack([k, 0.3 * np.sin(5.5 * k) * np.exp(-0.01 * k * k)]))
    with pytest.raises(UserError, match="is χ\\(k\\): its k grid already fixes E0; drop"):
        read_experiment(tmp_path / "chi.dat", "W", "L3", e0_ev=10207.0)


def test_lowercase_absorber_and_empty_file(tmp_path):
    """'w' is W; an empty file is one line, with no numpy warning printed before it."""
    import warnings

    from mlip_exafs.spectra import read_experiment

    assert absorber_and_edge(W_FOIL, "w", None, ("W", "L3")) == ("W", "L3")
    (tmp_path / "empty.dat").write_text("")
    (tmp_path / "comments.dat").write_text("# nothing measured\n")
    for name, needle in (("empty.dat", "is empty"), ("comments.dat", "has 0 rows")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(UserError, match=needle):
                read_experiment(tmp_path / name, "W", "L3")
