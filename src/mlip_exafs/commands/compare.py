"""CLI verb ``compare``: an MD χ(k) against an experimental EXAFS spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from mlip_exafs.cli import app, console, default_text, given
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError
from mlip_exafs.settings import R_WINDOW_BELOW_NEXT_SHELL_A, CompareSettings


def _default(field: str) -> str:
    return default_text(CompareSettings, field)


@app.command("compare")
def compare_cmd(
    theory: Path = typer.Argument(..., help="chi.csv from 'mlip-exafs exafs', or its output folder."),
    experiment: Path = typer.Option(..., "--experiment", help="XDI, Athena .prj, or two columns (E eV, μ) or (k 1/Å, χ)."),
    out: Path = typer.Option(..., "--out", help="Folder for compare.json and compare.png."),
    absorber: Optional[str] = typer.Option(None, "--absorber", help="Absorbing element (default: the spectrum's header, else the theory's exafs.json); must agree with both."),
    edge: Optional[str] = typer.Option(None, "--edge", help="Absorption edge (default: the header's, else the theory's, else K up to Sn, L3 above)."),
    e0_ev: Optional[float] = typer.Option(None, "--e0", help="The experiment's E0 (eV) (default: larch's, the maximum of dμ/dE)."),
    kweight: Optional[int] = typer.Option(None, "--kweight", help=f"k-weight of both transforms (0-3); {_default('kweight')}."),
    s02_bounds: Optional[Tuple[float, float]] = typer.Option(None, "--s02-bounds", help="Fit bounds of S0² (two numbers); wide, so that a wrong disorder shows as an unphysical S0²; "
                                                             f"{_default('s02_bounds').replace(',', ' ')}."),
    de0_bound_ev: Optional[float] = typer.Option(None, "--de0-bound", help=f"Fit bound of |ΔE0| (eV); {_default('de0_bound_ev')}."),
    kmin_inv_a: Optional[float] = typer.Option(None, "--kmin", help=f"Window start (1/Å); {_default('kmin_inv_a')}."),
    kmax_inv_a: Optional[float] = typer.Option(None, "--kmax", help=f"Window end (1/Å); {_default('kmax_inv_a')}."),
    rmin_a: Optional[float] = typer.Option(None, "--rmin", help=f"R range of the fit, start (Å); {_default('rmin_a')}."),
    rmax_a: Optional[float] = typer.Option(None, "--rmax", help=f"R range of the fit, end (Å); {_default('rmax_a')}."),
    rbkg_a: Optional[float] = typer.Option(None, "--rbkg", help=f"autobk background cutoff (Å); {_default('rbkg_a')}."),
    fit_shells: Optional[int] = typer.Option(None, "--fit-shells", help=f"Also fit the experiment's first K shells (larch feffit, FEFF paths of the ideal crystal); {_default('fit_shells')}."),
    structure: Optional[str] = typer.Option(None, "--structure", help="Ideal crystal for --fit-shells (built-in name or file); default: the exafs step's --ideal."),
    third_cumulant: Optional[bool] = typer.Option(None, "--third-cumulant/--no-third-cumulant", help=f"--fit-shells: also a third cumulant for the first shell; {_default('third_cumulant')}."),
    fit_rmax_a: Optional[float] = typer.Option(None, "--fit-rmax", help=f"--fit-shells: end of the fit's R range (Å); default {R_WINDOW_BELOW_NEXT_SHELL_A:g} Å below the next shell."),
) -> None:
    """Fit S0² and ΔE0 only, report R-factors in k and R space, plot the overlays; --fit-shells K also fits the experiment's σ² per shell."""
    from mlip_exafs.compare import OutFiles, compare  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    fields = given(absorber=absorber, edge=edge, e0_ev=e0_ev, kweight=kweight, s02_bounds=s02_bounds, de0_bound_ev=de0_bound_ev, kmin_inv_a=kmin_inv_a, kmax_inv_a=kmax_inv_a,
                   rmin_a=rmin_a, rmax_a=rmax_a, rbkg_a=rbkg_a, fit_shells=fit_shells, structure=structure, third_cumulant=third_cumulant, fit_rmax_a=fit_rmax_a)
    settings = validate_model(CompareSettings, fields, "compare options")
    result = compare(theory, experiment, settings, out)
    health = result["fit_health"]
    console.print(f"{result['absorber']} {result['edge']}: S0² = {result['s02']:.3f}, ΔE0 = {result['de0_ev']:.2f} eV")
    console.print(f"R-factor: {result['r_factor_r']:.4f} in R space ({settings.rmin_a:g}-{settings.rmax_a:g} Å), {result['r_factor_k']:.4f} in k space ({result['kmin']:g}-{result['kmax']:g} 1/Å) -> {OutFiles(out).summary}")
    converged = {True: "yes", False: "no", None: "unknown"}[health["theory_converged"]]
    console.print(f"fit health: S0² physical {'yes' if health['s02_physical'] else 'no'}, at a bound: {', '.join(health['at_bound']) or 'none'}, theory converged: {converged}")
    for line in health["warnings"]:
        console.print(f"  warning: {line}", markup=False)
    if fit := result.get("experiment_fit"):
        console.print(f"experiment, {len(fit['shells'])}-shell fit: S0² = {fit['s02']:.3f}, ΔE0 = {fit['de0_ev']:.2f} eV, R-factor {fit['r_factor']:.4f}")
        for label, shell in fit["shells"].items():
            err = f" ± {shell['sigma2_err']:.5f}" if shell["sigma2_err"] is not None else ""
            console.print(f"  {label}: N = {shell['n']:g}, r = {shell['r']:.4f} Å, σ² = {shell['sigma2']:.5f}{err} Å²")
    failed = [f"the {what} failed ({reason})" for what, reason in (("S0²/ΔE0 fit", result["fit_failed"]), ("shell fit", (fit or {}).get("fit_failed"))) if reason]
    if failed:
        raise UserError(f"{'; '.join(failed)}; {OutFiles(out).summary} records it as failed, not as a result")
