"""Is the md stage's thermostat biased? Mean production temperature over many seeds, model crystal.

    python bench/bussi_temperature.py [--seeds 24] [--atoms 432]

Why: the WS2 paper MDs (432 atoms, seed 0) all report 305.3 K for a 300 K target,
with the same quarter-by-quarter means (308.4 / 301.2 / 310.3 / 301.3 K) for
pristine, N = 10 and N = 100 CHGNet. This bench runs the md stage's own thermostat
(``fresh_state`` + ``make_dynamics``: Maxwell–Boltzmann start, ``Stationary``,
``FixCom``, ASE Bussi, τ = 100 fs, 2 fs, 2 ps equilibration + 8 ps production,
T read every 5 steps as ``thermo.csv`` does) on an anharmonic Einstein crystal
(k = 5 eV/Å², k4 = 0.5 eV/Å⁴, WS2's masses) where a step costs microseconds.

It prints the mean production T of each seed, their mean ± standard error (an
unbiased thermostat gives 300 within it), and seed 0 again with a 4× stiffer
crystal: the same mean T means the temperature history is the thermostat's
noise realization, set by the seed and the atom count, not by the forces.
Last line: ``bussi_mean_t_k <mean> <standard error>``.
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom

from mlip_exafs.md import MdSettings, fresh_state, make_dynamics

EQUILIBRATION_STEPS = 1000
PRODUCTION_STEPS = 4000
THERMO_EVERY = 5


class EinsteinCrystal(Calculator):
    """Every atom on its own anharmonic spring to its site: E = Σ k/2 d² + k4/4 d⁴ (eV, Å)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, sites: np.ndarray, k: float, k4: float):
        super().__init__()
        self.sites, self.k, self.k4 = sites, k, k4

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.sites
        self.results = {
            "energy": float(0.5 * self.k * (d**2).sum() + 0.25 * self.k4 * (d**4).sum()),
            "forces": -self.k * d - self.k4 * d**3,
        }


def mean_production_temperature(n_atoms: int, seed: int, k: float) -> float:
    """Mean kinetic temperature (K) of the production phase of one md-stage NVT run."""
    settings = MdSettings(seed=seed)
    sites = np.stack(np.meshgrid(*[np.arange(8) * 3.0] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    symbols = ["W" if i % 3 == 0 else "S" for i in range(n_atoms)]
    atoms = Atoms(symbols, positions=sites.copy(), cell=[24.0] * 3, pbc=True)
    atoms.calc = EinsteinCrystal(sites, k, k4=0.5)
    atoms.set_constraint(FixCom())
    dyn = make_dynamics(atoms, "nvt", settings, fresh_state(atoms, settings))
    dyn.run(EQUILIBRATION_STEPS)
    temperatures = []
    for _ in range(PRODUCTION_STEPS // THERMO_EVERY):
        dyn.run(THERMO_EVERY)
        temperatures.append(atoms.get_temperature())
    return float(np.mean(temperatures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--atoms", type=int, default=432, help="432 = the WS2 6x6x2 cell: same noise stream per seed")
    args = parser.parse_args()
    means = []
    for seed in range(args.seeds):
        means.append(mean_production_temperature(args.atoms, seed, k=5.0))
        print(f"seed {seed:3d}  mean T {means[-1]:.2f} K", flush=True)
    stiff = mean_production_temperature(args.atoms, 0, k=20.0)
    print(f"seed   0  mean T {stiff:.2f} K with a 4x stiffer crystal (same noise realization)")
    means = np.array(means)
    print(f"bussi_mean_t_k {means.mean():.2f} {means.std(ddof=1) / np.sqrt(len(means)):.2f}")


if __name__ == "__main__":
    main()
