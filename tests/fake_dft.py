"""Tiny labelled WS2 datasets for tests: CHGNet labels made 10 % stiffer.

Labels = 1.1 x pretrained CHGNet (energy, forces, stress), energies shifted to a
CP2K-like scale (-800 eV/atom), so a fine-tune has a known target: softening
slope 1/1.1 before, towards 1 after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

STIFFNESS = 1.1
CP2K_LIKE_SHIFT_EV_ATOM = -800.0


def rattled_ws2(n: int, seed: int, supercell: str | None = None):
    from mlip_exafs.structures import load_structure

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = load_structure("ws2", supercell)
        strain = 1.0 + rng.uniform(-0.02, 0.02, size=3)
        atoms.set_cell(atoms.cell.array * strain[:, None], scale_atoms=True)
        atoms.positions += rng.normal(scale=0.06, size=atoms.positions.shape)
        atoms.info = {"uid": f"fake-{seed}-{i:03d}"}
        frames.append(atoms)
    return frames


def write_fake_db(path: Path, n: int, seed: int, supercell: str | None = None) -> Path:
    """An ASE db like 'mlip-exafs label' writes, labelled by stiffened CHGNet."""
    import ase.db

    from mlip_exafs.potentials import calculator_for

    frames = rattled_ws2(n, seed, supercell)
    calc = calculator_for("chgnet", frames[0], threads=1)
    with ase.db.connect(path) as db:
        for atoms in frames:
            atoms.calc = calc
            energy = STIFFNESS * atoms.get_potential_energy() + CP2K_LIKE_SHIFT_EV_ATOM * len(atoms)
            forces = STIFFNESS * atoms.get_forces()
            stress = STIFFNESS * atoms.get_stress(voigt=True)
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
            db.write(atoms, key_value_pairs={"uid": atoms.info["uid"], "scf_converged": True})
    return path


def write_fake_dataset(folder: Path, n_train: int, n_test: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_fake_db(folder / "train.db", n_train, seed=1)
    write_fake_db(folder / "test.db", n_test, seed=2)
    return folder


def fake_cp2k_shell(startup: str, at_work: str) -> str:
    """A shell script that stands in for ``cp2k_shell``: runs ``startup``, answers the version and ASE's
    handshake, then runs ``at_work`` when the first calculation is asked for (die, hang, ...)."""
    return f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "CP2K version 2024.1"; exit 0; fi
{startup}
echo "* READY"
read line
echo "CP2K Shell Version: 6.0"
echo "* READY"
read line
echo "* READY"
read line
{at_work}
"""
