"""CLI verb ``compare``: an MD χ(k) against an experimental EXAFS spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from mlip_exafs.cli import app, console
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError


@app.command("compare")
def compare_cmd(
    theory: Path = typer.Argument(..., help="chi.csv from 'mlip-exafs exafs', or its output folder."),
    experiment: Path = typer.Option(..., "--experiment", help="XDI, Athena .prj, or two columns (E eV, μ) or (k 1/Å, χ)."),
    out: Path = typer.Option(..., "--out", help="Folder for compare.json and compare.png."),
    absorber: Optional[str] = typer.Option(None, "--absorber", help="Absorbing element (default: the spectrum's header, else the theory's exafs.json); must agree with both."),
    edge: Optional[str] = typer.Option(None, "--edge", help="Absorption edge (default: the header's, else the theory's, else K up to Sn, L3 above)."),
    e0: Optional[float] = typer.Option(None, "--e0", help="The experiment's E0 (eV) (default: larch's, the maximum of dμ/dE)."),
    kweight: int = typer.Option(2, "--kweight", help="k-weight of both transforms (0-3)."),
    s02_bounds: Tuple[float, float] = typer.Option((0.05, 3.0), "--s02-bounds", help="Fit bounds of S0² (two numbers); wide, so that a wrong disorder shows as an unphysical S0²."),
    de0_bound: float = typer.Option(20.0, "--de0-bound", help="Fit bound of |ΔE0| (eV)."),
    kmin: float = typer.Option(3.0, "--kmin", help="Window start (1/Å)."),
    kmax: float = typer.Option(14.0, "--kmax", help="Window end (1/Å)."),
    rmin: float = typer.Option(1.0, "--rmin", help="R range of the fit, start (Å)."),
    rmax: float = typer.Option(5.0, "--rmax", help="R range of the fit, end (Å)."),
    rbkg: float = typer.Option(1.0, "--rbkg", help="autobk background cutoff (Å)."),
    fit_shells: int = typer.Option(0, "--fit-shells", help="Also fit the experiment's first K shells (larch feffit, FEFF paths of the ideal crystal)."),
    structure: Optional[str] = typer.Option(None, "--structure", help="Ideal crystal for --fit-shells (built-in name or file); default: the exafs step's --ideal."),
    third_cumulant: bool = typer.Option(False, "--third-cumulant/--no-third-cumulant", help="--fit-shells: also a third cumulant for the first shell."),
    fit_rmax: Optional[float] = typer.Option(None, "--fit-rmax", help="--fit-shells: end of the fit's R range (Å); default 0.5 Å below the next shell."),
) -> None:
    """Fit S0² and ΔE0 only, report R-factors in k and R space, plot the overlays; --fit-shells K also fits the experiment's σ² per shell."""
    from mlip_exafs.compare import CompareSettings, OutFiles, compare  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    fields = dict(absorber=absorber, edge=edge, e0_ev=e0, kweight=kweight, s02_bounds=s02_bounds, de0_bound_ev=de0_bound, kmin_inv_a=kmin, kmax_inv_a=kmax, rmin_a=rmin, rmax_a=rmax, rbkg_a=rbkg,
                  fit_shells=fit_shells, structure=structure, third_cumulant=third_cumulant, fit_rmax_a=fit_rmax)
    settings = validate_model(CompareSettings, fields, "compare options")
    result = compare(theory, experiment, settings, out)
    health = result["fit_health"]
    console.print(f"{result['absorber']} {result['edge']}: S0² = {result['s02']:.3f}, ΔE0 = {result['de0_ev']:.2f} eV")
    console.print(f"R-factor: {result['r_factor_r']:.4f} in R space ({rmin:g}-{rmax:g} Å), {result['r_factor_k']:.4f} in k space ({result['kmin']:g}-{result['kmax']:g} 1/Å) -> {OutFiles(out).summary}")
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
