"""Quantum nuclei against path integrals, with the project's own commands (issue #22).

For each crystal and temperature: `mlip-exafs md --nuclei corrected` with the Bussi and with the
Langevin thermostat, and `mlip-exafs md --nuclei path-integral` (the bead rule's P, or fewer beads
where the rule's P is too dear, then compared like for like: the correction evaluated with the same
P-bead harmonic kernel, :func:`mlip_exafs.quantum.ring_polymer_over_classical`); then
`mlip-exafs analyze` on each. The table: σ² of the first three shells (classical, corrected,
path-integral), beads, production temperature, wall time, and the relative difference of each
corrected σ² from the path-integral σ² at the same bead count.

    export OMP_NUM_THREADS=1 MLIP_EXAFS_THREADS=1 OMP_WAIT_POLICY=PASSIVE
    nice -n 5 .venv/bin/python bench/quantum_validation.py --out scratch/h3 [--only w-10] [--list]

Resumable: each run goes to OUT/<case>/<run>; a finished run is skipped (the md stage recognises it)
and a killed one resumes from its checkpoint when the script is rerun. The table
OUT/quantum_validation.json is rewritten after every run, so an interrupted session still leaves
the numbers of the runs it finished. Add a case to CASES to extend the study.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / ".venv" / "bin" / "mlip-exafs")
N_SHELLS = 3


@dataclass(frozen=True)
class Run:
    """One md run: its name in the case folder and the md options besides those of the case."""

    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One crystal at one temperature; every run shares the structure, potential, seed and shells."""

    name: str
    structure: str
    supercell: str
    temperature_k: float
    absorber: str
    shell_rmax_a: float
    runs: tuple[Run, ...]
    common: tuple[str, ...] = field(default=("--potential", "chgnet", "--seed", "1", "--threads", "1"))

    def md_command(self, run: Run, out: Path) -> list[str]:
        return [CLI, "md", self.structure, "--supercell", self.supercell, "--temperature", f"{self.temperature_k:g}",
                *self.common, *run.args, "--out", str(out)]


def corrected(thermostat: str, *timing: str) -> Run:
    """A corrected run with the thermostat named (Langevin is the default for corrected nuclei; Bussi was before)."""
    return Run(f"corrected-{thermostat}", (*timing, "--nuclei", "corrected", "--thermostat", thermostat))


def path_integral(beads: int | None, *timing: str) -> Run:
    return Run(f"pimd-p{beads}" if beads else "pimd-rule", (*timing, "--nuclei", "path-integral", *(("--beads", str(beads)) if beads else ())))


W_CLASSICAL = ("--timestep", "5", "--equilibrate", "500fs", "--production", "4ps", "--every", "20fs", "--checkpoint-every", "500fs")
W_100K = ("--timestep", "8", "--equilibrate", "400fs", "--production", "3200fs", "--every", "16fs", "--checkpoint-every", "800fs")
W_PIMD_300K = ("--timestep", "5", "--equilibrate", "500fs", "--production", "2500fs", "--every", "20fs", "--checkpoint-every", "250fs")
W_PIMD_100K = ("--timestep", "8", "--equilibrate", "400fs", "--production", "1600fs", "--every", "16fs", "--checkpoint-every", "160fs")
# 10 K: the rule asks 53 beads (ħω_max/kT = 21); fewer beads, each compared with the correction's P-bead value
W_PIMD_10K = ("--timestep", "5", "--equilibrate", "250fs", "--production", "750fs", "--every", "25fs", "--checkpoint-every", "250fs")
# WS2: 4 fs steps (the W–S stretch, ≈ 12 THz, gets ≈ 20 per period) to fit the loaded 2 cores
WS2_CLASSICAL = ("--timestep", "4", "--equilibrate", "400fs", "--production", "2400fs", "--every", "20fs", "--checkpoint-every", "400fs")
WS2_PIMD = ("--timestep", "4", "--equilibrate", "200fs", "--production", "800fs", "--every", "20fs", "--checkpoint-every", "200fs")

W = dict(structure="w-bcc", supercell="3x3x3", absorber="W", shell_rmax_a=4.6)
WS2 = dict(structure="ws2", supercell="4x4x1", absorber="W", shell_rmax_a=4.3)  # 96 atoms: in 3x3x1 the shell cut (half the width, 4.10 Å, moved into a gap) drops W–S2 at 3.97 Å
CASES = (
    Case("w-300", temperature_k=300.0, runs=(corrected("bussi", *W_CLASSICAL), corrected("langevin", *W_CLASSICAL),
                                             path_integral(None, *W_PIMD_300K), path_integral(4, *W_PIMD_300K)), **W),
    Case("w-100", temperature_k=100.0, runs=(corrected("bussi", *W_100K), corrected("langevin", *W_100K),
                                             path_integral(None, *W_PIMD_100K), path_integral(10, *W_PIMD_100K)), **W),
    Case("w-10", temperature_k=10.0, runs=(corrected("bussi", *W_CLASSICAL), corrected("langevin", *W_CLASSICAL),
                                           path_integral(4, *W_PIMD_10K), path_integral(8, *W_PIMD_10K), path_integral(16, *W_PIMD_10K)), **W),
    Case("ws2-300", temperature_k=300.0, runs=(corrected("langevin", *WS2_CLASSICAL), path_integral(None, *WS2_PIMD),
                                               corrected("bussi", *WS2_CLASSICAL)), **WS2),
    Case("ws2-10", temperature_k=10.0, runs=(corrected("langevin", *WS2_CLASSICAL), path_integral(4, *WS2_PIMD),
                                             path_integral(8, *WS2_PIMD), corrected("bussi", *WS2_CLASSICAL)), **WS2),
)


def run_md(case: Case, run: Run, folder: Path) -> None:
    """The md command (skips a finished run, resumes a killed one), then analyze."""
    md_json = folder / "md.json"
    if not (md_json.exists() and json.loads(md_json.read_text()).get("status") == "complete"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(" ".join(case.md_command(run, folder)), flush=True)
        subprocess.run(case.md_command(run, folder), check=True)
    analysis = folder / "analysis" / "analysis.json"
    if not analysis.exists() or analysis.stat().st_mtime < md_json.stat().st_mtime:
        subprocess.run([CLI, "analyze", str(folder), "--absorber", case.absorber, "--shell-rmax", f"{case.shell_rmax_a:g}",
                        "--out", str(folder / "analysis")], check=True, capture_output=True)


def run_row(case: Case, run: Run, folder: Path) -> dict:
    md = json.loads((folder / "md.json").read_text())
    shells = json.loads((folder / "analysis" / "analysis.json").read_text())["trajectories"][0]["shells"][:N_SHELLS]
    row = {
        "run": run.name, "command": " ".join(case.md_command(run, folder)[1:]), "nuclei": md["settings"].get("nuclei", "classical"),
        "thermostat": md["settings"].get("thermostat", "bussi"), "beads": md.get("beads"), "bead_rule": md.get("bead_rule"),
        "steps": md["total_steps"], "wall_s": round(sum(s["wall_s"] for s in md["segments"]), 1),
        "production_temperature_k": round(md["production_temperature_k"]["mean"], 2),
        "shells": {s["label"]: {k: s.get(k) for k in ("r_mean", "sigma2", "sigma2_err", "sigma2_classical", "delta_sigma2_quantum")} for s in shells},
    }
    return row


def corrected_with_beads(case: Case, folder: Path, beads: int) -> dict[str, float]:
    """σ² of a corrected run's first shells as a P-bead ring polymer would have them (harmonic kernel)."""
    from mlip_exafs.analysis import find_shells, pair_lengths_a, quantum_input, snapshots_from_frames
    from mlip_exafs.geometry import read_frames
    from mlip_exafs.quantum import shell_correction

    frames = read_frames(folder)
    snapshots = snapshots_from_frames(frames, None)
    quantum = quantum_input(folder, frames)
    classical = json.loads((folder / "analysis" / "analysis.json").read_text())["trajectories"][0]["shells"]
    values = {}
    for shell, stats in zip(find_shells(snapshots.reference, case.absorber, case.shell_rmax_a, 0.1)[:N_SHELLS], classical):
        c = shell_correction(pair_lengths_a(shell.pairs, snapshots), quantum.times_fs, quantum.temperature_k, shell.label, quantum.friction_per_fs, beads)
        values[shell.label] = round(stats["sigma2_classical"] + c.delta_sigma2_a2, 6)
    return values


def comparisons(case: Case, rows: dict[str, dict], out: Path) -> list[dict]:
    """Each corrected run against each path-integral run, at the path integral's bead count (exact kernel at the rule's P)."""
    result = []
    for pimd in (r for r in rows.values() if r["nuclei"] == "path-integral"):
        at_rule = pimd["beads"] >= pimd["bead_rule"]["rule_beads"]
        for corr in (r for r in rows.values() if r["nuclei"] == "corrected"):
            values = ({k: v["sigma2"] for k, v in corr["shells"].items()} if at_rule
                      else corrected_with_beads(case, out / case.name / corr["run"], pimd["beads"]))
            result.append({
                "corrected": corr["run"], "path_integral": pimd["run"], "beads": pimd["beads"],
                "kernel": "exact x·coth x" if at_rule else f"{pimd['beads']}-bead ring polymer",
                "corrected_sigma2": values,
                "relative_difference": {k: round(values[k] / pimd["shells"][k]["sigma2"] - 1.0, 4) for k in values if k in pimd["shells"]},
            })
    return result


def machine_load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "scratch" / "quantum-validation")
    parser.add_argument("--only", nargs="*", help="case names or case/run names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the runs and their commands, run nothing")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from the finished runs, start none")
    args = parser.parse_args(argv)
    table_path = args.out / "quantum_validation.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {"cases": {}}

    def wanted(case: Case, run: Run) -> bool:
        return not args.only or case.name in args.only or f"{case.name}/{run.name}" in args.only

    for case in CASES:
        rows = {}
        for run in case.runs:
            folder = args.out / case.name / run.name
            if args.list:
                print(" ".join(case.md_command(run, folder)[1:]))
                continue
            if wanted(case, run) and not args.table_only:
                started = time.time()
                load = machine_load()
                run_md(case, run, folder)
                print(f"{case.name}/{run.name}: {time.time() - started:.0f} s (load at start {load})", flush=True)
            if (folder / "analysis" / "analysis.json").exists():
                rows[run.name] = run_row(case, run, folder)
                rows[run.name].setdefault("load_at_table", machine_load())
        if rows:
            table["cases"][case.name] = {"structure": case.structure, "supercell": case.supercell, "temperature_k": case.temperature_k,
                                         "runs": rows, "comparisons": comparisons(case, rows, args.out)}
            table["updated"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            from mlip_exafs.files import write_json

            write_json(table_path, table)
    if not args.list:
        print_table(table)


def print_table(table: dict) -> None:
    for name, case in table["cases"].items():
        print(f"\n{name}")
        for row in case["runs"].values():
            shells = "  ".join(f"{k} {v['sigma2']:.6f} (cl {v['sigma2_classical']})" for k, v in row["shells"].items())
            print(f"  {row['run']:<20} beads {row['beads']}  T {row['production_temperature_k']:7.2f}  wall {row['wall_s']:7.0f} s  {shells}")
        for c in case["comparisons"]:
            diffs = "  ".join(f"{k} {100 * v:+.1f} %" for k, v in c["relative_difference"].items())
            print(f"  {c['corrected']} vs {c['path_integral']} ({c['kernel']}): {diffs}")


if __name__ == "__main__":
    sys.exit(main())
