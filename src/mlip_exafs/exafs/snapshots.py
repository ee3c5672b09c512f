"""MD snapshots in, reference structure and per-frame fractional positions out.

The code lives in :mod:`mlip_exafs.geometry` (the analysis stage uses it too);
these names stay importable from here.
"""

from mlip_exafs.geometry import Snapshots, absorber_indices, default_absorber, read_frames, snapshots_from_frames, symmetrize, trajectory_path, trajectory_symbols

__all__ = ["Snapshots", "absorber_indices", "default_absorber", "read_frames", "snapshots_from_frames", "symmetrize", "trajectory_path", "trajectory_symbols"]
