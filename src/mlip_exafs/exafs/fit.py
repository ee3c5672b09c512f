"""The experiment fitted conventionally: larch ``feffit`` with FEFF paths of the ideal crystal.

An MD gives σ² per coordination shell; EXAFS people compare that first with the
σ² that a shell fit of the measured spectrum gives. So the first K shells of
the ideal structure (named as ``analyze`` names them: W-S1, W-W1, …) become
FEFF8L single-scattering paths, N fixed to the crystal's degeneracy, and the
spectrum is fitted in R space with one S0², one ΔE0 and, per shell, ΔR and σ²
(optionally a third cumulant for the first shell).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from mlip_exafs.errors import UserError, setting
from mlip_exafs.exafs import ExafsSettings, cached_potentials
from mlip_exafs.exafs.feff import POTENTIAL_FILES, Cluster, Potentials, feff_input, run_module
from mlip_exafs.exafs.stage import cluster_with_every_potential
from mlip_exafs.geometry import find_shells
from mlip_exafs.settings import R_WINDOW_BELOW_NEXT_SHELL_A
from mlip_exafs.shells import SHELL_TOL_A  # analyze's shell tolerance: the same shells, the same names; FEFF paths this close belong to a shell
from mlip_exafs.spectra import FTWindow, Spectrum, check_chi
from mlip_exafs.structures import min_image_half_width

SHELL_SEARCH_A = 6.0  # shells are looked for this far out (the K fitted ones and the next)
SIGMA2_START_A2 = 0.003
FAILED_FIT_R_FACTOR = 0.5  # above, the model misses more than half of the signal in the fit range: no result (good fits: < 0.05)
AT_BOUND_FRACTION = 1e-3  # a parameter this close to a bound (as a fraction of its range) found no minimum inside the bounds


def independent_points(window: FTWindow, rmin_a: float, rmax_a: float) -> float:
    """Nyquist's count of independent points in a fit window, 2 Δk ΔR / π (Stern 1993)."""
    return 2.0 * (window.kmax_inv_a - window.kmin_inv_a) * (rmax_a - rmin_a) / np.pi


def check_fit_window(window: FTWindow, rmin_a: float, rmax_a: float, n_parameters: int, what: str) -> None:
    """Refuse, before fitting, a window that cannot determine the fit's parameters (a tiny R range gave R = NaN)."""
    if rmax_a <= rmin_a:
        raise UserError(f"{what}: the R range {rmin_a:g}-{rmax_a:g} Å is empty; give an rmax above rmin")
    n_idp = independent_points(window, rmin_a, rmax_a)
    if n_idp <= n_parameters:
        raise UserError(f"{what}: the window k {window.kmin_inv_a:g}-{window.kmax_inv_a:g} 1/Å, R {rmin_a:g}-{rmax_a:g} Å holds {n_idp:.1f} "
                        f"independent points for {n_parameters} fitted parameters; widen the R range (or the k range)")


def at_bounds(values: dict[str, tuple[float, float, float]]) -> list[str]:
    """Names of the parameters (value, low, high) that ended at a bound."""
    return [name for name, (value, low, high) in values.items() if min(value - low, high - value) <= AT_BOUND_FRACTION * (high - low)]


def fit_failure(r_factor: float, at_bound: list[str]) -> str | None:
    """Why a finished fit is no result (None when it is one): far from the data, or a parameter stuck at a bound.

    A fit with R = 0.98 was written as a result; such a fit says nothing about the
    structure, only that the model or the data is wrong.
    """
    reasons = []
    if not np.isfinite(r_factor) or r_factor > FAILED_FIT_R_FACTOR:
        reasons.append(f"R-factor {r_factor:.3g} > {FAILED_FIT_R_FACTOR:g}: the fit ends far from the data")
    if at_bound:
        reasons.append(f"{', '.join(at_bound)} ended at a fit bound: no minimum inside the bounds")
    if reasons:
        return (" and ".join(reasons) + "; check that the spectrum is the absorber's χ(k) (its sign, scale, units, "
                "normalisation and E0) and the k and R ranges, or widen the bounds")
    return None


class ShellFitSettings(BaseModel):
    """How the experiment's first shells are fitted."""

    model_config = ConfigDict(extra="forbid")

    n_shells: int = Field(2, ge=1, le=6, description="first K shells of the ideal structure")
    third_cumulant: bool = Field(False, description="fit a third cumulant for the first shell")
    rmin_a: float = Field(1.0, ge=0, description="R range of the fit, start (Å, no phase correction)")
    rmax_a: Optional[float] = Field(None, gt=0, description="R range end; None: 0.5 Å below the next shell's distance")
    scf_radius_a: Optional[float] = Field(4.5, gt=0, description="FEFF SCF radius (Å); None = no SCF")


@dataclass(frozen=True)
class ShellPath:
    """One coordination shell of the ideal crystal and the FEFF path file(s) that make it."""

    label: str
    neighbor: str
    coordination: float
    r_ideal_a: float
    feff_files: tuple[Path, ...]


def shell_paths(ideal: Atoms, absorber: str, edge: str, settings: ShellFitSettings, folder: Path) -> tuple[list[ShellPath], float]:
    """FEFF8L paths of the first K shells (files kept in ``folder``) and the next shell's distance (Å)."""
    ideal = wide_enough(ideal, SHELL_SEARCH_A)
    shells = find_shells(ideal, absorber, SHELL_SEARCH_A, SHELL_TOL_A)
    if len(shells) <= settings.n_shells:
        raise UserError(f"the ideal structure has only {len(shells)} shells around {absorber} within {SHELL_SEARCH_A:g} Å; fit fewer shells ({setting('fit_shells')})")
    fitted, next_shell = shells[: settings.n_shells], shells[settings.n_shells]
    path_rmax = fitted[-1].r_ideal_a + SHELL_TOL_A
    potentials = Potentials(absorber, tuple(sorted(set(ideal.get_chemical_symbols()))))
    ipot_of_atom = np.array([potentials.ipot_of(s) for s in ideal.get_chemical_symbols()])
    absorber_index = int(fitted[0].pairs.i[0])
    exafs_settings = ExafsSettings(absorber=absorber, edge=edge, rmax_a=max(path_rmax, 1.01), scf_radius_a=settings.scf_radius_a)
    phase_pad = cached_potentials(ideal, absorber_index, potentials, ipot_of_atom, exafs_settings, folder / "potentials")
    cluster = cluster_with_every_potential(ideal, absorber_index, ipot_of_atom, path_rmax + 1.0)  # paths stop at path_rmax
    files = feff_path_files(cluster, potentials, edge, path_rmax, phase_pad, folder / "paths")
    return [_match(shell, files, absorber) for shell in fitted], next_shell.r_ideal_a


def wide_enough(ideal: Atoms, radius_a: float) -> Atoms:
    """The ideal cell repeated until shells out to ``radius_a`` are unique minimum-image shells (as analyze needs)."""
    reps = np.ones(3, dtype=int)
    while min_image_half_width(ideal.repeat(tuple(reps))) < radius_a:
        cell = ideal.cell.array * reps[:, None]
        heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(np.roll(cell, -1, 0), np.roll(cell, -2, 0)), axis=1)
        reps[int(np.argmin(heights))] += 1
    return ideal.repeat(tuple(reps))


def feff_path_files(cluster: Cluster, potentials: Potentials, edge: str, rmax_a: float, phase_pad: Path, dest: Path) -> list[Path]:
    """Single-scattering feffNNNN.dat files up to ``rmax_a`` with fixed potentials (pathfinder, genfmt, ff2x)."""
    with tempfile.TemporaryDirectory(prefix="feffshell") as tmp:
        work = Path(tmp)
        (work / "feff.inp").write_text(feff_input(cluster, potentials, edge, rmax_a, 2, None, write_paths=True))
        run_module("rdinp", work)
        for name in POTENTIAL_FILES:
            shutil.copy(phase_pad.parent / name, work / name)
        for module in ("pathfinder", "genfmt", "ff2x"):
            run_module(module, work)
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("feff*.dat"):
            old.unlink()
        for path in sorted(work.glob("feff[0-9][0-9][0-9][0-9].dat")):
            shutil.copy(path, dest / path.name)
    return sorted(dest.glob("feff[0-9][0-9][0-9][0-9].dat"))


def _match(shell, files: list[Path], absorber: str) -> ShellPath:
    """The FEFF paths of one shell; their degeneracies must add up to the shell's coordination."""
    from larch.xafs import feffpath  # lazy: larch, seconds to import; only when a fit runs

    mine, degen = [], 0.0
    for path in files:
        p = feffpath(str(path))
        if abs(p.reff - shell.r_ideal_a) <= SHELL_TOL_A and p.geom[1][0] == shell.neighbor:
            mine.append(path)
            degen += p.degen
    if not mine or abs(degen - shell.coordination) > 0.01:
        raise UserError(f"FEFF found {degen:g} {shell.neighbor} atoms at {shell.r_ideal_a:.3f} Å from {absorber} but the crystal has "
                        f"{shell.coordination:g} on average: the {absorber} sites are not equivalent; fit one site's spectrum by hand")
    return ShellPath(shell.label, shell.neighbor, shell.coordination, shell.r_ideal_a, tuple(mine))


def n_shell_fit_parameters(n_shells: int, third_cumulant: bool) -> int:
    """S0² and ΔE0, ΔR and σ² per shell, and the first shell's third cumulant if asked for."""
    return 2 + 2 * n_shells + int(third_cumulant)


def fit_rmax(settings: ShellFitSettings, next_shell_a: float) -> float:
    """End of the R range: given, or below the next (unfitted) shell, whose peak appears ≈ 0.3 Å short of its distance."""
    return settings.rmax_a if settings.rmax_a is not None else next_shell_a - R_WINDOW_BELOW_NEXT_SHELL_A


def fit_shells(spectrum: Spectrum, shells: list[ShellPath], window: FTWindow, rmin_a: float, rmax_a: float, third_cumulant: bool) -> dict:
    """larch feffit of χ(k) in R space; returns the ``experiment_fit`` record (σ² errors scaled as feffit does)."""
    from larch import Group  # lazy: larch, seconds to import; only when a fit runs
    from larch.fitting import guess, param_group  # lazy: larch, seconds to import; only when a fit runs
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath  # lazy: larch, seconds to import; only when a fit runs

    check_chi(spectrum.k_inv_a, spectrum.chi, spectrum.source)
    check_fit_window(window, rmin_a, rmax_a, n_shell_fit_parameters(len(shells), third_cumulant), f"the shell fit ({setting('fit_rmax_a')}, {setting('rmin_a')})")
    params = {"s02": guess(0.9, min=0.1, max=3.0), "de0": guess(0.0, min=-20.0, max=20.0)}
    paths = {}
    for i, shell in enumerate(shells, start=1):
        params[f"dr{i}"] = guess(0.0, min=-0.3, max=0.3)
        params[f"ss{i}"] = guess(SIGMA2_START_A2, min=-0.01, max=0.05)
        third = None
        if i == 1 and third_cumulant:
            params["c3"] = guess(0.0, min=-0.01, max=0.01)
            third = "c3"
        for j, path in enumerate(shell.feff_files):
            paths[f"s{i}p{j}"] = feffpath(str(path), s02="s02", e0="de0", deltar=f"dr{i}", sigma2=f"ss{i}", third=third)
    transform = feffit_transform(kmin=window.kmin_inv_a, kmax=window.kmax_inv_a, dk=window.dk_inv_a, kweight=window.kweight,
                                 window=window.window, rmin=rmin_a, rmax=rmax_a, fitspace="r")
    dataset = feffit_dataset(data=Group(k=spectrum.k_inv_a, chi=spectrum.chi), paths=paths, transform=transform)
    out = feffit(param_group(**params), dataset)
    p = out.params
    result = {
        "s02": _value(p["s02"]), "s02_err": _err(p["s02"]),
        "de0_ev": _value(p["de0"]), "de0_err_ev": _err(p["de0"]),
        "r_factor": float(out.rfactor),
        "chi2_reduced": float(out.chi2_reduced),
        "n_independent": float(out.n_independent),
        "n_variables": int(out.nvarys),
        "kmin": window.kmin_inv_a, "kmax": window.kmax_inv_a, "kweight": window.kweight, "rmin": rmin_a, "rmax": rmax_a,
        "shells": {},
    }
    for i, shell in enumerate(shells, start=1):
        entry = {
            "r": round(shell.r_ideal_a + _value(p[f"dr{i}"]), 5), "r_err": _err(p[f"dr{i}"]),
            "sigma2": _value(p[f"ss{i}"]), "sigma2_err": _err(p[f"ss{i}"]),
            "n": shell.coordination, "r_ideal": round(shell.r_ideal_a, 5),
        }
        if i == 1 and third_cumulant:
            entry |= {"c3": _value(p["c3"]), "c3_err": _err(p["c3"])}
        result["shells"][shell.label] = entry
    stuck = at_bounds({name: (par.value, par.min, par.max) for name, par in p.items() if par.vary and np.isfinite([par.min, par.max]).all()})
    result["at_bound"] = stuck
    result["fit_failed"] = fit_failure(result["r_factor"], stuck)
    model = dataset.model
    return result | {"_arrays": {"k": np.asarray(model.k), "chi_model": np.asarray(model.chi)}}


def _value(par) -> float:
    return float(par.value)


def _err(par) -> float | None:
    """feffit's 1-σ error; None when the fit could not estimate it (a singular covariance)."""
    return float(par.stderr) if par.stderr is not None and np.isfinite(par.stderr) else None


def fit_first_shells(spectrum: Spectrum, ideal: Atoms, absorber: str, edge: str, window: FTWindow, settings: ShellFitSettings, folder: Path) -> dict:
    """Paths of the ideal crystal + feffit: the ``experiment_fit`` record and its arrays (``_arrays``, not for JSON)."""
    shells, next_shell_a = shell_paths(ideal, absorber, edge, settings, folder)
    rmax = fit_rmax(settings, next_shell_a)
    result = fit_shells(spectrum, shells, window, settings.rmin_a, rmax, settings.third_cumulant)
    return result | {"settings": settings.model_dump()}
