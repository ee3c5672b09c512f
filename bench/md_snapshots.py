"""Shared by the EXAFS benchmarks: Langevin MD snapshots with CHGNet, 1 torch thread.

The md stage is written elsewhere; the benchmarks only need plain ASE Langevin
at fixed cell (the experimental lattice), so they do it here.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import time
from pathlib import Path

import ase.io
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from mlip_exafs.potentials import calculator_for
from mlip_exafs.structures import load_structure


def langevin_snapshots(structure: str, supercell: str, temperature_k: float, equil_ps: float, prod_ps: float,
                       every_fs: float, out: Path, timestep_fs: float = 2.0, seed: int = 1) -> Path:
    """Run NVT Langevin with pretrained CHGNet and write the production frames to ``out`` (extxyz)."""
    import numpy as np

    atoms = load_structure(structure, supercell)
    atoms.calc = calculator_for("chgnet", atoms, threads=1)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_k, friction=0.02 / units.fs, rng=np.random.default_rng(seed + 1))
    n_equil = int(round(equil_ps * 1000 / timestep_fs))
    n_prod = int(round(prod_ps * 1000 / timestep_fs))
    every = max(1, int(round(every_fs / timestep_fs)))
    t0 = time.perf_counter()
    dyn.run(n_equil)
    frames = []
    for _ in range(n_prod // every):
        dyn.run(every)
        snap = atoms.copy()
        snap.info = {"temperature_k": float(atoms.get_temperature()), "step": int(dyn.nsteps)}
        frames.append(snap)
    tmp = out.with_suffix(".tmp.extxyz")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, out)
    steps = n_equil + n_prod
    print(f"md: {len(atoms)} atoms, {steps} steps in {time.perf_counter() - t0:.0f} s "
          f"({steps / (time.perf_counter() - t0):.2f} steps/s), {len(frames)} frames, "
          f"mean T {np.mean([f.info['temperature_k'] for f in frames]):.0f} K -> {out}", flush=True)
    return out
