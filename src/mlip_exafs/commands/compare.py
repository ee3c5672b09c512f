"""CLI verb ``compare``: an MD χ(k) against an experimental EXAFS spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import app, console


@app.command("compare")
def compare_cmd(
    theory: Path = typer.Argument(..., help="chi.csv from 'mlip-exafs exafs', or its output folder."),
    experiment: Path = typer.Option(..., "--experiment", help="XDI, Athena .prj, or two columns (E eV, μ) or (k 1/Å, χ)."),
    out: Path = typer.Option(..., "--out", help="Folder for compare.json and compare.png."),
    absorber: str = typer.Option("W", "--absorber", help="Absorbing element (checks the file's edge energy)."),
    edge: str = typer.Option("L3", "--edge", help="Absorption edge."),
    kmin: float = typer.Option(3.0, "--kmin", help="Window start (1/Å)."),
    kmax: float = typer.Option(14.0, "--kmax", help="Window end (1/Å)."),
    rmin: float = typer.Option(1.0, "--rmin", help="R range of the fit, start (Å)."),
    rmax: float = typer.Option(5.0, "--rmax", help="R range of the fit, end (Å)."),
    rbkg: float = typer.Option(1.0, "--rbkg", help="autobk background cutoff (Å)."),
    fit_shells: int = typer.Option(0, "--fit-shells", help="Also fit the experiment's first K shells (larch feffit, FEFF paths of the ideal crystal)."),
    structure: Optional[str] = typer.Option(None, "--structure", help="Ideal crystal for --fit-shells (built-in name or file); default: the exafs step's --ideal."),
    third_cumulant: bool = typer.Option(False, "--third-cumulant", help="--fit-shells: also a third cumulant for the first shell."),
    fit_rmax: Optional[float] = typer.Option(None, "--fit-rmax", help="--fit-shells: end of the fit's R range (Å); default 0.5 Å below the next shell."),
) -> None:
    """Fit S0² and ΔE0 only, report R-factors in k and R space, plot the overlays; --fit-shells K also fits the experiment's σ² per shell."""
    from mlip_exafs.compare import CompareSettings, compare
    from mlip_exafs.config import validate_model

    fields = dict(absorber=absorber, edge=edge, kmin_inv_a=kmin, kmax_inv_a=kmax, rmin_a=rmin, rmax_a=rmax, rbkg_a=rbkg,
                  fit_shells=fit_shells, structure=structure, third_cumulant=third_cumulant, fit_rmax_a=fit_rmax)
    settings = validate_model(CompareSettings, fields, "compare options")
    result = compare(theory, experiment, settings, out)
    console.print(f"S0² = {result['s02']:.3f}, ΔE0 = {result['de0_ev']:.2f} eV")
    console.print(f"R-factor: {result['r_factor_r']:.4f} in R space ({rmin:g}-{rmax:g} Å), {result['r_factor_k']:.4f} in k space ({result['kmin']:g}-{result['kmax']:g} 1/Å) -> {out / 'compare.json'}")
    if fit := result.get("experiment_fit"):
        console.print(f"experiment, {len(fit['shells'])}-shell fit: S0² = {fit['s02']:.3f}, ΔE0 = {fit['de0_ev']:.2f} eV, R-factor {fit['r_factor']:.4f}")
        for label, shell in fit["shells"].items():
            err = f" ± {shell['sigma2_err']:.5f}" if shell["sigma2_err"] is not None else ""
            console.print(f"  {label}: N = {shell['n']:g}, r = {shell['r']:.4f} Å, σ² = {shell['sigma2']:.5f}{err} Å²")
