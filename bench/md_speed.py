"""This project's MD (``run_md``) vs CHGNet's own ``MolecularDynamics``, same cell, same process.

    python bench/md_speed.py [--supercell 6x6x2] [--steps 30] [--rounds 2]

2H-WS2 6x6x2 (432 atoms), pretrained CHGNet 0.3.0, 300 K, 2 fs, 1 torch thread
for both. Ours is the full stage (Bussi NVT, FastCHGNetCalculator, thermo log,
snapshots, checkpoints); its rate is the loop rate that md.json records, which
includes the extra force call of the first step. Theirs is
``chgnet.model.dynamics.MolecularDynamics`` (NVT Nosé–Hoover, CHGNetCalculator)
timed on ``run(steps)`` after a 2-step warm-up. The two alternate for
``--rounds`` rounds so that a change in machine load hits both alike.
Last line: ``md_speed_ratio <ours/theirs>``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mlip_exafs.md import MdSettings, run_md
from mlip_exafs.structures import load_structure

TIMESTEP_FS = 2.0
TEMPERATURE_K = 300.0


def ours_steps_per_s(supercell: str, steps: int, scratch: Path, seed: int) -> float:
    """One fresh ``run_md`` of ``steps`` production steps; the loop rate from md.json."""
    out = scratch / f"ours-{seed}"
    settings = MdSettings(structure="ws2", supercell=supercell, temperature_k=TEMPERATURE_K, timestep_fs=TIMESTEP_FS,
                          equilibration_fs=0, production_fs=steps * TIMESTEP_FS, snapshot_every_fs=5 * TIMESTEP_FS,
                          checkpoint_every_fs=10 * TIMESTEP_FS, seed=seed, threads=1)
    run_md(settings, out, show_progress=False)
    segment = json.loads((out / "md.json").read_text())["segments"][0]
    shutil.rmtree(out)
    return segment["steps"] / segment["wall_s"]


def theirs_steps_per_s(model, supercell: str, steps: int) -> float:
    """CHGNet's MolecularDynamics, NVT Nosé–Hoover, timed after a 2-step warm-up."""
    from chgnet.model.dynamics import MolecularDynamics

    atoms = load_structure("ws2", supercell)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE's NPT deprecation notice
        md = MolecularDynamics(atoms, model=model, ensemble="nvt", thermostat="Nose-Hoover", temperature=TEMPERATURE_K,
                               starting_temperature=TEMPERATURE_K, timestep=TIMESTEP_FS, use_device="cpu")
        md.run(2)
        t0 = time.perf_counter()
        md.run(steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supercell", default="6x6x2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from chgnet.model import CHGNet

    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    n_atoms = len(load_structure("ws2", args.supercell))
    print(f"WS2 {args.supercell}: {n_atoms} atoms, {args.steps} steps per measurement, {args.rounds} alternating rounds, 1 torch thread", flush=True)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="md_speed_") as scratch:
        for k in range(args.rounds):
            ours.append(ours_steps_per_s(args.supercell, args.steps, Path(scratch), seed=k))
            print(f"round {k + 1}: ours   {ours[-1]:.3f} steps/s", flush=True)
            theirs.append(theirs_steps_per_s(model, args.supercell, args.steps))
            print(f"round {k + 1}: theirs {theirs[-1]:.3f} steps/s", flush=True)
    print(f"ours (run_md, Bussi NVT, FastCHGNetCalculator): {np.mean(ours):.3f} steps/s  ({np.mean(ours) * n_atoms:.0f} atom-steps/s)")
    print(f"theirs (chgnet MolecularDynamics, NVT Nose-Hoover): {np.mean(theirs):.3f} steps/s")
    print(f"md_speed_ratio {np.mean(ours) / np.mean(theirs):.3f}")


if __name__ == "__main__":
    main()
