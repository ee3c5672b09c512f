"""Structures to label: MD snapshots at several temperatures, strained and rattled cells.

Deterministic for a seed. Each structure carries how it was made in
``atoms.info`` (``uid``, ``method``, ``temperature_k``, ``strain_voigt``,
``rattle_a``, ``seed``) so a dataset documents its own sampling.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from mlip_exafs.errors import UserError
from mlip_exafs.files import atomic_path, check_output_file
from mlip_exafs.potentials import calculator_for
from mlip_exafs.settings import SampleSpec  # noqa: F401  (re-exported: defined with the other stages' settings)
from mlip_exafs.structures import load_structure


def sample(spec: SampleSpec, out: Path, progress=None) -> list[Atoms]:
    """Sample the structures of ``spec`` and write them (shuffled by seed) to an extxyz file."""
    check_output_file(out, "structures file", example="train.extxyz")  # before the sampling MD, not after it
    base = load_structure(spec.structure, spec.supercell)
    calc = calculator_for(spec.potential, base, spec.threads)
    rng = np.random.default_rng(spec.seed)
    frames: list[Atoms] = []
    for temperature in spec.temperatures_k:
        frames += _md_snapshots(base, calc, temperature, spec.snapshots_per_temperature, spec, rng, progress)
    for snap in _md_snapshots(base, calc, spec.strain_temperature_k, spec.strained, spec, rng, progress):
        frames.append(_strained(snap, spec.strain_max, rng))
    for i in range(spec.rattled):
        frames.append(_rattled(base, spec.rattle_max_a * (i + 1) / spec.rattled, rng))
    order = rng.permutation(len(frames))
    frames = [frames[i] for i in order]
    for i, atoms in enumerate(frames):
        atoms.info["uid"] = f"{Path(spec.structure).name}-s{spec.seed}-{i:04d}-{atoms.info['method']}"  # a file name, never a path
        atoms.info["seed"] = spec.seed
        atoms.info["sample_potential"] = spec.potential
    with atomic_path(out) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return frames


def _sampling_langevin(atoms: Atoms, timestep: float, temperature: float, rng) -> Langevin:
    """ASE's Langevin with its centre-of-mass fix (``fixcm=True``), which ASE 3.28 deprecated for ``FixCom``.

    Kept because the shipped datasets' structures were sampled with it (a seed gives the same structures
    only with it), and the small departure from exact NVT that ASE warns about does not matter for picking
    training structures. Its FutureWarning is silenced here alone; when ASE drops ``fixcm``, resample with ``FixCom``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fixcm.*", category=FutureWarning)
        return Langevin(atoms, timestep, temperature_K=temperature, friction=0.02 / units.fs, fixcm=True, rng=rng)


def _md_snapshots(base: Atoms, calc, temperature: float, count: int, spec: SampleSpec, rng, progress) -> list[Atoms]:
    """Langevin NVT from the perfect cell; one snapshot every ``interval_fs`` after equilibration."""
    if count == 0:
        return []
    atoms = base.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = _sampling_langevin(atoms, spec.timestep_fs * units.fs, temperature, rng)
    every = max(1, round(spec.interval_fs / spec.timestep_fs))
    dyn.run(round(spec.equilibration_fs / spec.timestep_fs))
    snaps = []
    for _ in range(count):
        dyn.run(every)
        if not np.isfinite(atoms.positions).all() or atoms.get_temperature() > 5 * temperature + 500:
            raise UserError(f"sampling MD at {temperature} K blew up; lower the temperature or the timestep")
        snap = _like(atoms, atoms.positions)
        snap.info.update(method="md", temperature_k=float(temperature))
        snaps.append(snap)
        if progress:
            progress()
    return snaps


def _strained(atoms: Atoms, strain_max: float, rng) -> Atoms:
    """Apply a random symmetric strain to cell and atoms: normal components uniform in ±strain_max, shear ones in
    ±strain_max/2, as tensor components ε_ij (engineering shear γ = 2ε); ``strain_voigt`` records them in ASE's
    Voigt order (xx, yy, zz, yz, xz, xy)."""
    voigt = rng.uniform(-strain_max, strain_max, 6)
    voigt[3:] *= 0.5  # shear components smaller: layered crystals shear easily
    eps = np.array([[voigt[0], voigt[5], voigt[4]], [voigt[5], voigt[1], voigt[3]], [voigt[4], voigt[3], voigt[2]]])
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    out.info.update(method="strained", strain_voigt=voigt.round(6).tolist())
    return out


def _rattled(base: Atoms, sigma: float, rng) -> Atoms:
    out = _like(base, base.positions + rng.normal(0, sigma, base.positions.shape))
    out.info.update(method="rattled", rattle_a=round(float(sigma), 5))
    return out


def _like(base: Atoms, positions: np.ndarray) -> Atoms:
    """``base``'s cell at other positions; of the rest only its initial magnetic moments (a magnetic order to label)."""
    magmoms = base.get_initial_magnetic_moments() if base.has("initial_magmoms") else None
    return Atoms(base.numbers, positions, cell=base.cell, pbc=True, magmoms=magmoms)
