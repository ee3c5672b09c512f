"""The md stage: thermal-disorder MD whose production snapshots feed the EXAFS stage.

Ensembles
    NVT with Bussi stochastic velocity rescaling (``ase.md.bussi``, Bussi et al.
    J. Chem. Phys. 126, 014101 (2007)). It samples the canonical ensemble, and
    it rescales all velocities globally instead of adding a local friction
    (Langevin), so vibrational dynamics are barely perturbed. The price: in a
    stiff, nearly harmonic crystal a global rescaling moves energy between
    normal modes only slowly, so a few-ps run keeps part of its starting mode
    energies, and per-shell σ² can be off by ~10 % in a way block errors do not
    show (bcc W, docs/md.md "Quantum nuclei"). So ``corrected`` nuclei default
    to Langevin (local friction on every atom; :func:`default_thermostat`);
    classical runs keep Bussi. Its only
    state is the random generator, which is checkpointed, so a resumed run is
    the same run. The centre of mass is fixed (``FixCom``): the kinetic
    temperature then counts 3N − 3 degrees of freedom, which matters in the
    small cells of tests.
    Optional NPT first (``npt_fs`` > 0): Berendsen barostat and thermostat with
    independently scaled cell axes (``Inhomogeneous_NPTBerendsen``), enough to
    find the thermal lattice of a layered crystal. The mean cell of the second
    half of the NPT run is then imposed, and the NVT equilibration and
    production follow at that fixed cell.

Outputs in ``out``: ``snapshots.extxyz`` (production frames only), ``thermo.csv``,
``md.json`` and ``checkpoint.npz``. A killed run (even ``kill -9``) resumes from
its last checkpoint: both logs are cut back to their length at that checkpoint
and the run continues with the same step count, velocities and random state.

Speed: the calculator is the potential family's MD path
(``potentials.md_calculator_for``); for CHGNet that is ``FastCHGNetCalculator``,
about 1.5–2× faster per step than ``CHGNetCalculator`` (see ``bench/md_speed.py``).
A calculator with a ``compute_stress`` switch computes stress only while the barostat runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from mlip_exafs.dataset import structure_fingerprint
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import atomic_path, read_json, write_json, write_text, writer_lock
from mlip_exafs.potentials import device_for, md_calculator_for
from mlip_exafs.potentials import potential_id as potential_id_of
from mlip_exafs.progress import progress_bar
from mlip_exafs.provenance import provenance
from mlip_exafs.settings import (LEGACY_DEFAULTS, RUNTIME_ONLY, MdSettings, Nuclei, Thermostat,  # noqa: F401  (re-exported: defined with the other stages' settings)
                                 comparable_settings, default_thermostat)
from mlip_exafs.structures import load_structure

SNAPSHOT_FILE = "snapshots.extxyz"
THERMO_FILE = "thermo.csv"
CHECKPOINT_FILE = "checkpoint.npz"
SUMMARY_FILE = "md.json"
THERMO_COLUMNS = ("step", "time_fs", "temperature_k", "epot_ev", "ekin_ev", "etot_ev", "phase")
CHECKPOINT_VERSION = 1
BLOWUP_FACTOR = 3.0  # a run hotter than this × target ...
BLOWUP_STEPS = 10  # ... for this many consecutive steps has blown up

_DURATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(fs|ps|ns)?\s*$", re.IGNORECASE)
_FS_PER_UNIT = {"fs": 1.0, "ps": 1000.0, "ns": 1.0e6}


def parse_duration_fs(text: str | float, what: str = "duration") -> float:
    """'2ps' -> 2000.0, '500fs' -> 500.0, '10' -> 10.0 (a plain number is in fs)."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise UserError(f"{what} '{text}' is not a duration; write e.g. 500fs, 2ps or a plain number of fs")
    return float(match.group(1)) * _FS_PER_UNIT[(match.group(2) or "fs").lower()]


@dataclass(frozen=True)
class Schedule:
    """Step numbers of the phases and of the outputs. Step k is the k-th completed step."""

    npt_steps: int
    equilibration_steps: int
    production_steps: int
    snapshot_every: int
    thermo_every: int
    checkpoint_every: int

    @property
    def production_start(self) -> int:
        return self.npt_steps + self.equilibration_steps

    @property
    def total(self) -> int:
        return self.production_start + self.production_steps

    @property
    def n_frames(self) -> int:
        return self.production_steps // self.snapshot_every

    def phase_of(self, step: int) -> str:
        """Phase that the step from ``step - 1`` to ``step`` belongs to."""
        if step <= self.npt_steps:
            return "npt"
        return "equilibration" if step <= self.production_start else "production"

    def ensemble_of(self, step: int) -> str:
        return "npt" if step <= self.npt_steps else "nvt"

    def frames_until(self, step: int) -> int:
        return max(0, step - self.production_start) // self.snapshot_every

    def is_snapshot(self, step: int) -> bool:
        return step > self.production_start and (step - self.production_start) % self.snapshot_every == 0

    def averages_cell(self, step: int) -> bool:
        """The second half of the NPT run gives the thermal lattice."""
        return self.npt_steps // 2 < step <= self.npt_steps


def schedule_of(settings: MdSettings) -> Schedule:
    dt = settings.timestep_fs

    def steps(value_fs: float, name: str) -> int:
        n = round(value_fs / dt)
        if abs(n * dt - value_fs) > 1e-6 * max(1.0, value_fs):
            raise UserError(f"{name} {value_fs:g} fs is not a whole number of {dt:g} fs timesteps; choose a multiple of the timestep")
        return n

    every = steps(settings.snapshot_every_fs, f"snapshot interval ({setting('snapshot_every_fs')})")
    production = steps(settings.production_fs, f"production time ({setting('production_fs')})")
    if every < 1 or production < every:
        raise UserError(f"production {settings.production_fs:g} fs is shorter than one snapshot interval ({settings.snapshot_every_fs:g} fs); lengthen {setting('production_fs')} or shorten {setting('snapshot_every_fs')}")
    return Schedule(
        npt_steps=steps(settings.npt_fs, f"NPT time ({setting('npt_fs')})"),
        equilibration_steps=steps(settings.equilibration_fs, f"equilibration time ({setting('equilibration_fs')})"),
        production_steps=production,
        snapshot_every=every,
        thermo_every=max(1, round(settings.thermo_every_fs / dt)),
        checkpoint_every=max(1, round(settings.checkpoint_every_fs / dt)),
    )


# ---------------------------------------------------------------- calculator


def md_calculator(potential: str, atoms: Atoms, threads: int, device: str | None = None) -> Calculator:
    """The potential family's MD calculator (its fast path where it has one) on ``device``."""

    return md_calculator_for(potential, atoms, threads, device)


def check_stress_for_npt(calc: Calculator, potential: str, npt_steps: int) -> None:
    """Refuse an NPT run with a calculator that has no stress before anything is written (not at its first NPT step)."""
    if npt_steps and "stress" not in getattr(calc, "implemented_properties", ("stress",)):
        raise UserError(f"potential '{potential}' does not compute stress, which the NPT barostat needs; run without NPT "
                        f"({setting('npt_fs')} 0) or use a calculator that implements stress")


# ---------------------------------------------------------------- run state


@dataclass
class RunState:
    """Everything besides positions and momenta that a resumed run needs."""

    step: int
    rng: np.random.Generator
    transferred_energy_ev: float = 0.0  # Bussi thermostat bookkeeping
    cell_sum_a: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    cell_count: int = 0
    segments: list[dict] = field(default_factory=list)  # timing of each invocation
    structure_fingerprint: str | None = None  # the starting structure's geometry; None in checkpoints written before it was kept


@dataclass(frozen=True)
class OutFiles:
    out: Path

    @property
    def snapshots(self) -> Path:
        return self.out / SNAPSHOT_FILE

    @property
    def thermo(self) -> Path:
        return self.out / THERMO_FILE

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_FILE

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY_FILE


def read_result(folder: str | Path) -> dict | None:
    """What an md run recorded in its folder (``md.json``: settings, frames, timing); None for a folder without one.

    Other stages read an md folder through this and :class:`OutFiles`, never by file name.
    """
    path = OutFiles(Path(folder)).summary
    return json.loads(path.read_text()) if path.exists() else None


def save_checkpoint(files: OutFiles, atoms: Atoms, state: RunState, settings: MdSettings, potential_id: str) -> None:
    """Positions, momenta, cell, step, RNG and thermostat state, plus the log lengths they match."""

    meta = {
        "version": CHECKPOINT_VERSION,
        "step": state.step,
        "rng_state": state.rng.bit_generator.state,
        "transferred_energy_ev": state.transferred_energy_ev,
        "cell_sum_a": state.cell_sum_a.tolist(),
        "cell_count": state.cell_count,
        "segments": state.segments,
        "settings": settings.identity(),
        "potential_id": potential_id,
        "structure_fingerprint": state.structure_fingerprint,
        "log_bytes": {name: _synced_size(path) for name, path in (("snapshots", files.snapshots), ("thermo", files.thermo))},
    }
    with atomic_path(files.checkpoint) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, positions=atoms.positions, momenta=atoms.get_momenta(), cell=atoms.cell.array, numbers=atoms.numbers, meta=np.array(json.dumps(meta)))
            fh.flush()
            os.fsync(fh.fileno())


def _synced_size(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    return path.stat().st_size


def load_checkpoint(files: OutFiles, atoms: Atoms, settings: MdSettings, potential_id: str) -> RunState:
    """Restore ``atoms`` and the run state; cut the logs back to what the checkpoint saw."""
    path = files.checkpoint
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("positions", "momenta", "cell", "numbers", "meta")}
        meta = json.loads(str(arrays["meta"]))
        step = int(meta["step"])
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng_state"]
    except Exception as exc:  # a truncated/garbled file fails in many ways
        raise UserError(f"checkpoint {path} is corrupted ({type(exc).__name__}); delete it and rerun (the MD restarts from step 0)") from None
    if arrays["positions"].shape != atoms.positions.shape or not np.array_equal(arrays["numbers"], atoms.numbers):
        raise UserError(f"checkpoint {path} holds another structure ({len(arrays['numbers'])} atoms); use another output folder or delete {path}")
    _check_same_run(meta, settings, potential_id, path)
    fingerprint = check_same_structure(meta.get("structure_fingerprint"), atoms, path.parent)
    atoms.set_cell(arrays["cell"], scale_atoms=False)
    atoms.positions = arrays["positions"]
    atoms.set_momenta(arrays["momenta"], apply_constraint=False)
    for name, target in (("snapshots", files.snapshots), ("thermo", files.thermo)):
        _truncate(target, int(meta["log_bytes"][name]), path)
    return RunState(step, rng, float(meta["transferred_energy_ev"]), np.array(meta["cell_sum_a"]), int(meta["cell_count"]), list(meta["segments"]),
                    fingerprint)


def check_same_structure(recorded: str | None, atoms: Atoms, folder: Path) -> str:
    """The starting structure's fingerprint, refusing a run of another one: a structure file is matched by name
    (the run may have moved), so an edited file of the same name is caught here, by its geometry."""
    fingerprint = structure_fingerprint(atoms)
    if recorded is not None and recorded != fingerprint:
        raise UserError(f"{folder} holds a run that started from another structure (the structure file changed since); "
                        f"use another output folder or delete {folder} to start over")
    return fingerprint


def _check_same_run(meta: dict, settings: MdSettings, potential_id: str, path: Path) -> None:
    if key := first_difference(meta["settings"], settings):
        raise UserError(f"{path.parent} holds an MD run with {setting(key)} = {meta['settings'].get(key)!r}, not "
                        f"{settings.identity()[key]!r}; use another output folder or delete {path.parent} to start over")
    if meta["potential_id"] != potential_id:
        raise UserError(f"{path.parent} was run with potential {meta['potential_id']}, not {potential_id}; use another output folder or delete {path.parent}")


LOCATED = ("structure", "potential")  # settings that may name a file: where it lies may change between a run and its resumption


def first_difference(saved: dict, settings: MdSettings) -> str | None:
    """The first setting a run to be continued (or reused) does not share with ``settings``, or None.

    A structure or checkpoint file is compared by name, not by where it lies, so a run moved to another
    machine or folder continues; the checkpoint's content is the potential id's, the structure's atoms
    the checkpoint's.
    """
    for key, value in settings.identity().items():
        if key in LOCATED and isinstance(value, str) and isinstance(saved.get(key), str):
            if Path(saved[key]).name == Path(value).name:
                continue
        if saved.get(key) != value:
            return key
    return None


def same_run(saved: dict, settings: MdSettings) -> bool:
    """Whether recorded settings (comparable ones) are those of ``settings``' run, wherever its files lie."""
    return set(saved) == set(settings.identity()) and first_difference(saved, settings) is None


def _truncate(path: Path, size: int, checkpoint: Path) -> None:
    current = path.stat().st_size if path.exists() else 0
    if current < size:
        raise UserError(f"{path} is shorter than {checkpoint} expects (lost output); delete {path.parent} and rerun")
    if current > size:
        os.truncate(path, size)


# ---------------------------------------------------------------- dynamics


def make_dynamics(atoms: Atoms, ensemble: str, settings: MdSettings, state: RunState):
    """The ASE integrator of an ensemble: Berendsen NPT, or Bussi or Langevin NVT.

    Langevin's friction acts on each atom, so energy reaches every normal mode even in a nearly
    harmonic crystal, where Bussi's global rescaling leaves mode energies unequilibrated for ps
    (docs/md.md). Its only state is the checkpointed random generator too.
    """
    dt = settings.timestep_fs * units.fs
    if ensemble == "npt":
        return Inhomogeneous_NPTBerendsen(
            atoms, dt, temperature_K=settings.temperature_k, taut=settings.thermostat_time_fs * units.fs,
            pressure_au=settings.pressure_gpa * units.GPa, taup=settings.barostat_time_fs * units.fs,
            compressibility_au=1.0 / (settings.bulk_modulus_gpa * units.GPa), fixcm=False,
        )
    if settings.thermostat == "langevin":
        return Langevin(atoms, dt, temperature_K=settings.temperature_k, friction=1.0 / (settings.thermostat_time_fs * units.fs), fixcm=False, rng=state.rng)  # FixCom holds the centre
    dyn = Bussi(atoms, dt, temperature_K=settings.temperature_k, taut=settings.thermostat_time_fs * units.fs, rng=state.rng)
    dyn.transferred_energy = state.transferred_energy_ev
    return dyn


def fresh_state(atoms: Atoms, settings: MdSettings) -> RunState:
    """Maxwell–Boltzmann velocities at the target temperature, no net momentum."""
    rng = np.random.default_rng(settings.seed)
    thermalize_momenta(atoms, temperature_K=settings.temperature_k, rng=rng)
    Stationary(atoms)
    return RunState(0, rng, structure_fingerprint=structure_fingerprint(atoms))


class BlowUpGuard:
    """Stops a run whose temperature runs away or whose positions stop being finite."""

    def __init__(self, target_k: float, out: Path):
        self.limit_k = BLOWUP_FACTOR * target_k
        self.hot_steps = 0
        self.out = out

    def check(self, atoms: Atoms, step: int) -> None:
        temperature = atoms.get_temperature()
        if not (np.isfinite(atoms.positions).all() and math.isfinite(temperature)):
            self._fail(step, "positions or velocities became non-finite")
        self.hot_steps = self.hot_steps + 1 if temperature > self.limit_k else 0
        if self.hot_steps >= BLOWUP_STEPS:
            self._fail(step, f"T = {temperature:.0f} K stayed above {self.limit_k:.0f} K for {BLOWUP_STEPS} steps")

    def _fail(self, step: int, why: str) -> None:
        raise UserError(f"MD blew up at step {step} ({why}); delete {self.out} and rerun with a smaller {setting('timestep_fs')}, or check the structure and potential")


# ---------------------------------------------------------------- outputs


def thermo_row(atoms: Atoms, step: int, settings: MdSettings, phase: str) -> str:
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    values = (step, step * settings.timestep_fs, atoms.get_temperature(), epot, ekin, epot + ekin)
    return "{},{:.3f},{:.3f},{:.6f},{:.6f},{:.6f},{}\n".format(*values, phase)


def snapshot_of(atoms: Atoms, step: int, settings: MdSettings) -> Atoms:
    """A bare copy (no calculator, no velocities) carrying step, time and energies."""
    snap = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    snap.info.update(step=step, time_fs=step * settings.timestep_fs, temperature_k=round(atoms.get_temperature(), 3), epot_ev=round(atoms.get_potential_energy(), 6))
    return snap


def read_thermo(path: str | Path) -> dict[str, np.ndarray]:
    """thermo.csv as columns (numbers as floats, ``phase`` as strings)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:] if line]
    return {name: np.array([r[i] for r in rows], dtype=str if name == "phase" else float) for i, name in enumerate(header)}


def write_summary(files: OutFiles, settings: MdSettings, schedule: Schedule, potential_id: str, state: RunState, atoms: Atoms, status: str) -> dict:

    thermo = read_thermo(files.thermo)
    prod = thermo["phase"] == "production"
    steps = sum(s["steps"] for s in state.segments)
    wall = sum(s["wall_s"] for s in state.segments)
    summary = {
        "status": status,
        "settings": settings.model_dump(),
        "potential_id": potential_id,
        "structure_fingerprint": state.structure_fingerprint,
        "n_atoms": len(atoms),
        "step": state.step,
        "total_steps": schedule.total,
        "n_frames": schedule.frames_until(state.step),
        "steps_per_s": steps / wall if wall > 0 else None,
        "segments": state.segments,
        "production_temperature_k": {"mean": float(thermo["temperature_k"][prod].mean()), "std": float(thermo["temperature_k"][prod].std())} if prod.any() else None,
        "cell_a": atoms.cell.array.tolist(),
        "npt_mean_cell_a": (state.cell_sum_a / state.cell_count).tolist() if state.cell_count else None,
        "files": {"snapshots": SNAPSHOT_FILE, "thermo": THERMO_FILE, "checkpoint": CHECKPOINT_FILE},
        "provenance": provenance({"structure": settings.structure, "potential": potential_id}),
    }
    write_json(files.summary, summary)
    return summary


def production_temperature_text(summary: dict) -> str | None:
    """'mean ± std' (K) of an ``md.json``'s production temperature; None before production starts."""
    temperature = summary.get("production_temperature_k")
    return f"{temperature['mean']:.1f} ± {temperature['std']:.1f}" if temperature else None


# ---------------------------------------------------------------- the stage


def run_md(settings: MdSettings, out: Path, show_progress: bool = True) -> Path:
    """Structure and potential -> ``out/snapshots.extxyz`` (+ thermo.csv, md.json). Resumes a killed run."""
    with writer_lock(out, "md"):  # a second run into the same folder would append duplicate frames
        return _run_md(settings, out, show_progress)


def _run_md(settings: MdSettings, out: Path, show_progress: bool) -> Path:
    if settings.nuclei == "path-integral":
        from mlip_exafs.pimd import run_pimd  # lazy: import cycle, pimd imports md at its top

        return run_pimd(settings, Path(out), show_progress)
    files = OutFiles(Path(out))
    schedule = schedule_of(settings)
    atoms = load_structure(settings.structure, settings.supercell)
    pid = potential_id_of(settings.potential)
    if finished_run(files, settings, pid, atoms):
        return files.snapshots
    atoms.calc = md_calculator(settings.potential, atoms, settings.threads, settings.device)
    check_stress_for_npt(atoms.calc, settings.potential, schedule.npt_steps)
    if settings.nuclei == "corrected":
        from mlip_exafs.quantum import check_frames_resolve_vibrations  # lazy: import cycle, quantum imports md at its top

        check_frames_resolve_vibrations(atoms, settings.snapshot_every_fs, pid)
    atoms.set_constraint(FixCom())
    state = _start_or_resume(files, atoms, settings, pid)
    try:
        write_summary(files, settings, schedule, pid, state, atoms, "running")  # md.json says "running" from the first step on
        _run_steps(files, atoms, state, settings, schedule, pid, show_progress)
    except OSError as exc:  # disk full mid-run: the checkpoint and the logs up to it are intact
        raise UserError(
            f"could not write to {files.out} ({exc.strerror or type(exc).__name__}); free disk space, then rerun the same command to resume"
        ) from None
    write_summary(files, settings, schedule, pid, state, atoms, "complete")
    return files.snapshots


def finished_run(files: OutFiles, settings: MdSettings, potential_id: str, atoms: Atoms) -> bool:
    """True when ``out`` already holds this very run (of the starting structure ``atoms``), complete; refuses a different one."""
    if not files.summary.exists():
        return False
    summary = read_json(files.summary)
    if summary.get("status") != "complete":
        return False
    saved = comparable_settings({k: v for k, v in summary.get("settings", {}).items() if k not in RUNTIME_ONLY})
    if not same_run(saved, settings) or summary.get("potential_id") != potential_id:
        raise UserError(f"{files.out} already holds a finished MD run with other settings; use another output folder or delete it")
    check_same_structure(summary.get("structure_fingerprint"), atoms, files.out)
    return True


def _start_or_resume(files: OutFiles, atoms: Atoms, settings: MdSettings, potential_id: str) -> RunState:
    if files.checkpoint.exists():
        return load_checkpoint(files, atoms, settings, potential_id)

    state = fresh_state(atoms, settings)
    write_text(files.thermo, ",".join(THERMO_COLUMNS) + "\n" + thermo_row(atoms, 0, settings, "start"))
    write_text(files.snapshots, "")
    save_checkpoint(files, atoms, state, settings, potential_id)
    return state


def _run_steps(files: OutFiles, atoms: Atoms, state: RunState, settings: MdSettings, schedule: Schedule, potential_id: str, show_progress: bool) -> None:

    guard = BlowUpGuard(settings.temperature_k, files.out)
    ensemble, dyn = None, None
    # each run's device: a run resumed elsewhere (a GPU machine, then this one) says which steps ran where
    segment = {"start_step": state.step, "end_step": state.step, "steps": 0, "wall_s": 0.0, "steps_per_s": None,
               "device": device_for(settings.potential, settings.device)}
    state.segments.append(segment)
    t0 = time.perf_counter()
    bar = progress_bar(f"MD {settings.temperature_k:g} K", schedule.total, done_before=state.step) if show_progress else _no_bar()  # a resumed run counts from where it is
    with bar as advance, open(files.snapshots, "a") as snapshots, open(files.thermo, "a") as thermo:
        for step in range(state.step + 1, schedule.total + 1):
            if schedule.ensemble_of(step) != ensemble:
                ensemble = schedule.ensemble_of(step)
                dyn = _enter_ensemble(atoms, ensemble, settings, state)
            dyn.step()
            guard.check(atoms, step)
            state.step = step
            if schedule.averages_cell(step):
                state.cell_sum_a += atoms.cell.array
                state.cell_count += 1
            if step % schedule.thermo_every == 0 or step == schedule.total:
                thermo.write(thermo_row(atoms, step, settings, schedule.phase_of(step)))
            if schedule.is_snapshot(step):
                ase.io.write(snapshots, snapshot_of(atoms, step, settings), format="extxyz")
            if step == schedule.npt_steps:
                _impose_mean_cell(atoms, state)
            if step % schedule.checkpoint_every == 0 or step == schedule.total:
                snapshots.flush(), thermo.flush()
                _update_segment(segment, state.step, time.perf_counter() - t0)
                state.transferred_energy_ev = float(getattr(dyn, "transferred_energy", state.transferred_energy_ev))
                save_checkpoint(files, atoms, state, settings, potential_id)
                write_summary(files, settings, schedule, potential_id, state, atoms, "running")
            advance()


def _enter_ensemble(atoms: Atoms, ensemble: str, settings: MdSettings, state: RunState):
    """A fresh integrator; the barostat needs stress at every step, NVT never does."""
    if hasattr(atoms.calc, "compute_stress"):
        atoms.calc.compute_stress = ensemble == "npt"
    return make_dynamics(atoms, ensemble, settings, state)


def _impose_mean_cell(atoms: Atoms, state: RunState) -> None:
    if state.cell_count:
        atoms.set_cell(state.cell_sum_a / state.cell_count, scale_atoms=True)


def _update_segment(segment: dict, step: int, wall_s: float) -> None:
    """Steps and wall time of this invocation so far (one segment per resumption)."""
    segment.update(end_step=step, steps=step - segment["start_step"], wall_s=round(wall_s, 3))
    segment["steps_per_s"] = round(segment["steps"] / wall_s, 4) if wall_s > 0 else None


class _no_bar:
    def __enter__(self) -> Callable[[], None]:
        return lambda: None

    def __exit__(self, *exc) -> None:
        return None
