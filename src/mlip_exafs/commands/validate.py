"""CLI verb ``validate``: a potential against DFT test labels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import CLI_POTENTIAL, DEVICE_HELP, POTENTIAL_HELP, app, console, given
from mlip_exafs.config import check_numbers
from mlip_exafs.dataset import load_structures
from mlip_exafs.files import read_json
from mlip_exafs.progress import progress_bar


VALIDATE_THREADS = 1  # validate()'s own default, which --threads left out keeps (tests/test_cli.py checks the two agree)


@app.command("validate")
def validate_cmd(
    test: str = typer.Option(..., "--test", help="Dataset (shipped name, folder or .db); its test split is used."),
    out: Path = typer.Option(..., "--out", help="Output folder (validate.json, parity plots)."),
    potential: Optional[str] = typer.Option(None, "--potential", "-p", help=f"{POTENTIAL_HELP} Default {CLI_POTENTIAL}."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=f"Torch threads; default {VALIDATE_THREADS}."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
) -> None:
    """Energy/force/stress errors, softening slope and cMAE against DFT; parity plots."""
    from mlip_exafs.validate import OutFiles, validate  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    check_numbers({"threads": threads}, "mlip-exafs validate")
    potential = potential or CLI_POTENTIAL
    n_structures = len(load_structures(test, "test"))
    with progress_bar(f"validating {potential}", n_structures) as advance:
        m = validate(potential, test, out, advance=advance, device=device, **given(threads=threads))
    stress = "n/a" if m["stress_mae_gpa"] is None else f"{m['stress_mae_gpa']:.3f} GPa"
    energy = "n/a (too few structures for the fitted energy offsets)" if m["energy_mae_mev_atom"] is None else f"{m['energy_mae_mev_atom']:.2f} meV/atom"
    console.print(
        f"{m['n_test_structures']} structures: energy MAE {energy}, "
        f"force MAE {m['force_mae_ev_a']:.4f} eV/Å (RMSE {m['force_rmse_ev_a']:.4f}), stress MAE {stress}, "
        f"softening slope {m['softening_slope']:.3f}, cMAE {m['cmae_ev_a']:.4f} eV/Å"
    )
    groups = read_json(OutFiles(out).by_group)
    if len(groups) > 1:
        for name, g in groups.items():
            slope = "n/a" if g["softening_slope"] is None else f"{g['softening_slope']:.3f}"
            console.print(
                f"  {name}: {g['n_test_structures']} structures, force MAE {g['force_mae_ev_a']:.4f} eV/Å "
                f"(mean |F_DFT| {g['mean_abs_dft_force_ev_a']:.3f}), slope {slope}"
            )
