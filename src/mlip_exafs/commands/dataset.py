"""CLI verbs for labelled datasets: ``dataset info`` and ``dataset pack``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mlip_exafs.cli import app, console
from mlip_exafs.dataset import SHIPPED, dataset_info, pack_dataset

dataset_app = typer.Typer(help="Inspect and package labelled datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("info")
def info_cmd(
    dataset: str = typer.Argument(..., help=f"Shipped name ({', '.join(SHIPPED)}), dataset folder, or .db file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Counts, composition, energy/force ranges and the DFT settings of a dataset."""
    info = dataset_info(dataset)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    code = info["dft_code"]
    console.print(f"[bold]{info['dataset']}[/bold]  DFT: {code.get('name')} {code.get('version')}  settings {info.get('settings_hash')}")
    for split in ("train", "test", "all"):
        if f"n_{split}" not in info:
            continue
        console.print(f"  {split}: {info[f'n_{split}']} structures ({info.get(f'n_{split}_not_converged', 0)} with unconverged SCF, never used)")
        summary = info.get(f"{split}_summary")
        if summary:
            e = summary["energy_ev_atom_range"]
            console.print(f"    compositions {', '.join(summary['compositions'])}; atoms per cell {summary['n_atoms']}; made by {summary['methods']}")
            console.print(f"    energy {e[0]:.4f} .. {e[1]:.4f} eV/atom; max |F| component {summary['max_abs_force_component_ev_a']:.3f} eV/Å; mean |F| {summary['mean_abs_force_component_ev_a']:.3f} eV/Å")
            if summary["stress_gpa_range"]:
                s = summary["stress_gpa_range"]
                console.print(f"    stress components {s[0]:.3f} .. {s[1]:.3f} GPa (positive = tensile)")
            if summary.get("magnetic_moment_mub_atom_range"):  # spin-polarised labels
                m = summary["magnetic_moment_mub_atom_range"]
                console.print(f"    magnetic moment {m[0]:.3f} .. {m[1]:.3f} μB/atom (Mulliken, the cell's over its atoms)")
            if summary["solver_rows"]:
                rows = ", ".join(f"{k} ({n} rows)" for k, n in summary["solver_rows"].items())
                console.print(f"    solver {rows}; median SCF steps {summary['scf_steps_median']:g}")
    if info["settings"]:
        console.print("  settings: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()))


@dataset_app.command("pack")
def pack_cmd(
    source: Path = typer.Argument(..., help="Dataset folder with train.db, test.db and the configs that made them."),
    name: str = typer.Option(..., "--name", help=f"Name to ship it under ({', '.join(SHIPPED)})."),
) -> None:
    """Compress a labelled dataset into the package so every verb can address it by name."""
    configs = {p.name: p.read_text() for p in sorted(source.glob("*.yaml"))}
    dest = pack_dataset(source, name, {"name": name, "configs": configs})
    console.print(f"packed {source} as '{name}' into {dest}")
