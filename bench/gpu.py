"""GPU against CPU: MD force calls per second on 6×6×2 WS2 and one N = 100 fine-tune epoch, per model.

    OMP_NUM_THREADS=1 MLIP_EXAFS_THREADS=1 python bench/gpu.py --out runs/gpu-bench            # every device torch sees
    python bench/gpu.py --out runs/gpu-smoke --supercell 2x2x1 --n 4 --calls 3                 # a minute-long check of the script

MD: the potential's MD calculator (``Potential.md_calculator``, CHGNet's fast
path) on a rattled supercell, ``--calls`` energy+force calls after two warm-up
calls; one call per MD step, so calls/s is the MD steps/s. Fine-tune: one epoch
of ``mlip_exafs.finetune.finetune`` on the first N structures of the shipped
``ws2`` training split (``seconds_per_structure_epoch`` from finetune.json).
One line per (model, device) in OUT/gpu.csv. Written for a session with a GPU;
on this project's CPU-only machines only the smoke run above was made.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def md_calls_per_s(model: str, device: str, supercell: str, calls: int) -> float:
    from mlip_exafs.potentials import load_potential
    from mlip_exafs.structures import load_structure

    atoms = load_structure("ws2", supercell)
    atoms.rattle(0.05, seed=0)
    atoms.calc = load_potential(model, device, threads=None).md_calculator()
    for _ in range(2):  # warm-up: graph building caches, CUDA kernels
        atoms.positions += 1e-3
        atoms.get_forces()
    start = time.perf_counter()
    for _ in range(calls):
        atoms.positions += 1e-3
        atoms.get_forces()
    return calls / (time.perf_counter() - start)


def finetune_epoch_s(model: str, device: str, n: int, out: Path) -> float:
    from mlip_exafs.files import read_json
    from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, finetune

    finetune(FinetuneSettings(potential=model, train="ws2", n=n, seed=0, recipe=FinetuneRecipe(epochs=1), device=device), out)
    return read_json(out / "finetune.json")["seconds_per_structure_epoch"] * n


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["chgnet", "sevennet-0"])
    parser.add_argument("--supercell", default="6x6x2")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["model,device,supercell,md_steps_per_s,n,finetune_epoch_s"]
    for model in args.models:
        for device in devices:
            steps_per_s = md_calls_per_s(model, device, args.supercell, args.calls)
            epoch_s = finetune_epoch_s(model, device, args.n, args.out / f"ft-{model}-{device}")
            lines.append(f"{model},{device},{args.supercell},{steps_per_s:.3f},{args.n},{epoch_s:.1f}")
            print(lines[-1], flush=True)
    (args.out / "gpu.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
