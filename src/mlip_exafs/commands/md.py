"""CLI verb ``md``: thermal-disorder MD that writes the snapshots the EXAFS stage reads."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: idle threads must not spin

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import DEVICE_HELP, POTENTIAL_HELP, app, console
from mlip_exafs.config import validate_model


@app.command("md")
def md_cmd(
    structure: str = typer.Argument(..., help="Built-in crystal (ws2, w-bcc) or structure file."),
    out: Path = typer.Option(..., "--out", help="Output folder (snapshots.extxyz, thermo.csv, md.json, checkpoint.npz)."),
    potential: str = typer.Option("chgnet", "--potential", "-p", help=POTENTIAL_HELP),
    supercell: Optional[str] = typer.Option(None, "--supercell", help="Repeat the cell, e.g. 6x6x2."),
    temperature: float = typer.Option(300.0, "--temperature", help="Target temperature (K)."),
    timestep: str = typer.Option("2", "--timestep", help="Timestep (fs; units allowed, e.g. 1fs)."),
    equilibrate: str = typer.Option("2ps", "--equilibrate", help="NVT equilibration before production (e.g. 2ps, 500fs; plain number = fs)."),
    production: str = typer.Option("10ps", "--production", help="Production time; only these frames are written."),
    every: str = typer.Option("50fs", "--every", help="Time between production snapshots."),
    npt: bool = typer.Option(False, "--npt/--no-npt", help="Run NPT first (for --npt-time) and continue at its mean cell."),
    npt_time: Optional[str] = typer.Option(None, "--npt-time", help="NPT duration (default: the --equilibrate time)."),
    pressure: float = typer.Option(0.0, "--pressure", help="NPT pressure (GPa)."),
    checkpoint_every: str = typer.Option("200fs", "--checkpoint-every", help="Time between checkpoints."),
    seed: int = typer.Option(0, "--seed", help="Random seed (velocities, thermostat)."),
    threads: int = typer.Option(1, "--threads", help="Torch threads (1 unless given; $MLIP_EXAFS_THREADS does not apply); keep threads × parallel jobs ≤ cores."),
    nuclei: str = typer.Option("classical", "--nuclei", help="classical | corrected (classical MD + harmonic quantum correction of σ² and χ; --every must resolve the fastest vibration, e.g. 20fs) | path-integral (PIMD through i-PI)."),
    thermostat: Optional[str] = typer.Option(None, "--thermostat", help="NVT thermostat: bussi (global velocity rescaling) | langevin (local friction 1/τ; for stiff, nearly harmonic crystals). Default: langevin with --nuclei corrected, else bussi (docs/md.md)."),
    beads: Optional[int] = typer.Option(None, "--beads", help="Path-integral beads (default: from the highest vibrational frequency and T; see docs/md.md)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
) -> None:
    """NVT MD (Bussi or Langevin thermostat; optional Berendsen NPT first), or path-integral MD (i-PI); resumes after an interruption."""
    from mlip_exafs.md import MdSettings, parse_duration_fs, run_md  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    equilibration_fs = parse_duration_fs(equilibrate, "--equilibrate")
    values = {
        "structure": structure,
        "supercell": supercell,
        "potential": potential,
        "temperature_k": temperature,
        "timestep_fs": parse_duration_fs(timestep, "--timestep"),
        "equilibration_fs": equilibration_fs,
        "production_fs": parse_duration_fs(production, "--production"),
        "snapshot_every_fs": parse_duration_fs(every, "--every"),
        "checkpoint_every_fs": parse_duration_fs(checkpoint_every, "--checkpoint-every"),
        "npt_fs": (parse_duration_fs(npt_time, "--npt-time") if npt_time else equilibration_fs) if npt else 0.0,
        "pressure_gpa": pressure,
        "seed": seed,
        "threads": threads,
        "nuclei": nuclei,
        "beads": beads,
        "thermostat": thermostat,
        "device": device,
    }
    settings = validate_model(MdSettings, values, "mlip-exafs md")
    run_md(settings, out)
    _print_summary(out)


def _print_summary(out: Path) -> None:
    from mlip_exafs.md import OutFiles, production_temperature_text, read_result  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    s = read_result(out)
    temperature = production_temperature_text(s)
    t_text = f"production T {temperature} K" if temperature else "no production rows"
    speed = f"{s['steps_per_s']:.2f} steps/s" if s["steps_per_s"] else "speed n/a"
    beads = f" ({s['beads']} beads each)" if s.get("beads") else ""
    console.print(f"{s['n_frames']} frames{beads}, {s['n_atoms']} atoms, step {s['step']}/{s['total_steps']}, {t_text}, {speed} -> {OutFiles(out).snapshots}")
