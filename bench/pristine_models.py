"""Every offline uMLIP against the shipped WS2 DFT labels, and its first-shell σ² from a short MD.

    OMP_NUM_THREADS=1 MLIP_EXAFS_THREADS=1 python bench/pristine_models.py validate --out runs/pristine-models
    OMP_NUM_THREADS=1 MLIP_EXAFS_THREADS=1 python bench/pristine_models.py md --out runs/pristine-models \
        --models chgnet chgnet-0.2.0 --equilibrate-fs 300 --production-fs 800
    python bench/pristine_models.py sigma2 --out runs/pristine-models --models chgnet chgnet-0.2.0

``validate``: ``mlip_exafs.validate.validate`` on the 20 test structures of the
shipped ``ws2`` dataset (54-atom PBE+D3(BJ) CP2K labels), one torch thread, wall
and CPU time of the whole call (model load included; torch imported before the first; on a shared
machine the CPU time is the cost, the wall time depends on the load). ``md``: 300 K Bussi NVT of a 4×4×1
supercell (96 atoms) with ``run_md``, snapshots every 20 fs; ``sigma2``: ``analyze``
of those runs, the W–S1 and W–W1 σ² over the production snapshots. Every result lands in ``OUT/NAME/`` (the stages' own
files, resumable) and one line per model in ``OUT/validate.csv``, ``OUT/md.csv``, ``OUT/sigma2.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlip_exafs.potentials import REGISTRY

VALIDATE_KEYS = ("softening_slope", "force_mae_ev_a", "energy_mae_mev_atom", "stress_mae_gpa", "cmae_ev_a")


def validate_all(models: list[str], out: Path) -> list[dict]:
    from mlip_exafs.validate import validate

    import torch  # noqa: F401  (imported before the first timing, so that no model pays for it)

    rows = []
    for name in models:
        start, cpu_start = time.perf_counter(), time.process_time()
        metrics = validate(name, "ws2", out / name / "validate", threads=1, device="cpu")
        rows.append({"model": name, **{k: metrics[k] for k in VALIDATE_KEYS}, "wall_s": round(time.perf_counter() - start, 1),
                     "cpu_s": round(time.process_time() - cpu_start, 1)})
        print(rows[-1], flush=True)
    return rows


def md_all(models: list[str], out: Path, equilibrate_fs: float, production_fs: float) -> list[dict]:
    from mlip_exafs.files import read_json
    from mlip_exafs.md import MdSettings, run_md

    rows = []
    for name in models:
        settings = MdSettings(structure="ws2", supercell="4x4x1", potential=name, temperature_k=300, timestep_fs=2,
                              equilibration_fs=equilibrate_fs, production_fs=production_fs, snapshot_every_fs=20, threads=1, device="cpu")
        start = time.perf_counter()
        run_md(settings, out / name / "md", show_progress=False)
        summary = read_json(out / name / "md" / "md.json")
        rows.append({"model": name, "equilibration_fs": equilibrate_fs, "production_fs": production_fs,
                     "steps_per_s": round(summary["steps_per_s"], 3), "wall_s": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)
    return rows


def sigma2_all(models: list[str], out: Path) -> list[dict]:
    """First-shell σ² of finished MD runs (``analyze``, kept apart so that an analysis failure costs no MD)."""
    from mlip_exafs.analysis import AnalysisSettings, analyze

    rows = []
    for name in models:
        result = analyze([out / name / "md" / "snapshots.extxyz"], AnalysisSettings(absorber="W"), out / name / "analysis")
        trajectory = result["trajectories"][0]
        shells = {s["label"]: s for s in trajectory["shells"]}
        rows.append({"model": name, "n_frames": trajectory["n_frames"],
                     "sigma2_w_s1_a2": shells["W-S1"]["sigma2"], "sigma2_w_s1_err_a2": shells["W-S1"]["sigma2_err"],
                     "sigma2_w_w1_a2": shells["W-W1"]["sigma2"], "sigma2_w_w1_err_a2": shells["W-W1"]["sigma2_err"]})
        print(rows[-1], flush=True)
    return rows


def append_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write(",".join(rows[0]) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row.values()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["validate", "md", "sigma2"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(REGISTRY))
    parser.add_argument("--equilibrate-fs", type=float, default=500.0)
    parser.add_argument("--production-fs", type=float, default=2000.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "validate":
        append_csv(validate_all(args.models, args.out), args.out / "validate.csv")
    elif args.what == "md":
        append_csv(md_all(args.models, args.out, args.equilibrate_fs, args.production_fs), args.out / "md.csv")
    else:
        append_csv(sigma2_all(args.models, args.out), args.out / "sigma2.csv")


if __name__ == "__main__":
    main()
