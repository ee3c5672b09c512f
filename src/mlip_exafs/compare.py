"""The compare stage: an MD χ(k) against an experimental spectrum.

An MD χ(k) has no paths to refine, so only the two parameters that no
simulation fixes are fitted: the amplitude reduction S0² and the edge shift
ΔE0 (χ_model(k) = S0² χ_theory(√(k² − ΔE0·0.2625))), on the R-space residual
of both spectra transformed with the same window. R-factors are reported in
k and R space.

With ``fit_shells`` K > 0 the experiment is also fitted on its own, the
conventional way (larch feffit, FEFF paths of the ideal crystal, see
:mod:`mlip_exafs.exafs.fit`), so that its σ² per shell stands beside the MD's.

What a comparison writes is named in :class:`OutFiles` (and the shell fit's in
:class:`FitFiles`); other modules read those folders through them and through
:func:`read_result` and :func:`read_fit`, never by file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.optimize import least_squares

from mlip_exafs.errors import UserError, setting
from mlip_exafs.exafs import exafs_record, read_chi_csv, theory_absorber_edge
from mlip_exafs.exafs import read_result as read_exafs
from mlip_exafs.exafs.feff import ETOK
from mlip_exafs.exafs.fit import ShellFitSettings, at_bounds, check_fit_window, fit_failure, fit_first_shells, n_shell_fit_parameters
from mlip_exafs.files import check_output_folder, read_json, save_figure, sha256_file, write_json, write_text
from mlip_exafs.plots import plt
from mlip_exafs.provenance import provenance
from mlip_exafs.settings import CompareSettings  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.spectra import FTWindow, Spectrum, absorber_and_edge, check_chi, fourier_transform, k_weighted_r_factor, read_experiment, r_factor, uniform_k
from mlip_exafs.structures import load_structure

DE0_SCAN_EV = np.arange(-15.0, 15.01, 1.0)  # coarse scan first: the phase makes the residual multi-modal
S02_PHYSICAL = (0.7, 1.1)  # amplitude reduction factors of real absorbers; outside, the fit makes up for something else
THEORY_CONVERGED_R = 0.01  # theory's first- vs second-half R (exafs.json): its noise in χ is then ≈ R/4, well below a fit's R


N_FIT_PARAMETERS = 2  # S0² and ΔE0


@dataclass(frozen=True)
class OutFiles:
    """What a comparison writes into its folder; the one place that names these files."""

    out: Path

    @property
    def summary(self) -> Path:
        """compare.json: S0², ΔE0, R-factors, fit health (``fit_failed``), settings, provenance (written last)."""
        return self.out / "compare.json"

    @property
    def fitted(self) -> Path:
        """k,chi_experiment,chi_model: the experiment and the theory with its fitted S0² and ΔE0, on the experiment's k grid."""
        return self.out / "fitted.csv"

    @property
    def overlay_plot(self) -> Path:
        return self.out / "compare.png"

    @property
    def experiment_fit(self) -> Path:
        """The folder of the shell fit (``fit_shells``), named by :class:`FitFiles`."""
        return self.out / "experiment_fit"


@dataclass(frozen=True)
class FitFiles:
    """What the experiment's shell fit writes into its folder (compare's ``experiment_fit``, a study's fit-experiment step)."""

    out: Path

    @property
    def summary(self) -> Path:
        """experiment_fit.json: S0², ΔE0, R-factor, per shell r and σ² with errors, ``fit_failed``."""
        return self.out / "experiment_fit.json"

    @property
    def plot(self) -> Path:
        """k²χ(k) and |χ(R)| of the experiment and its fit (an SVG beside it)."""
        return self.out / "experiment_fit.png"


def read_result(folder: str | Path) -> dict | None:
    """What a comparison recorded in its folder (``compare.json``); None for a folder without one."""
    path = OutFiles(Path(folder)).summary
    return read_json(path) if path.exists() else None


def read_fit(folder: str | Path) -> dict | None:
    """What a shell fit recorded in its folder (``experiment_fit.json``); None for a folder without one."""
    path = FitFiles(Path(folder)).summary
    return read_json(path) if path.exists() else None


def compare(theory: str | Path, experiment: str | Path, settings: CompareSettings, out: str | Path) -> dict:
    """chi.csv (or exafs folder) + experimental file -> the files of :class:`OutFiles` in ``out``; returns the record."""
    out = check_output_folder(out)
    files = OutFiles(out)
    k_th, chi_th = read_chi_csv(theory)
    check_chi(k_th, chi_th, theory)
    absorber, edge = absorber_and_edge(experiment, settings.absorber, settings.edge, theory_absorber_edge(theory))
    settings = settings.model_copy(update={"absorber": absorber, "edge": edge})
    structure = (settings.structure or ideal_structure_of(theory)) if settings.fit_shells else None
    exp = read_experiment(experiment, settings.absorber, settings.edge, settings.rbkg_a, settings.e0_ev)
    window = settings.window(usable_kmax(settings, k_th, exp))
    check_fit_window(window, settings.rmin_a, settings.rmax_a, N_FIT_PARAMETERS, f"compare ({setting('rmin_a')}, {setting('rmax_a')})")
    if structure and settings.fit_rmax_a is not None:  # before anything is written (the default rmax needs the shells' FEFF paths)
        check_fit_window(window, settings.rmin_a, settings.fit_rmax_a, n_shell_fit_parameters(settings.fit_shells, settings.third_cumulant),
                         f"the shell fit ({setting('fit_rmax_a')}, {setting('rmin_a')})")
    s02, de0 = fit_s02_de0(k_th, chi_th, exp, window, settings)
    model = shifted_theory(k_th, chi_th, exp.k_inv_a, s02, de0)
    ft_exp, ft_model = fourier_transform(exp.k_inv_a, exp.chi, window), fourier_transform(exp.k_inv_a, model, window)
    r_mask = (ft_exp.r >= settings.rmin_a) & (ft_exp.r <= settings.rmax_a)
    r_factor_r = r_factor(ft_model.chir[r_mask], ft_exp.chir[r_mask])
    health = fit_health(s02, de0, settings, exafs_record(theory), r_factor_r)
    result = {
        "fit_failed": health["failed"],
        "r_factor_k": k_weighted_r_factor(exp.k_inv_a, model, exp.chi, window),
        "r_factor_r": r_factor_r,
        "s02": s02,
        "de0_ev": de0,
        "kmin": window.kmin_inv_a,
        "kmax": window.kmax_inv_a,
        "rmin": settings.rmin_a,
        "rmax": settings.rmax_a,
        "kweight": window.kweight,
        "window": f"{window.window}, dk = {window.dk_inv_a:g} 1/Å",
        "experiment_e0_ev": exp.e0_ev,
        "absorber": absorber,
        "edge": edge,
        "fit_health": health,
        "settings": settings.model_dump(),
        "provenance": provenance({"theory": str(theory), "experiment": str(experiment), "experiment_sha256": sha256_file(experiment)}),
    }
    if structure:
        result["experiment_fit"] = fit_experiment(exp, structure, settings, files.experiment_fit)
    plot_overlay(exp, model, ft_exp, ft_model, window, settings, files.overlay_plot)
    write_text(files.fitted, "k,chi_experiment,chi_model\n" + "".join(f"{a:.4f},{b:.8g},{c:.8g}\n" for a, b, c in zip(exp.k_inv_a, exp.chi, model)))
    write_json(files.summary, result)
    return result


def ideal_structure_of(theory: str | Path) -> str:
    """The ideal structure the exafs stage was told to use (its exafs.json), for a shell fit without a ``structure`` setting."""
    folder = Path(theory) if Path(theory).is_dir() else Path(theory).parent
    record = read_exafs(folder)
    ideal = record["settings"].get("ideal") if record else None
    if not ideal:
        raise UserError(f"the shell fit needs the ideal crystal; give {setting('structure')} (a built-in name such as w-bcc, or a file)")
    return ideal  # its supercell does not matter: shells are found with periodic images


def fit_experiment(experiment: str | Path | Spectrum, structure: str, settings: CompareSettings, out: str | Path) -> dict:
    """The experiment's first ``settings.fit_shells`` shells fitted with FEFF paths of ``structure``.

    Writes the files of :class:`FitFiles` into ``out`` (and the FEFF paths); returns the record
    ``{"s02", "de0_ev", "r_factor", "shells": {label: {"r", "sigma2", "sigma2_err", ...}}, "fit_failed", ...}``.
    """
    out = Path(out)
    files = FitFiles(out)
    exp = experiment if isinstance(experiment, Spectrum) else read_experiment(experiment, settings.absorber, settings.edge, settings.rbkg_a, settings.e0_ev)
    ideal = load_structure(structure)
    window = settings.window(min(settings.kmax_inv_a, float(exp.k_inv_a.max())))
    shell_settings = ShellFitSettings(n_shells=settings.fit_shells, third_cumulant=settings.third_cumulant, rmin_a=settings.rmin_a, rmax_a=settings.fit_rmax_a)
    record = fit_first_shells(exp, ideal, settings.absorber, settings.edge, window, shell_settings, out)
    arrays = record.pop("_arrays")
    record |= {"structure": structure, "experiment": exp.source, "experiment_sha256": sha256_file(exp.source) if Path(exp.source).is_file() else None}
    plot_shell_fit(exp, arrays["k"], arrays["chi_model"], record, window, files.plot)
    write_json(files.summary, record)
    return record


def plot_shell_fit(exp: Spectrum, k_model, chi_model, record: dict, window: FTWindow, path: Path) -> None:
    """The experiment and its shell fit, k²χ(k) and |χ(R)| with the fit range, sized for a journal's full width."""
    fig, (ax_k, ax_r) = plt.subplots(1, 2, figsize=(7.0, 2.6), layout="constrained")
    w = window.kweight
    ax_k.plot(exp.k_inv_a, exp.k_inv_a**w * exp.chi, "k", lw=0.9, label="experiment")
    ax_k.plot(k_model, k_model**w * chi_model, "C3", lw=0.9, label=f"{len(record['shells'])}-shell fit")
    ax_k.axvspan(window.kmin_inv_a, window.kmax_inv_a, color="0.93", zorder=0)
    ax_k.set_xlim(0, window.kmax_inv_a + 2)
    ax_k.set_xlabel("k (1/Å)")
    ax_k.set_ylabel(f"k$^{w}$ χ(k)")
    ax_k.legend(fontsize=7, frameon=False)
    ft_exp, ft_fit = fourier_transform(exp.k_inv_a, exp.chi, window), fourier_transform(k_model, chi_model, window)
    ax_r.plot(ft_exp.r, ft_exp.chir_mag, "k", lw=0.9)
    ax_r.plot(ft_fit.r, ft_fit.chir_mag, "C3", lw=0.9)
    ax_r.axvspan(record["rmin"], record["rmax"], color="0.93", zorder=0)
    ax_r.set_xlim(0, 6)
    ax_r.set_xlabel("R (Å), no phase correction")
    ax_r.set_ylabel("|χ(R)|")
    ax_r.set_title(f"R-factor {record['r_factor']:.4f}", fontsize=8)
    save_figure(fig, path, vector=True)


def usable_kmax(settings: CompareSettings, k_theory: np.ndarray, exp: Spectrum) -> float:
    """The window's kmax, clipped to where both spectra have data."""
    kmax = min(settings.kmax_inv_a, float(k_theory.max()) - 0.5, float(exp.k_inv_a.max()))
    if not kmax - settings.kmin_inv_a >= 3.0:
        limit = "" if kmax < settings.kmax_inv_a else f" ({setting('kmax_inv_a')})"
        raise UserError(f"the spectra overlap only up to k = {kmax:.1f} 1/Å{limit}, less than 3 1/Å above {setting('kmin_inv_a')} "
                        f"{settings.kmin_inv_a:g}; lower {setting('kmin_inv_a')}{', raise ' + setting('kmax_inv_a') if limit else ' or give data to higher k'}")
    return kmax


def shifted_theory(k_th: np.ndarray, chi_th: np.ndarray, k: np.ndarray, s02: float, de0_ev: float) -> np.ndarray:
    """S0² χ_theory(k') with k' = √(k² − ΔE0·0.2625), zero where k' is imaginary."""
    kp2 = k * k - de0_ev * ETOK
    kp = np.sqrt(np.clip(kp2, 0.0, None))
    return np.where(kp2 > 0, s02 * np.interp(kp, k_th, chi_th, left=0.0, right=0.0), 0.0)


def fit_s02_de0(k_th, chi_th, exp: Spectrum, window: FTWindow, settings: CompareSettings) -> tuple[float, float]:
    """Least squares on Re/Im χ(R) in [rmin, rmax]; ΔE0 starts from the best point of a coarse scan."""
    ft_exp = fourier_transform(exp.k_inv_a, exp.chi, window)
    mask = (ft_exp.r >= settings.rmin_a) & (ft_exp.r <= settings.rmax_a)
    target = ft_exp.chir[mask]

    def model_chir(de0):
        return fourier_transform(exp.k_inv_a, shifted_theory(k_th, chi_th, exp.k_inv_a, 1.0, de0), window).chir[mask]

    def best_s02(chir):  # S0² enters linearly
        return float(np.real(np.vdot(chir, target)) / max(np.vdot(chir, chir).real, 1e-30))

    bound, (s02_lo, s02_hi) = settings.de0_bound_ev, settings.s02_bounds
    scan = [(r_factor(best_s02(m) * m, target), de0) for de0 in DE0_SCAN_EV[np.abs(DE0_SCAN_EV) <= bound] for m in [model_chir(de0)]]
    de0_start = min(scan)[1] if scan else 0.0  # a bound below 1 eV leaves only the start at 0

    def residual(p):
        diff = p[0] * model_chir(p[1]) - target
        return np.concatenate([diff.real, diff.imag])

    s02_start = best_s02(model_chir(de0_start))
    s02_start = float(np.clip(s02_start, s02_lo, s02_hi)) if np.isfinite(s02_start) else s02_lo  # always inside the bounds
    fit = least_squares(residual, x0=[s02_start, de0_start], bounds=([s02_lo, -bound], [s02_hi, bound]), diff_step=1e-3)
    return float(fit.x[0]), float(fit.x[1])


def fit_health(s02: float, de0_ev: float, settings: CompareSettings, theory_record: dict, r_factor_r: float = 0.0) -> dict:
    """Whether the S0²/ΔE0 fit can be read as a verdict on the MD, and what each failure usually means.

    ``failed``: why the fit is no result (:func:`mlip_exafs.exafs.fit.fit_failure`: R-factor above 0.5, or S0² or
    ΔE0 at a bound), else None; the CLI then exits with an error after writing the record.
    """
    theory_half_r = theory_record.get("half_vs_half_r_factor")
    one_block = bool(theory_record) and theory_half_r is None  # too few frames for two halves: not converged, as far as anyone can tell
    lo, hi = settings.s02_bounds
    at_bound = at_bounds({"s02": (s02, lo, hi), "de0_ev": (de0_ev, -settings.de0_bound_ev, settings.de0_bound_ev)})
    health = {
        "failed": fit_failure(r_factor_r, at_bound),
        "s02_physical": bool(S02_PHYSICAL[0] <= s02 <= S02_PHYSICAL[1]),
        "s02_physical_range": list(S02_PHYSICAL),
        "at_bound": at_bound,
        "theory_converged": False if one_block else None if theory_half_r is None else bool(theory_half_r <= THEORY_CONVERGED_R),
        "theory_half_vs_half_r_factor": theory_half_r,
        "warnings": [],
    }
    if not health["s02_physical"]:
        health["warnings"].append(
            f"S0² {s02:.2f} is outside {S02_PHYSICAL[0]}-{S02_PHYSICAL[1]}: S0² makes up for wrong damping; above, the MD disorder is too large "
            "(σ² too big: a too soft potential), below, too small (too stiff); or the spectrum's normalisation is off")
    if at_bound:
        health["warnings"].append(
            f"{' and '.join(at_bound)} at a fit bound: the fit found no minimum inside the bounds; widen the bounds (s02_bounds, de0_bound_ev), check E0 (e0_ev) and the k range")
    if health["theory_converged"] is False and not one_block:
        health["warnings"].append(
            f"the theory's two halves differ by R = {theory_half_r:.1e} (> {THEORY_CONVERGED_R:g}): the MD is too short (or has too few absorbers) "
            "for a converged χ(k); run a longer production")
    if one_block:
        health["warnings"].append(f"the theory averages {theory_record.get('n_frames', 'too few')} frame(s), too few for two halves to estimate its "
                                  "convergence; average more MD frames (a longer production, or all of its frames)")
    elif theory_half_r is None:
        health["warnings"].append("the theory's convergence is unknown (no exafs.json with its two halves beside the chi.csv)")
    return health


def plot_overlay(exp: Spectrum, model, ft_exp, ft_model, window: FTWindow, settings: CompareSettings, path: Path) -> None:
    fig, (ax_k, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    w = exp.k_inv_a**window.kweight
    ax_k.plot(exp.k_inv_a, w * exp.chi, "k", lw=1, label="experiment")
    ax_k.plot(exp.k_inv_a, w * model, "C3", lw=1, label="MD theory (fitted S0², ΔE0)")
    ax_k.axvspan(window.kmin_inv_a, window.kmax_inv_a, color="0.9", zorder=0)
    ax_k.set_xlim(0, window.kmax_inv_a + 2)
    ax_k.set_xlabel("k (1/Å)")
    ax_k.set_ylabel(f"k$^{window.kweight}$ χ(k)")
    ax_k.legend(fontsize=8)
    ax_r.plot(ft_exp.r, ft_exp.chir_mag, "k", lw=1, label="experiment")
    ax_r.plot(ft_model.r, ft_model.chir_mag, "C3", lw=1, label="MD theory")
    ax_r.axvspan(settings.rmin_a, settings.rmax_a, color="0.9", zorder=0)
    ax_r.set_xlim(0, 8)
    ax_r.set_xlabel("R (Å), no phase correction")
    ax_r.set_ylabel("|χ(R)|")
    ax_r.legend(fontsize=8)
    save_figure(fig, path)
