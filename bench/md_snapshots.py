"""Shared by the EXAFS benchmarks: MD snapshots from the project's own md stage (1 torch thread)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from pathlib import Path

from mlip_exafs.md import MdSettings, run_md


def langevin_snapshots(structure: str, supercell: str, temperature_k: float, equil_ps: float, prod_ps: float,
                       every_fs: float, out: Path, timestep_fs: float = 2.0, seed: int = 1) -> Path:
    """NVT MD (Bussi thermostat) with pretrained CHGNet; returns the production snapshots (extxyz).

    The run lives in ``out``'s folder (``md/``) and resumes if interrupted.
    """
    settings = MdSettings(structure=structure, supercell=supercell, potential="chgnet", temperature_k=temperature_k,
                          timestep_fs=timestep_fs, equilibration_fs=1000 * equil_ps, production_fs=1000 * prod_ps,
                          snapshot_every_fs=every_fs, seed=seed, threads=1)
    return run_md(settings, Path(out).parent / "md")
