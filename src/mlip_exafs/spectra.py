"""EXAFS spectra: reading experimental files, Fourier transforms and R-factors.

Readers accept XDI (larch ``read_xdi``), Athena projects (``read_athena``) and
two-column text files, either (E in eV, μ) or (k in Å⁻¹, χ). Anything
malformed is a one-line :class:`UserError` naming the file and the fix.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from mlip_exafs.errors import UserError, first_line, setting

EDGE_TOLERANCE_EV = 100.0  # the file's edge must lie this close to the tabulated edge
MIN_POINTS = 20
HEAVIEST_K_EDGE_Z = 50  # K edges up to Sn (29.2 keV) are routine at hard-X-ray beamlines; heavier elements are measured at L3


@dataclass(frozen=True)
class FTWindow:
    """One window for every transform, so theory and experiment are comparable."""

    kmin_inv_a: float = 3.0
    kmax_inv_a: float = 14.0
    dk_inv_a: float = 1.0
    kweight: int = 2
    window: str = "hanning"


@dataclass(frozen=True)
class Spectrum:
    """χ(k) on a uniform 0.05 Å⁻¹ grid, with where it came from."""

    k_inv_a: np.ndarray
    chi: np.ndarray
    source: str
    e0_ev: float | None = None


def r_factor(model: np.ndarray, reference: np.ndarray) -> float:
    """Σ(model − reference)² / Σ reference² (complex arrays allowed)."""
    den = float(np.sum(np.abs(reference) ** 2))
    return float(np.sum(np.abs(model - reference) ** 2)) / den if den > 0 else float("nan")


def k_weighted_r_factor(k: np.ndarray, model: np.ndarray, reference: np.ndarray, window: FTWindow) -> float:
    """R-factor of k^w χ inside [kmin, kmax]."""
    m = (k >= window.kmin_inv_a) & (k <= window.kmax_inv_a)
    w = k[m] ** window.kweight
    return r_factor(w * model[m], w * reference[m])


def fourier_transform(k: np.ndarray, chi: np.ndarray, window: FTWindow):
    """larch ``xftf``; returns the larch group (r, chir, chir_mag, kwin, ...)."""
    from larch import Group  # lazy: larch, seconds to import
    from larch.xafs import xftf  # lazy: larch, seconds to import

    group = Group(k=k, chi=chi)
    xftf(group, kmin=window.kmin_inv_a, kmax=window.kmax_inv_a, dk=window.dk_inv_a, window=window.window, kweight=window.kweight)
    return group


def uniform_k(k: np.ndarray, chi: np.ndarray, step: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    grid = step * np.arange(int(np.floor(k.max() / step)) + 1)
    return grid, np.interp(grid, k, chi, left=0.0, right=0.0)


def edge_energy_ev(element: str, edge: str) -> float:
    """Tabulated edge energy (xraydb); a one-line error for an edge the element lacks."""
    import xraydb  # lazy: xraydb loads scipy.interpolate, seconds

    try:
        found = xraydb.xray_edge(element, edge)
    except Exception:
        found = None
    if found is None:
        raise UserError(f"element '{element}' has no {edge} edge in xraydb; use one of {', '.join(_edges(element))}")
    return float(found.energy)


def default_edge(element: str) -> str:
    """The edge when none is given: K up to Sn (Z = 50), L3 above."""
    if element not in atomic_numbers:
        raise UserError(f"'{element}' is not a chemical element symbol; give e.g. {setting('absorber')} W")
    return "K" if atomic_numbers[element] <= HEAVIEST_K_EDGE_Z else "L3"


def _edges(element: str) -> list[str]:
    import xraydb  # lazy: xraydb loads scipy.interpolate, seconds

    try:
        return list(xraydb.xray_edges(element))
    except Exception:
        raise UserError(f"'{element}' is not a chemical element symbol; give e.g. W") from None


# ---------------------------------------------------------------- reading

def file_kind(path: Path) -> str:
    """'athena', 'xdi' or 'columns': how an experimental file is read (header and data alike)."""
    if not path.exists():
        raise UserError(f"experiment file {path} does not exist; check the path")
    if not path.is_file():
        raise UserError(f"experiment file {path} is a folder, not a file; give the spectrum file (XDI, Athena .prj or two columns)")
    if path.suffix.lower() == ".prj":
        return "athena"
    return "xdi" if path.suffix.lower() == ".xdi" or _looks_like_xdi(path) else "columns"


def spectrum_header(path: str | Path) -> tuple[str | None, str | None]:
    """(element, edge) that the file names: XDI ``Element.symbol``/``Element.edge``, Athena's
    background element and edge; (None, None) for plain columns or a header without them."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "athena":
        element, edge = _athena_header(path)
    elif kind == "xdi":
        element, edge = _xdi_header(path)
    else:
        return None, None
    return _clean_symbol(element), (str(edge).strip().upper() or None) if edge else None


def spectrum_temperature_k(path: str | Path) -> tuple[float | None, str | None]:
    """The sample temperature in K that an XDI header gives (``Sample.temperature``), and the header's text.

    '10K', '100 K' and a bare number are kelvin, '25 C' or '25 °C' Celsius. Free text that is
    not a temperature ('room temperature') gives (None, text); a file without the key, or a
    file that is not XDI, (None, None). Read from the header lines alone: a study checks every
    spectrum's temperature when it loads its config, long before any data are read.
    """
    path = Path(path)
    if file_kind(path) != "xdi":
        return None, None
    with open(path, errors="replace") as handle:
        for line in handle:
            if not line.startswith("#") or line.startswith(("# ///", "#---")):
                break
            key, _, value = line[1:].partition(":")
            if key.strip().lower() == "sample.temperature":
                text = value.strip()
                match = re.fullmatch(r"([-+]?\d+(?:\.\d*)?)\s*(k|kelvin|c|°c|degc|celsius)?", text, flags=re.IGNORECASE)
                if match is None:
                    return None, text
                number, unit = float(match.group(1)), (match.group(2) or "k").lower()
                return (number if unit in ("k", "kelvin") else number + 273.15), text
    return None, None


def absorber_and_edge(experiment: str | Path, absorber: str | None = None, edge: str | None = None,
                      theory: tuple[str | None, str | None] = (None, None)) -> tuple[str, str]:
    """Absorber and edge of a comparison: given, else the spectrum's header, else the theory's
    (its exafs.json); the edge by :func:`default_edge` last. Theory and data must agree: a W L3
    χ(k) fitted to a Cu K spectrum gives numbers without meaning."""
    named = spectrum_header(experiment)
    absorber = _clean_symbol(absorber)  # 'w' is W, as the header's symbol is read
    for option, given, in_header in ((setting("absorber"), absorber, named[0]), (setting("edge"), edge, named[1])):
        if given and in_header and given.upper() != in_header.upper():
            said = " ".join(part for part in named if part)
            raise UserError(f"{experiment} is a {said} spectrum (its header) but {option} is {given}; drop {option} or give the matching spectrum")
    absorber = absorber or named[0] or theory[0]
    if absorber is None:
        raise UserError(f"{experiment} does not name its element and the theory has no exafs.json; give {setting('absorber')} (and {setting('edge')})")
    edge = (edge or named[1] or (theory[1] if theory[0] == absorber else None) or default_edge(absorber)).upper()
    if theory[0] and (theory[0], (theory[1] or "").upper()) != (absorber, edge):
        raise UserError(f"the theory is {theory[0]} {theory[1]} (exafs.json) but the spectrum is {absorber} {edge}; "
                        f"compute χ(k) with 'mlip-exafs exafs --absorber {absorber} --edge {edge}' or give a {theory[0]} {theory[1]} spectrum")
    return absorber, edge


def _clean_symbol(element) -> str | None:
    text = str(element or "").strip()
    text = text[:1].upper() + text[1:].lower()
    if text.isdigit():
        return chemical_symbols[int(text)] if 0 < int(text) < len(chemical_symbols) else None
    return text if text in atomic_numbers and text != "X" else None


def _xdi_header(path: Path):
    from larch.io import read_xdi  # lazy: larch, seconds to import

    try:
        xdi = read_xdi(str(path))
    except Exception as exc:
        raise UserError(f"cannot read XDI file {path} ({first_line(exc)}); check that the file is complete") from None
    return getattr(xdi, "element", None), getattr(xdi, "edge", None)


def _athena_header(path: Path):
    """Athena's background element; the edge that xraydb finds at its E0 when it is that element's
    (the project's ``fft_edge`` is not reliable: larch writes 'K' for every element)."""
    from xraydb import guess_edge  # lazy: xraydb loads scipy.interpolate, seconds

    bkg = getattr(getattr(_athena_groups(path)[0], "athena_params", None), "bkg", None)
    element = _clean_symbol(getattr(bkg, "z", None))
    try:
        guessed, edge = guess_edge(float(getattr(bkg, "e0", "nan")))
    except (TypeError, ValueError):
        guessed, edge = None, None
    return element, edge if guessed == element else None


def read_experiment(path: str | Path, element: str, edge: str, rbkg_a: float = 1.0, e0_ev: float | None = None) -> Spectrum:
    """χ(k) of an experimental file: μ(E) files are normalised and background-removed.

    ``e0_ev``: the edge energy that sets k = 0 (default: larch's, the maximum of dμ/dE).
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "athena":
        energy, mu = _read_athena(path)
    elif kind == "xdi":
        energy, mu = _read_xdi(path)
    else:
        x, y = _read_columns(path)
        if column_kind(x, y, path, edge_energy_ev(element, edge)) == "k":
            if e0_ev is not None:
                raise UserError(f"{path} is χ(k): its k grid already fixes E0; drop {setting('e0_ev')}")
            check_chi(x, y, path)
            return Spectrum(*uniform_k(x, y), source=str(path))
        energy, mu = x, y
    return _background_removed(energy, mu, path, element, edge, rbkg_a, e0_ev)


ENERGY_EV_ABOVE = 50.0  # a first column reaching this is energy in eV; below, k (Å⁻¹) or energy in keV
CHI_SIGN_CHANGES = 8  # χ(k) crosses zero many times (the W foil: 30); μ(E) once or twice at most
KEV_SCAN_SPAN = 3.0  # an EXAFS scan spans ~1-2 keV; a k grid (0 to ≥ 9 Å⁻¹) spans more


def column_kind(x: np.ndarray, y: np.ndarray, path: Path, edge_ev: float) -> str:
    """'k' (k in Å⁻¹, χ) or 'ev' (E in eV, μ) for a two-column file; energies in keV are refused.

    A keV scan read as k gave a χ(k) without meaning and no error. Told apart by
    the data, not by a guess on the numbers alone: χ oscillates about zero, μ
    steps up at the edge, and a keV scan brackets the tabulated edge in keV.
    """
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        row = int(np.argmax(~(np.isfinite(x) & np.isfinite(y)))) + 1
        raise UserError(f"{path} has a NaN or infinite value (data row {row}); fix or remove that row")
    if x.max() >= ENERGY_EV_ABOVE:
        return "ev"
    oscillates = np.count_nonzero(np.diff(np.sign(y)) != 0) >= CHI_SIGN_CHANGES and abs(y.mean()) < 0.5 * np.sqrt(np.mean(y * y))
    if not oscillates:
        _refuse_kev(x, path, edge_ev)
    if oscillates and x.min() >= 0:
        return "k"
    raise UserError(f"cannot tell whether {path} holds k (Å⁻¹) and χ or E and μ (first column {x.min():g}-{x.max():g}, "
                    f"second {'oscillating' if oscillates else 'not oscillating'} about zero); give E in eV and μ, or k in Å⁻¹ and χ")


def _refuse_kev(energy: np.ndarray, path: Path, edge_ev: float) -> None:
    """Energies in keV (a scan that brackets the edge in keV) are refused with the fix, not read as k or eV."""
    edge_kev = edge_ev / 1000.0
    if energy.max() < ENERGY_EV_ABOVE and energy.min() < edge_kev < energy.max() and energy.max() - energy.min() < KEV_SCAN_SPAN:
        raise UserError(f"the energies of {path} look like keV ({energy.min():g}-{energy.max():g}, around the edge at {edge_kev:g} keV); "
                        "give energies in eV (multiply that column by 1000)")


def check_chi(k: np.ndarray, chi: np.ndarray, source: str | Path) -> None:
    """A χ(k) to transform and fit: finite, on a strictly increasing k grid (checked before any fit starts).

    A NaN made the fit crash ("Initial guess is outside of provided bounds"); a
    decreasing k grid gave a flat interpolation and a meaningless 'result'.
    """
    bad = ~(np.isfinite(k) & np.isfinite(chi))
    if bad.any():
        raise UserError(f"{source} has a NaN or infinite k or χ (data row {int(np.argmax(bad)) + 1}); fix or remove that row")
    if np.all(np.diff(k) < 0):
        raise UserError(f"k in {source} decreases; sort the rows by increasing k")
    _check_monotonic(k, Path(str(source)), "k")
    if not np.any(chi):
        raise UserError(f"χ in {source} is zero everywhere; give a spectrum with its EXAFS oscillations")


def _looks_like_xdi(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(5) == b"#XDI/"


def _read_xdi(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from larch.io import read_xdi  # lazy: larch, seconds to import

    try:
        xdi = read_xdi(str(path))
    except Exception as exc:
        raise UserError(f"cannot read XDI file {path} ({first_line(exc)}); check that the file is complete") from None
    labels = [str(c).lower() for c in getattr(xdi, "array_labels", [])]
    if not labels or labels[0] not in ("energy", "e"):
        raise UserError(f"XDI file {path} has no energy column first (columns: {', '.join(labels) or 'none'}); add an energy column in eV")
    energy = np.asarray(xdi.energy, dtype=float)
    return energy, _mu_from_columns(xdi, labels, path)


def _mu_from_columns(xdi, labels: list[str], path: Path) -> np.ndarray:
    def col(name):
        return np.asarray(getattr(xdi, name), dtype=float)

    if "mutrans" in labels:
        return col("mutrans")
    if "mufluor" in labels:
        return col("mufluor")
    if "itrans" in labels and "i0" in labels:
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.log(col("i0") / col("itrans"))
        return mu
    if "ifluor" in labels and "i0" in labels:
        return col("ifluor") / col("i0")
    raise UserError(f"XDI file {path} has no mutrans/mufluor or i0+itrans/ifluor columns; add them or export μ(E) as two columns")


def _read_athena(path: Path) -> tuple[np.ndarray, np.ndarray]:
    first = _athena_groups(path)[0]
    return np.asarray(first.energy, dtype=float), np.asarray(first.mu, dtype=float)


def _athena_groups(path: Path) -> list:
    """The μ(E) groups of an Athena project, in file order."""
    from larch.io import read_athena  # lazy: larch, seconds to import

    try:
        project = read_athena(str(path), do_preedge=False, do_bkg=False, do_fft=False)
        groups = [g for name, g in project.groups.items()] if hasattr(project, "groups") else [getattr(project, n) for n in dir(project) if not n.startswith("_")]
    except Exception as exc:
        raise UserError(f"cannot read Athena project {path} ({first_line(exc)}); save it again from Athena") from None
    groups = [g for g in groups if hasattr(g, "energy") and hasattr(g, "mu")]
    if not groups:
        raise UserError(f"Athena project {path} holds no μ(E) group; save a project with at least one spectrum")
    return groups


def _read_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first two columns: E (eV) and μ, or k and χ (an Athena export's further columns, background and the
    like, are not read; a beamline file of raw intensities fails the edge checks, which say so)."""
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty; give two columns: E (eV) and μ, or k (Å⁻¹) and χ")
    try:
        with warnings.catch_warnings():  # a file of comments only: numpy warns 'input contained no data'; the shape check says it in one line
            warnings.simplefilter("ignore", UserWarning)
            data = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as exc:
        raise UserError(f"{path} is not a table of numbers ({first_line(exc)}); give two columns: E (eV) and μ, or k (Å⁻¹) and χ") from None
    if data.shape[1] < 2 or data.shape[0] < MIN_POINTS:
        raise UserError(f"{path} has {data.shape[0]} rows × {data.shape[1]} columns; give at least {MIN_POINTS} rows of two columns: E (eV) and μ, or k (Å⁻¹) and χ")
    return data[:, 0], data[:, 1]


def _check_monotonic(x: np.ndarray, path: Path, name: str) -> None:
    if not np.all(np.diff(x) > 0):
        bad = int(np.argmax(np.diff(x) <= 0)) + 1
        raise UserError(f"{name} in {path} is not strictly increasing (row {bad + 1}); sort the data and remove duplicate points")


def _background_removed(energy, mu, path: Path, element: str, edge: str, rbkg_a: float, e0_ev: float | None = None) -> Spectrum:
    from larch import Group  # lazy: larch, seconds to import
    from larch.xafs import autobk, pre_edge  # lazy: larch, seconds to import

    if len(energy) < MIN_POINTS:
        raise UserError(f"{path} has only {len(energy)} points; the file looks truncated, give the full scan")
    if not np.isfinite(energy).all():
        raise UserError(f"{path} has non-numeric or infinite energies (row {int(np.argmax(~np.isfinite(energy))) + 1}); fix or remove those rows")
    _check_monotonic(energy, path, "energy")
    if not np.isfinite(mu).all():
        raise UserError(f"{path} has non-numeric or infinite μ values; fix or remove those rows")
    tabulated = edge_energy_ev(element, edge)
    _refuse_kev(energy, path, tabulated)
    _check_e0(e0_ev, energy, tabulated, path, f"{element} {edge}")
    group = Group(energy=energy, mu=mu)
    pre_edge(group, e0=e0_ev)
    if abs(group.e0 - tabulated) > EDGE_TOLERANCE_EV:
        raise UserError(f"{path} has its edge at {group.e0:.0f} eV but {element} {edge} is at {tabulated:.0f} eV; give a {element} {edge} spectrum or fix "
                        f"{setting('absorber')}/{setting('edge')}{_mu_hint(path)}")
    _check_edge_step(energy, mu, float(group.e0), tabulated, path)
    if energy.max() - group.e0 < 150.0:
        raise UserError(f"{path} ends {energy.max() - group.e0:.0f} eV above the edge; EXAFS needs a scan to at least 150 eV (k ≈ 6 Å⁻¹) above it")
    autobk(group, rbkg=rbkg_a, kweight=2)
    k, chi = np.asarray(group.k), np.asarray(group.chi)
    if not np.isfinite(chi).all() or not np.any(chi):
        raise UserError(f"the background removal of {path} with rbkg {rbkg_a:g} Å gave no usable χ(k); use a smaller {setting('rbkg_a')} (about 1 Å)")
    return Spectrum(k, chi, source=str(path), e0_ev=float(group.e0))


PRE_EDGE_MIN_EV = 20.0  # the normalisation fits a line to the pre-edge: a scan must start this far below E0
STEP_WINDOWS_EV = ((-PRE_EDGE_MIN_EV, -5.0), (20.0, 60.0))  # below and above E0: where μ's edge step is measured


def _check_e0(e0_ev: float | None, energy: np.ndarray, tabulated_ev: float, path: Path, edge: str) -> None:
    """A given E0 that larch would silently replace with its own (outside the scan), or that is no E0 of this edge."""
    if e0_ev is None:
        return
    if abs(e0_ev * 1000.0 - tabulated_ev) <= EDGE_TOLERANCE_EV:
        raise UserError(f"{setting('e0_ev')} {e0_ev:g} looks like keV; give it in eV ({e0_ev * 1000:g})")
    if not energy[1] < e0_ev < energy[-2]:
        raise UserError(f"{setting('e0_ev')} {e0_ev:g} eV lies outside the energies of {path} ({energy[0]:.0f}-{energy[-1]:.0f} eV); give an E0 inside the scan")
    if abs(e0_ev - tabulated_ev) > EDGE_TOLERANCE_EV:
        raise UserError(f"{setting('e0_ev')} {e0_ev:g} eV is {e0_ev - tabulated_ev:+.0f} eV from the {edge} edge ({tabulated_ev:.0f} eV); give an E0 at the edge")


def _check_edge_step(energy: np.ndarray, mu: np.ndarray, e0_ev: float, tabulated_ev: float, path: Path) -> None:
    """μ must rise across the edge, from a pre-edge the normalisation can fit: an inverted μ (It instead of
    ln(I0/It)) or a scan that starts above the edge passes larch but fits nothing. Measured from the lower of
    the found and the tabulated edge: larch finds an 'edge' in a scan that starts above the real one."""
    edge_ev = min(e0_ev, tabulated_ev)
    if energy[0] > edge_ev - PRE_EDGE_MIN_EV:
        raise UserError(f"{path} starts {edge_ev - energy[0]:.0f} eV below the edge (E0 found {e0_ev:.0f} eV, tabulated {tabulated_ev:.0f} eV); "
                        f"the normalisation needs a pre-edge: give a scan from at least {PRE_EDGE_MIN_EV:g} eV below the edge")
    below, above = ([mu[(energy >= e0_ev + lo) & (energy <= e0_ev + hi)] for lo, hi in STEP_WINDOWS_EV])
    if below.size and above.size and above.mean() <= below.mean():
        raise UserError(f"μ of {path} falls across the edge at {e0_ev:.0f} eV; give μ = ln(I0/It) (transmission) or If/I0 (fluorescence){_mu_hint(path)}")


def _mu_hint(path: Path) -> str:
    """For a plain table of more than two columns: which one was read as μ (beamline files often hold I0, It, If)."""
    if file_kind(path) != "columns":
        return ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        n_columns = np.loadtxt(path, comments="#", ndmin=2, max_rows=1).shape[1]
    return f" (its second of {n_columns} columns was read as μ: give a file of E and μ)" if n_columns > 2 else ""
