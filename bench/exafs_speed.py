"""Fast EXAFS engine vs per-snapshot FEFF8L on the same WS2 MD snapshots.

    python bench/exafs_speed.py [--traj FILE] [--out scratch/exafs_speed]

Without --traj, 2H-WS2 snapshots are made here: Langevin NVT at 300 K with
pretrained CHGNet (1 torch thread), 6x6x1 supercell (216 atoms, 72 W
absorbers). The ideal crystal (a = 3.1532 Å) is the reference. Both engines share the same SCF FEFF8L potentials (computed once,
not timed). The fast engine runs on ALL frames × absorbers; FEFF (NLEG 4,
CRITERIA 0 0) runs on an evenly spaced subsample of frames × absorbers and its
time per absorber-frame is scaled to the full set. The R-factor compares the
two engines on that same subsample (k²χ, k = 3-15 1/Å).
Last line: ``exafs_speedup <ratio> r_factor <R>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from md_snapshots import langevin_snapshots  # noqa: E402  (sets OMP_WAIT_POLICY before torch)

from mlip_exafs.exafs import ExafsSettings, read_chi_csv, run_exafs  # noqa: E402
from mlip_exafs.spectra import FTWindow, k_weighted_r_factor  # noqa: E402


def run(settings: ExafsSettings, traj: Path, out: Path, potentials: Path | None) -> dict:
    """One engine run; reuse already computed potentials so that only the engines are timed."""
    if potentials is not None and not (out / "potentials").exists():
        shutil.copytree(potentials, out / "potentials")
    run_exafs(settings, traj, out)
    info = json.loads((out / "exafs.json").read_text())
    k, chi = read_chi_csv(out)
    return {"k": k, "chi": chi, "engine_s": info["timing_s"]["engine_s"], "pairs": info["n_frames"] * info["n_absorbers"], "info": info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traj", type=Path, help="Existing snapshots (extxyz/.traj); default: make WS2 MD snapshots.")
    ap.add_argument("--out", type=Path, default=Path("scratch/exafs_speed"))
    ap.add_argument("--supercell", default="6x6x1")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--every-fs", type=float, default=20.0)
    ap.add_argument("--rmax", type=float, default=6.0)
    ap.add_argument("--feff-frames", type=int, default=3)
    ap.add_argument("--feff-absorbers", type=int, default=4)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    traj = args.traj or args.out / "snapshots.extxyz"
    if not traj.exists():
        traj = langevin_snapshots("ws2", args.supercell, 300.0, 0.4, args.frames * args.every_fs / 1000.0, args.every_fs, traj)
    base = dict(absorber="W", edge="L3", rmax_a=args.rmax, nleg=4, ideal="ws2", ideal_supercell=args.supercell)
    fast_all = run(ExafsSettings(engine="fast", **base), traj, args.out / "fast_all", None)
    potentials = args.out / "fast_all" / "potentials"
    sub = dict(max_frames=args.feff_frames, max_absorbers=args.feff_absorbers, n_blocks=2)
    fast_sub = run(ExafsSettings(engine="fast", **base, **sub), traj, args.out / "fast_subsample", potentials)
    feff_sub = run(ExafsSettings(engine="feff", **base, **sub), traj, args.out / "feff_subsample", potentials)

    feff_per_pair = feff_sub["engine_s"] / feff_sub["pairs"]
    feff_full_s = feff_per_pair * fast_all["pairs"]
    ratio = feff_full_s / fast_all["engine_s"]
    r = k_weighted_r_factor(fast_sub["k"], fast_sub["chi"], feff_sub["chi"], FTWindow(kmin_inv_a=3.0, kmax_inv_a=15.0))
    r_all = k_weighted_r_factor(fast_sub["k"], fast_all["chi"], feff_sub["chi"], FTWindow(kmin_inv_a=3.0, kmax_inv_a=15.0))
    print(f"snapshots: {fast_all['info']['n_frames']} frames x {fast_all['info']['n_absorbers']} W absorbers = {fast_all['pairs']} absorber-frames, rmax {args.rmax} A, NLEG 4")
    print(f"fast engine, all absorber-frames: {fast_all['engine_s']:.2f} s ({fast_all['info']['engine_info']})")
    print(f"FEFF8L per snapshot (CRITERIA 0 0): {feff_sub['engine_s']:.1f} s for {feff_sub['pairs']} absorber-frames = {feff_per_pair:.2f} s each "
          f"-> {feff_full_s:.0f} s scaled to all {fast_all['pairs']}")
    print(f"R (k^2 chi, k 3-15) fast vs FEFF on the same {feff_sub['pairs']} absorber-frames: {r:.2e}; full fast average vs that FEFF subsample: {r_all:.2e}")
    print(f"exafs_speedup {ratio:.0f} r_factor {r:.2e}")


if __name__ == "__main__":
    main()
