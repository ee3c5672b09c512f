"""Unit and sign conversions at the boundary between ASE, VASP and CHGNet.

Conventions (the most common fine-tuning bug is mixing them):

* ASE stress: eV/Å^3, Voigt order (xx, yy, zz, yz, xz, xy), positive = tensile.
* CHGNet stress: GPa, positive = tensile (``CHGNetCalculator`` multiplies the
  model's GPa by ``ase.units.GPa`` without a sign change).
* VASP stress (OUTCAR "in kB"): kbar, positive = compressive (a pressure).
  CHGNet's ``StructureData`` assumes this input and applies ``x (-0.1)``.

Every conversion lives here, once, and is tested in ``tests/test_units.py``.
"""

from __future__ import annotations

import numpy as np
from ase.units import GPa as _EV_A3_PER_GPA

GPA_PER_EV_A3 = 1.0 / _EV_A3_PER_GPA  # 160.2176...
MEV_PER_EV = 1000.0


def ase_stress_to_gpa(stress_ev_a3) -> np.ndarray:
    """ASE stress (eV/Å^3, tensile positive) -> GPa in CHGNet's convention (tensile positive)."""
    return np.asarray(stress_ev_a3, dtype=float) * GPA_PER_EV_A3


def gpa_to_ase_stress(stress_gpa) -> np.ndarray:
    """CHGNet GPa (tensile positive) -> ASE eV/Å^3 (tensile positive)."""
    return np.asarray(stress_gpa, dtype=float) / GPA_PER_EV_A3


def vasp_kbar_to_gpa(stress_kbar) -> np.ndarray:
    """VASP kbar (compressive positive) -> CHGNet GPa (tensile positive): x (-0.1)."""
    return np.asarray(stress_kbar, dtype=float) * -0.1


def gpa_to_vasp_kbar(stress_gpa) -> np.ndarray:
    """CHGNet GPa -> VASP kbar: what ``StructureData(stresses=...)`` must be given,
    because it converts its input with ``x (-0.1)`` as if it came from VASP."""
    return np.asarray(stress_gpa, dtype=float) * -10.0


def voigt_to_matrix(voigt) -> np.ndarray:
    """(xx, yy, zz, yz, xz, xy) -> symmetric 3x3 matrix (any units)."""
    xx, yy, zz, yz, xz, xy = np.asarray(voigt, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def matrix_to_voigt(matrix) -> np.ndarray:
    """Symmetric 3x3 -> (xx, yy, zz, yz, xz, xy)."""
    m = np.asarray(matrix, dtype=float)
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])

