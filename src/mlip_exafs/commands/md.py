"""CLI verb ``md``: thermal-disorder MD that writes the snapshots the EXAFS stage reads."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: idle threads must not spin

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import DEVICE_HELP, POTENTIAL_HELP, STRUCTURE_HELP, app, console, default_text, given
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError, setting
from mlip_exafs.settings import MdSettings, default_thermostat


def duration_text(fs: float) -> str:
    """A default duration as --help shows it: 2000.0 -> '2ps', 50.0 -> '50fs'."""
    return f"{fs / 1000:g}ps" if fs >= 1000 and fs % 1000 == 0 else f"{fs:g}fs"


def md_default(field: str) -> str:
    return default_text(MdSettings, field, duration_text if field.endswith("_fs") else None)


@app.command("md")
def md_cmd(
    structure: str = typer.Argument(..., help=STRUCTURE_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder (snapshots.extxyz, thermo.csv, md.json, checkpoint.npz)."),
    potential: Optional[str] = typer.Option(None, "--potential", "-p", help=f"{POTENTIAL_HELP} {md_default('potential').capitalize()}."),
    supercell: Optional[str] = typer.Option(None, "--supercell", help="Repeat the cell, e.g. 6x6x2."),
    temperature_k: Optional[float] = typer.Option(None, "--temperature", help=f"Target temperature (K); {md_default('temperature_k')}."),
    timestep_fs: Optional[str] = typer.Option(None, "--timestep", help=f"Timestep (fs; units allowed, e.g. 1fs); {md_default('timestep_fs')}."),
    equilibration_fs: Optional[str] = typer.Option(None, "--equilibrate", help=f"NVT equilibration before production (e.g. 2ps, 500fs; plain number = fs); {md_default('equilibration_fs')}."),
    production_fs: Optional[str] = typer.Option(None, "--production", help=f"Production time (e.g. 10ps; plain number = fs); only these frames are written; {md_default('production_fs')}."),
    snapshot_every_fs: Optional[str] = typer.Option(None, "--every", help=f"Time between production snapshots (e.g. 50fs; plain number = fs); {md_default('snapshot_every_fs')}."),
    npt: bool = typer.Option(False, "--npt/--no-npt", help="Run NPT first (for --npt-time) and continue at its mean cell."),
    npt_fs: Optional[str] = typer.Option(None, "--npt-time", help="NPT duration, with --npt (e.g. 2ps; plain number = fs; default: the --equilibrate time)."),
    pressure_gpa: Optional[float] = typer.Option(None, "--pressure", help=f"NPT pressure (GPa), with --npt; {md_default('pressure_gpa')}."),
    checkpoint_every_fs: Optional[str] = typer.Option(None, "--checkpoint-every", help=f"Time between checkpoints (plain number = fs), a whole number of timesteps; {md_default('checkpoint_every_fs')}."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Random seed (velocities, thermostat); {md_default('seed')}."),
    threads: Optional[int] = typer.Option(None, "--threads", help=f"Torch threads ($MLIP_EXAFS_THREADS does not apply); keep threads × parallel jobs ≤ cores; {md_default('threads')}."),
    nuclei: Optional[str] = typer.Option(None, "--nuclei", help=f"classical | corrected (classical MD + harmonic quantum correction of σ² and χ; --every must resolve the fastest vibration, e.g. 20fs) | path-integral (PIMD through i-PI); {md_default('nuclei')}."),
    thermostat: Optional[str] = typer.Option(None, "--thermostat", help="NVT thermostat: bussi (global velocity rescaling) | langevin (local friction 1/τ; for stiff, nearly harmonic crystals). "
                                             f"Default: {default_thermostat('corrected')} with --nuclei corrected, else {default_thermostat('classical')} (docs/md.md)."),
    beads: Optional[int] = typer.Option(None, "--beads", help="Path-integral beads, with --nuclei path-integral (default: from the highest vibrational frequency and T; see docs/md.md)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
) -> None:
    """NVT MD (Bussi or Langevin thermostat; optional Berendsen NPT first), or path-integral MD (i-PI); resumes after an interruption."""
    from mlip_exafs.md import parse_duration_fs, run_md  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    durations = given(timestep_fs=timestep_fs, equilibration_fs=equilibration_fs, production_fs=production_fs, snapshot_every_fs=snapshot_every_fs,
                      checkpoint_every_fs=checkpoint_every_fs, npt_fs=npt_fs)
    parsed = {name: parse_duration_fs(text, setting(name)) for name, text in durations.items()}  # main() names each setting as its flag
    npt_time_fs = parsed.pop("npt_fs", None)
    values = {
        **given(structure=structure, supercell=supercell, potential=potential, temperature_k=temperature_k, pressure_gpa=pressure_gpa, seed=seed,
                threads=threads, nuclei=nuclei, beads=beads, thermostat=thermostat, device=device),
        **parsed,
        **npt_duration(npt, npt_time_fs, parsed, pressure_gpa),
    }
    settings = validate_model(MdSettings, values, "mlip-exafs md")
    run_md(settings, out)
    _print_summary(out)


def npt_duration(npt: bool, npt_time_fs: Optional[float], durations_fs: dict[str, float], pressure_gpa: Optional[float] = None) -> dict[str, float]:
    """--npt runs NPT for --npt-time, else for as long as the NVT equilibration (given or the model's).

    Without --npt nothing is given (the model's npt_fs, no NPT); --npt-time or --pressure without it is refused, not ignored.
    """
    if not npt:
        name = "npt_fs" if npt_time_fs is not None else "pressure_gpa" if pressure_gpa is not None else None
        if name:
            raise UserError(f"{setting(name)} is given without --npt, so no NPT would run and it would be ignored; "
                            f"add --npt to run NPT first, or leave {setting(name)} out")
        return {}
    if npt_time_fs is not None:
        return {"npt_fs": npt_time_fs}
    return {"npt_fs": durations_fs.get("equilibration_fs", MdSettings.model_fields["equilibration_fs"].default)}


def _print_summary(out: Path) -> None:
    from mlip_exafs.md import OutFiles, production_temperature_text, read_result  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    s = read_result(out)
    temperature = production_temperature_text(s)
    t_text = f"production T {temperature} K" if temperature else "no production rows"
    speed = f"{s['steps_per_s']:.2f} steps/s" if s["steps_per_s"] else "speed n/a"
    beads = f" ({s['beads']} beads each)" if s.get("beads") else ""
    console.print(f"{s['n_frames']} frames{beads}, {s['n_atoms']} atoms, step {s['step']}/{s['total_steps']}, {t_text}, {speed} -> {OutFiles(out).snapshots}")
