"""Path-integral MD (``md.nuclei: path-integral``) through i-PI, with our potential as its force client.

i-PI (PyPI ``ipi``) integrates the ring polymer — P beads per atom joined by
harmonic springs — in normal modes, with the PILE-L thermostat (Ceriotti et
al., J. Chem. Phys. 133, 124104 (2010): critically damped Langevin on the
internal modes, a local Langevin thermostat of time ``thermostat_time_fs`` on
the centroid; PILE-G would be the global one). It runs as a subprocess; this process is its client over a unix
socket: ``ase.calculators.socketio.SocketClient`` serves the same calculator
that the classical md stage uses, one bead at a time.

Beads: ``settings.beads`` or :func:`mlip_exafs.quantum.bead_count` from the
highest harmonic frequency of the structure, found by Lanczos on finite
differences of the forces (:func:`highest_frequency_rad_per_fs`).

Outputs in ``out`` are those of the classical md stage, so that ``analyze`` and
``exafs`` read them unchanged: ``snapshots.extxyz`` holds every bead of every
production frame (info ``step``, ``time_fs``, ``bead``, ``n_beads``), one
configuration each — the path-integral route to quantum σ² and χ(k);
``thermo.csv`` (from i-PI's properties), ``md.json`` (``nuclei``, ``beads``,
``bead_rule``). i-PI's own files are in ``out/ipi``.

Resuming: i-PI writes a numbered checkpoint every ``checkpoint_every_fs``
(``sim.chk_N``, never overwritten, so a kill during a write leaves the previous
one whole) and ``RESTART`` on a clean exit. A rerun restarts i-PI from the
newest complete one; i-PI appends to its bead trajectories, and frames written
after that checkpoint by the killed run are superseded by the rerun's (the last
copy of each step wins). The continuation is statistically, not bitwise, the
same run (i-PI's random stream restarts from its checkpointed seed state).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.socketio import SocketClient
from scipy.sparse.linalg import LinearOperator, eigsh

from mlip_exafs import md as md_stage
from mlip_exafs.cache import cached_json
from mlip_exafs.dataset import structure_fingerprint
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import atomic_path, read_json, write_json, write_text
from mlip_exafs.potentials import device_for, pins_content, potential_id as potential_id_of
from mlip_exafs.processes import dies_with_parent
from mlip_exafs.provenance import provenance
from mlip_exafs.quantum import BEAD_TOLERANCE, HBAR_EV_FS, bead_count, harmonic_bead_ratio
from mlip_exafs.structures import load_structure
from mlip_exafs.md import (SNAPSHOT_FILE, SUMMARY_FILE, THERMO_COLUMNS, THERMO_FILE, MdSettings, OutFiles, check_same_structure, comparable_settings,
                           finished_run, same_run, schedule_of)

IPI_FOLDER = "ipi"
PREFIX = "sim"
SOCKET_WAIT_S = 120.0
FD_DISPLACEMENT_A = 0.005
LANCZOS_TOL = 1e-3
FREQUENCY_CACHE = "highest-frequency"  # the user cache's folder of ω_max per potential and structure
_STEP_BEAD = re.compile(r"Step:\s*(\d+)\s+Bead:\s*(\d+)")


# ---------------------------------------------------------------- beads


def highest_frequency_rad_per_fs(atoms: Atoms, calc) -> float:
    """ω_max of the mass-weighted Hessian, by Lanczos on central force differences (≈ 40–80 force calls)."""
    work = atoms.copy()
    work.calc = calc
    x0 = work.positions.copy()
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(work.get_masses()), 3)

    def forces_at(positions: np.ndarray) -> np.ndarray:
        work.positions = positions
        return work.get_forces(apply_constraint=False).ravel()

    def matvec(v: np.ndarray) -> np.ndarray:
        d = np.asarray(v).ravel() * inv_sqrt_m
        h = FD_DISPLACEMENT_A / max(np.abs(d).max(), 1e-12)
        step = (h * d).reshape(-1, 3)
        df = forces_at(x0 + step) - forces_at(x0 - step)
        return -df / (2.0 * h) * inv_sqrt_m

    n = 3 * len(work)
    operator = LinearOperator((n, n), matvec=matvec, dtype=float)
    start = np.random.default_rng(0).standard_normal(n)
    value = eigsh(operator, k=1, which="LA", tol=LANCZOS_TOL, v0=start, ncv=min(n, 20), return_eigenvectors=False)[0]
    if value <= 0:
        raise UserError(f"the structure has no positive vibrational frequency (unstable or not at equilibrium); relax it first or give {setting('beads')}")
    return float(np.sqrt(value) * units.fs)  # rad per ASE time unit -> rad/fs


def highest_frequency_of(atoms: Atoms, calc, potential_id: str) -> float:
    """ω_max (rad/fs) of this potential at this structure, computed once (user cache).

    Every MD of a temperature series starts from the same structure with the same potential,
    and the Lanczos search costs a minute or two of CPU each time.
    """
    if not pins_content(potential_id):
        return highest_frequency_rad_per_fs(atoms, calc)
    key = {
        "potential": potential_id,
        "numbers": atoms.numbers.tolist(),
        "positions_a": np.round(atoms.positions, 8).tolist(),
        "cell_a": np.round(atoms.cell.array, 8).tolist(),
        "pbc": atoms.pbc.tolist(),
        "fd_displacement_a": FD_DISPLACEMENT_A,
        "lanczos_tol": LANCZOS_TOL,
    }
    return cached_json(FREQUENCY_CACHE, key, lambda: highest_frequency_rad_per_fs(atoms, calc))


def _rule_beads(omega: float, temperature_k: float) -> int | None:
    """What the rule would ask, for the record of a run given its beads; None where the rule asks more than it
    allows (below a few K): the given count stands."""
    try:
        return bead_count(omega, temperature_k)
    except UserError:
        return None


def choose_beads(settings: MdSettings, atoms: Atoms, calc, potential_id: str) -> tuple[int, dict]:
    """The bead count and how it was chosen (recorded in md.json)."""

    omega = highest_frequency_of(atoms, calc, potential_id)
    u = HBAR_EV_FS * omega / (units.kB * settings.temperature_k)
    beads = settings.beads or bead_count(omega, settings.temperature_k)
    rule = {
        "omega_max_thz": round(omega / (2 * np.pi) * 1000.0, 4),
        "hbar_omega_max_over_kt": round(u, 4),
        "rule": f"fewest beads with <x²> of the stiffest harmonic mode within {BEAD_TOLERANCE:.0%} of exact",
        "rule_beads": _rule_beads(omega, settings.temperature_k) if settings.beads else bead_count(omega, settings.temperature_k),
        "harmonic_ratio_at_beads": round(harmonic_bead_ratio(beads, u), 4),
        "given": settings.beads is not None,
    }
    return beads, rule


# ---------------------------------------------------------------- i-PI input


def ipi_input(settings: MdSettings, beads: int, socket_name: str, total_steps: int) -> str:
    """i-PI XML: NVT ring-polymer MD with PILE-L, bead trajectories, numbered checkpoints."""
    schedule = schedule_of(settings)
    return f"""<simulation verbosity="low">
  <output prefix="{PREFIX}">
    <properties stride="{schedule.thermo_every}" filename="out">[step, time{{femtosecond}}, temperature{{kelvin}}, potential{{electronvolt}}, kinetic_md{{electronvolt}}, conserved{{electronvolt}}]</properties>
    <trajectory filename="pos" stride="{schedule.snapshot_every}" format="ase" cell_units="ase">positions{{ase}}</trajectory>
    <checkpoint filename="chk" stride="{schedule.checkpoint_every}" overwrite="False"/>
  </output>
  <total_steps>{total_steps}</total_steps>
  <prng><seed>{settings.seed + 1}</seed></prng>
  <ffsocket name="mlip" mode="unix" pbc="false"><address>{socket_name}</address><latency>1e-4</latency></ffsocket>
  <system>
    <initialize nbeads="{beads}">
      <file mode="ase" units="ase" cell_units="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">{settings.temperature_k!r}</velocities>
    </initialize>
    <forces><force forcefield="mlip"/></forces>
    <ensemble><temperature units="kelvin">{settings.temperature_k!r}</temperature></ensemble>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">{settings.timestep_fs!r}</timestep>
        <thermostat mode="pile_l"><tau units="femtosecond">{settings.thermostat_time_fs!r}</tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def socket_name_for(out: Path) -> str:
    """Short and unique per run folder and process (unix socket paths are limited to ~100 bytes)."""
    digest = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    return f"mlipx{digest}{os.getpid()}"


def newest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The complete i-PI checkpoint (numbered or RESTART) with the highest step; None when there is none."""
    best = None
    for path in [*folder.glob(f"{PREFIX}.chk_*"), folder / "RESTART"]:
        try:
            text = path.read_text()
        except OSError:
            continue
        if not text.rstrip().endswith("</simulation>"):
            continue  # cut short by a kill
        match = re.search(r"<step>\s*(\d+)\s*</step>", text)
        step = int(match.group(1)) if match else 0
        if best is None or step > best[1]:
            best = (path, step)
    return best


# ---------------------------------------------------------------- the stage


def run_pimd(settings: MdSettings, out: Path, show_progress: bool = True) -> Path:
    """Structure and potential -> ``out/snapshots.extxyz`` with every bead of every frame. Resumes a killed run."""

    if settings.npt_fs > 0:
        raise UserError(f"path-integral MD runs at fixed cell; run it without NPT ({setting('npt_fs')} 0: run a classical NPT first and give its mean cell as the structure)")
    out = Path(out)
    folder = out / IPI_FOLDER
    schedule = schedule_of(settings)
    pid = potential_id_of(settings.potential)
    atoms = load_structure(settings.structure, settings.supercell)
    if finished_run(OutFiles(out), settings, pid, atoms):  # the md stage's own check: same md.json, same identity
        return out / SNAPSHOT_FILE
    _ipi_script()  # a missing i-PI is one line now, not after minutes of searching the bead count
    calc = md_stage.md_calculator(settings.potential, atoms, settings.threads, settings.device)
    folder.mkdir(parents=True, exist_ok=True)
    run_file = folder / "run.json"
    if run_file.exists():
        run = read_json(run_file)
        if not same_run(comparable_settings(run["settings"]), settings) or run["potential_id"] != pid:
            raise UserError(f"{out} holds a path-integral run with other settings; use another output folder or delete {out} to start over")
        run["structure_fingerprint"] = check_same_structure(run.get("structure_fingerprint"), atoms, out)
    else:
        beads, rule = choose_beads(settings, atoms, calc, pid)
        ase.io.write(folder / "init.extxyz", _with_masses(atoms), format="extxyz")
        run = {"settings": settings.identity(), "potential_id": pid, "structure_fingerprint": structure_fingerprint(atoms),
               "beads": beads, "bead_rule": rule, "segments": []}
        write_json(run_file, run)
    start = newest_checkpoint(folder)
    start_step = start[1] if start else 0
    if start_step < schedule.total:
        t0 = time.perf_counter()
        _serve(folder, settings, run["beads"], schedule.total, start, calc, atoms)
        end = newest_checkpoint(folder)
        end_step = end[1] if end else 0
        run["segments"].append({"start_step": start_step, "end_step": end_step, "steps": end_step - start_step,
                                "wall_s": round(time.perf_counter() - t0, 3), "device": device_for(settings.potential, settings.device)})
        write_json(run_file, run)
        if end_step < schedule.total:  # i-PI soft-exits with code 0 on SIGTERM, its RESTART at the step it reached
            raise UserError(f"i-PI stopped at step {end_step} of {schedule.total} (see {folder}); rerun the same command to resume")
    frames = collect_frames(folder, run["beads"], schedule.production_start, settings.timestep_fs)
    _write_outputs(out, folder, settings, schedule, pid, run, frames, atoms)
    return out / SNAPSHOT_FILE


def _with_masses(atoms: Atoms) -> Atoms:
    """Bare copy whose masses travel to i-PI (its reader takes a 'masses' array)."""
    bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
    bare.arrays["masses"] = atoms.get_masses().copy()
    return bare


def _serve(folder: Path, settings: MdSettings, beads: int, total_steps: int, start: tuple[Path, int] | None, calc, atoms: Atoms) -> None:
    """Start i-PI (fresh or from a checkpoint) and answer its force requests until it exits."""
    name = socket_name_for(folder)
    if start is None:
        text = ipi_input(settings, beads, name, total_steps)
        input_name = "input.xml"
    else:
        text = re.sub(r"<address>[^<]*</address>", f"<address>{name}</address>", start[0].read_text())
        input_name = "resume.xml"
    (folder / input_name).write_text(text)
    socket_path = Path(f"/tmp/ipi_{name}")
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    log = open(folder / "ipi.log", "a")
    process = subprocess.Popen([sys.executable, _ipi_script(), input_name], cwd=folder, stdout=log, stderr=subprocess.STDOUT, preexec_fn=dies_with_parent(signal.SIGTERM))
    try:
        client = _connect(process, name, socket_path, folder)
        client_atoms = atoms.copy()
        client_atoms.calc = calc
        client.run(client_atoms, use_stress=False)
        rc = process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        log.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
    if rc != 0:
        raise UserError(f"i-PI stopped with exit code {rc} ({_last_line(folder / 'ipi.log')}); see {folder / 'ipi.log'}, then rerun to resume")


def _ipi_script() -> str:
    """i-PI's command-line script, installed beside this Python."""
    script = Path(sys.executable).parent / "i-pi"
    if not script.exists():
        raise UserError("i-PI is not installed in this environment; run scripts/install.sh (it installs the pinned 'ipi' package)")
    return str(script)


def _connect(process: subprocess.Popen, name: str, socket_path: Path, folder: Path) -> SocketClient:
    """The client, once i-PI listens: its socket file appears at bind(), a moment before listen(), and a connect
    in between is refused; so refusals are retried until the deadline, as a missing file is waited for."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while True:
        if socket_path.exists():
            with contextlib.suppress(ConnectionRefusedError):
                return SocketClient(unixsocket=name)
        if process.poll() is not None:
            raise UserError(f"i-PI exited before opening its socket ({_last_line(folder / 'ipi.log')}); see {folder / 'ipi.log'}")
        if time.monotonic() > deadline:
            raise UserError(f"i-PI did not open its socket within {SOCKET_WAIT_S:g} s; see {folder / 'ipi.log'}")
        time.sleep(0.05)


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


# ---------------------------------------------------------------- outputs


def collect_frames(folder: Path, beads: int, production_start: int, timestep_fs: float) -> list[Atoms]:
    """Production frames of every bead, ordered by step then bead; the last copy of a step wins."""
    by_key: dict[tuple[int, int], Atoms] = {}
    files = sorted(folder.glob(f"{PREFIX}.pos_*.extxyz"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if len(files) != beads:
        raise UserError(f"{folder} has {len(files)} bead trajectories, not {beads}; delete {folder.parent} and rerun")
    for path in files:
        for frame in ase.io.iread(path, index=":", format="extxyz"):
            match = _STEP_BEAD.search(str(frame.info.get("ipi_comment", "")))
            if not match:
                continue
            step, bead = int(match.group(1)), int(match.group(2))
            if step > production_start:
                snap = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=True)
                snap.info.update(step=step, time_fs=round(step * timestep_fs, 6), bead=bead, n_beads=beads)
                by_key[(step, bead)] = snap
    return [by_key[key] for key in sorted(by_key)]


def _write_outputs(out: Path, folder: Path, settings: MdSettings, schedule, potential_id: str, run: dict, frames: list[Atoms], atoms: Atoms) -> None:

    with atomic_path(out / SNAPSHOT_FILE) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    thermo = ipi_thermo(folder / f"{PREFIX}.out", schedule)
    write_text(out / THERMO_FILE, ",".join(THERMO_COLUMNS) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in thermo))
    prod = [row[2] for row in thermo if row[-1] == "production"]
    steps = sum(s["steps"] for s in run["segments"])
    wall = sum(s["wall_s"] for s in run["segments"])
    n_steps = len({f.info["step"] for f in frames})
    write_json(out / SUMMARY_FILE, {
        "status": "complete",
        "settings": settings.model_dump(),
        "potential_id": potential_id,
        "structure_fingerprint": run["structure_fingerprint"],
        "n_atoms": len(atoms),
        "step": schedule.total,
        "total_steps": schedule.total,
        "n_frames": len(frames),
        "n_steps_with_frames": n_steps,
        "nuclei": "path-integral",
        "beads": run["beads"],
        "bead_rule": run["bead_rule"],
        "steps_per_s": steps / wall if wall > 0 else None,
        "segments": run["segments"],
        "production_temperature_k": {"mean": float(np.mean(prod)), "std": float(np.std(prod))} if prod else None,
        "production_temperature_note": "i-PI's ring-polymer kinetic temperature (all beads), not a quantum estimator",
        "cell_a": atoms.cell.array.tolist(),
        "npt_mean_cell_a": None,
        "files": {"snapshots": SNAPSHOT_FILE, "thermo": THERMO_FILE, "ipi": IPI_FOLDER},
        "provenance": provenance({"structure": settings.structure, "potential": potential_id, "engine": "i-PI (PILE-L)"}),
    })


def ipi_thermo(path: Path, schedule) -> list[tuple]:
    """Rows of thermo.csv from i-PI's properties file (last copy of a step wins after a resume)."""
    rows: dict[int, tuple] = {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        step, time_fs, temperature, epot, ekin, conserved = (float(v) for v in line.split()[:6])
        s = int(round(step))
        phase = "start" if s == 0 else schedule.phase_of(s)
        rows[s] = (s, round(time_fs, 3), round(temperature, 3), round(epot, 6), round(ekin, 6), round(conserved, 6), phase)
    return [rows[s] for s in sorted(rows)]
