"""MD-EXAFS of bcc W (pristine CHGNet, 300 K) against the W-foil spectrum of the XAS Data Library.

    python bench/w_foil_exafs.py [--out scratch/w_foil] [--supercell 4x4x4]

Steps: Langevin NVT at the experimental lattice (a = 3.165 Å) with CHGNet,
1 torch thread; snapshots every ``--every-fs``; configuration-averaged χ(k)
with the fast engine (SCF FEFF8L potentials of the ideal crystal, paths to
4 legs, rmax 6 Å); then fit S0² and ΔE0 against the experiment in R space.
Snapshots are reused when the file exists. Last line: ``w_foil r_factor_r <R>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from md_snapshots import langevin_snapshots  # noqa: E402  (sets OMP_WAIT_POLICY before torch)

from mlip_exafs.compare import CompareSettings, compare  # noqa: E402
from mlip_exafs.exafs import ExafsSettings, run_exafs  # noqa: E402

EXPERIMENT = Path(__file__).resolve().parents[1] / "examples" / "data" / "W_metal_rt_01.xdi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("scratch/w_foil"))
    ap.add_argument("--supercell", default="4x4x4")
    ap.add_argument("--temperature-k", type=float, default=300.0)
    ap.add_argument("--equil-ps", type=float, default=1.0)
    ap.add_argument("--prod-ps", type=float, default=4.0)
    ap.add_argument("--every-fs", type=float, default=50.0)
    ap.add_argument("--rmax", type=float, default=6.0)
    ap.add_argument("--experiment", type=Path, default=EXPERIMENT)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    traj = args.out / "snapshots.extxyz"
    if not traj.exists():
        traj = langevin_snapshots("w-bcc", args.supercell, args.temperature_k, args.equil_ps, args.prod_ps, args.every_fs, traj)
    settings = ExafsSettings(absorber="W", edge="L3", rmax_a=args.rmax, ideal="w-bcc", ideal_supercell=args.supercell)
    chi_csv = run_exafs(settings, traj, args.out / "exafs")
    result = compare(chi_csv, args.experiment, CompareSettings(absorber="W", edge="L3"), args.out / "compare")
    print(f"s02 {result['s02']:.3f}  de0 {result['de0_ev']:.2f} eV  R_k {result['r_factor_k']:.4f}  "
          f"(k {result['kmin']}-{result['kmax']} 1/Å, R {result['rmin']}-{result['rmax']} Å)")
    print(f"w_foil r_factor_r {result['r_factor_r']:.5f}")


if __name__ == "__main__":
    main()
