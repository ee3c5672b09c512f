"""One-structure energy/forces/stress: the smallest check that a potential works."""

from __future__ import annotations

import numpy as np
from ase.units import GPa

from mlip_exafs.errors import UserError
from mlip_exafs.potentials import load_potential
from mlip_exafs.structures import load_structure


def singlepoint(structure: str, potential: str, supercell: str | None = None, threads: int | None = None, device: str | None = None) -> dict:
    """Units in the keys; ``forces_ev_a`` (n_atoms, 3), ``stress_gpa`` Voigt xx yy zz yz xz xy or None."""
    atoms = load_structure(structure, supercell)
    loaded = load_potential(potential, device, threads)
    loaded.check_elements(atoms)
    atoms.calc = loaded.calculator()
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    has_stress = "stress" in atoms.calc.implemented_properties  # a python: calculator may have none
    stress = atoms.get_stress(voigt=True) / GPa if has_stress else None  # ASE: eV/Å^3, positive = tensile
    if not (np.isfinite(energy) and np.isfinite(forces).all() and (stress is None or np.isfinite(stress).all())):
        raise UserError(f"potential {loaded.identity} gave a non-finite energy, force or stress for {structure}; "
                        "check the structure (overlapping atoms, a collapsed cell) or try another potential")
    return {
        "formula": atoms.get_chemical_formula(),
        "n_atoms": len(atoms),
        "potential": loaded.identity,
        "family": loaded.family_name,
        "device": loaded.device,
        "energy_ev": energy,
        "energy_ev_atom": energy / len(atoms),
        "forces_ev_a": forces,
        "max_force_ev_a": float(np.linalg.norm(forces, axis=1).max()),
        "stress_gpa": stress,
    }
