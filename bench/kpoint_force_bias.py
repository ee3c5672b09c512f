"""Are a coarse k-mesh's CP2K forces biased (too soft or too stiff) or only noisy? (docs/datasets.md, w-bcc)

Labels the same rattled cells of a built-in crystal at two k-spacings and fits the coarse force components against
the dense ones: a slope ≠ 1 would bias what a model fine-tuned on the coarse labels learns (its stiffness, so its σ²);
scatter about a slope of 1 only raises the learning curve's floor.
Run: python bench/kpoint_force_bias.py [--structure w-bcc] [--coarse 0.26] [--dense 0.15] [--frames 6] [--ranks 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dft_convergence import label  # noqa: E402  (one labelling function for both benches)

from mlip_exafs.cp2k import Cp2kSettings, kpoint_mesh  # noqa: E402
from mlip_exafs.structures import load_structure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default="w-bcc")
    parser.add_argument("--coarse", type=float, default=0.26, help="k-spacing of the labels (Å⁻¹)")
    parser.add_argument("--dense", type=float, default=0.15, help="k-spacing taken as the truth (Å⁻¹)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--rattle-a", type=float, default=0.08)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    coarse, dense = (Cp2kSettings(kspacing_inv_a=s) for s in (args.coarse, args.dense))
    forces = {"coarse": [], "dense": []}
    for seed in range(args.frames):
        atoms = load_structure(args.structure)
        atoms.rattle(args.rattle_a, seed=100 + seed)
        for name, settings in (("coarse", coarse), ("dense", dense)):
            (_, f, _), wall = label(atoms, settings, args.ranks)
            forces[name].append(f.ravel())
            print(f"frame {seed} {name} {'x'.join(map(str, kpoint_mesh(atoms, settings.kspacing_inv_a)))}: {wall:.0f} s", flush=True)
    f_coarse, f_dense = (np.concatenate(forces[k]) for k in ("coarse", "dense"))
    slope = float(f_coarse @ f_dense / (f_dense @ f_dense))  # through the origin, as the softening slope
    rms = float(np.sqrt(np.mean((f_coarse - f_dense) ** 2)))
    print(f"{args.structure}: {len(f_dense)} force components, rattle {args.rattle_a} Å; coarse {args.coarse} against dense {args.dense} Å⁻¹: "
          f"slope {slope:.4f}, RMS difference {rms:.4f} eV/Å, RMS force {np.sqrt(np.mean(f_dense ** 2)):.3f} eV/Å")


if __name__ == "__main__":
    main()
