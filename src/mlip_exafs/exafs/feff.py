"""FEFF8L as shipped in the xraylarch wheel: potentials once, paths many times.

Two ways in:

* the ``feff8l_*`` programs, run directly (argument lists, a temp folder) so
  that self-consistent potentials (``phase.pad``) are computed once and reused
  for every snapshot: rdinp + pathfinder + genfmt + ff2x per snapshot;
* ``libfeff8lpath.so`` (``calc_onepath``): the curved-wave amplitude and phase
  of ONE path for a given geometry, in a few ms. larch's own wrapper passes a
  Python ``str`` where the library wants ``char*`` (it then cannot find
  ``phase.pad``); here every string goes in as a ctypes buffer.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from mlip_exafs.errors import UserError, setting

BOHR_A = 0.52917721067
RYDBERG_EV = 13.605698
ETOK = 0.2624682917  # k² (Å⁻²) per eV
FEFF_MAXPTS = 150
FEFF_MAXPOT = 11
FEFF_MAXLEG = 9
POTENTIAL_FILES = ("phase.pad", "xsect.json")  # what pathfinder/genfmt/ff2x need from pot+xsph
FEFF_EDGES = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5")


@dataclass(frozen=True)
class Potentials:
    """FEFF unique potentials: index 0 is the absorber, then one per element."""

    absorber: str
    scatterers: tuple[str, ...]  # element of ipot 1, 2, ...

    def ipot_of(self, symbol: str) -> int:
        return 1 + self.scatterers.index(symbol)

    def cards(self) -> list[str]:
        lines = [f" 0 {atomic_numbers[self.absorber]} {self.absorber}"]
        lines += [f" {i + 1} {atomic_numbers[s]} {s}" for i, s in enumerate(self.scatterers)]
        return lines


@dataclass(frozen=True)
class Cluster:
    """Atoms around one absorber (at the origin), positions in Å, FEFF ipots."""

    positions_a: np.ndarray  # (n, 3); row 0 is the absorber at the origin
    ipots: np.ndarray  # (n,) int; ipots[0] == 0


@dataclass(frozen=True)
class PathSignal:
    """FEFF's per-path functions on its own k grid (larch feffdat conventions)."""

    k_inv_a: np.ndarray
    amp: np.ndarray  # red_fact * |f_eff|
    phase: np.ndarray  # 2 delta_c + phase(f_eff), radians
    lambda_a: np.ndarray  # mean free path
    reff_a: float


def feff_bin_dir() -> Path:
    import larch  # lazy: larch, seconds to import; only when FEFF runs (the report reads chi.csv without it)

    folder = Path(larch.__file__).parent / "bin" / "linux64"
    if not (folder / "feff8l_pot").exists():
        raise UserError(f"FEFF8L programs not found in {folder}; reinstall xraylarch (pip install --force-reinstall xraylarch==2026.3.1)")
    return folder


MODULE_OUTPUT = {"rdinp": "geom.json", "pot": "pot.pad", "xsph": "phase.pad", "pathfinder": "paths.dat", "genfmt": "feff.pad",
                 "ff2x": "chi.dat"}  # what each program writes when it works (listed after a run of each on bcc W)


def run_module(module: str, workdir: Path) -> None:
    """Run one feff8l_<module> program in ``workdir``; a failure is a one-line error. FEFF's Fortran STOP exits with
    status 0 ('Cannot calculate potentials'), so the program's output file decides, not the status alone."""
    exe = feff_bin_dir() / f"feff8l_{module}"
    proc = subprocess.run([str(exe)], cwd=workdir, capture_output=True, text=True, errors="replace")
    expected = MODULE_OUTPUT.get(module)
    if proc.returncode != 0 or (expected and not (workdir / expected).exists()):
        said = [line.strip() for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip() and line.strip() != "STOP"]
        raise UserError(f"FEFF8L {module} failed in {workdir} ({' '.join(said[-2:]) or 'no output'}); check the structure and {setting('rmax_a')}")


def feff_input(cluster: Cluster, potentials: Potentials, edge: str, rmax_a: float, nleg: int, scf_radius_a: float | None,
               write_paths: bool = False) -> str:
    """A feff.inp that keeps every path (``CRITERIA 0 0``) and no Debye-Waller factor.

    ``write_paths``: ff2x also writes one feffNNNN.dat per path (what larch's feffit reads).
    """
    lines = [
        "TITLE mlip-exafs",
        f"EDGE {edge}",
        "S02 1.0",
        f"PRINT 1 0 0 0 0 {3 if write_paths else 0}",
        f"NLEG {nleg}",
        "CRITERIA 0 0",
        f"RMAX {rmax_a:.4f}",
    ]
    if scf_radius_a:
        lines.append(f"SCF {scf_radius_a:.3f}")
    lines += ["POTENTIALS", *potentials.cards(), "ATOMS"]
    lines += [f"{x:12.6f} {y:12.6f} {z:12.6f} {int(p)}" for (x, y, z), p in zip(cluster.positions_a, cluster.ipots)]
    lines.append("END")
    return "\n".join(lines) + "\n"


def compute_potentials(cluster: Cluster, potentials: Potentials, edge: str, scf_radius_a: float, dest: Path) -> Path:
    """Self-consistent potentials and phase shifts for ``cluster``; returns ``dest/phase.pad``."""
    with tempfile.TemporaryDirectory(prefix="feffpot") as tmp:
        work = Path(tmp)
        (work / "feff.inp").write_text(feff_input(cluster, potentials, edge, 1.0, 2, scf_radius_a))
        for module in ("rdinp", "pot", "xsph"):
            run_module(module, work)
        dest.mkdir(parents=True, exist_ok=True)
        for name in POTENTIAL_FILES:
            shutil.copy(work / name, dest / name)
    return dest / "phase.pad"


def feff_chi(cluster: Cluster, potentials: Potentials, edge: str, rmax_a: float, nleg: int, phase_pad: Path) -> tuple[np.ndarray, np.ndarray]:
    """χ(k) of one cluster with fixed potentials: all paths to ``nleg`` legs, σ² = 0."""
    with tempfile.TemporaryDirectory(prefix="feffpath") as tmp:
        work = Path(tmp)
        (work / "feff.inp").write_text(feff_input(cluster, potentials, edge, rmax_a, nleg, None))
        run_module("rdinp", work)
        for name in POTENTIAL_FILES:
            shutil.copy(phase_pad.parent / name, work / name)
        for module in ("pathfinder", "genfmt", "ff2x"):
            run_module(module, work)
        if not (work / "chi.dat").exists():
            raise UserError(f"FEFF8L ff2x wrote no chi.dat next to {phase_pad}; delete that potentials folder and rerun")
        data = np.loadtxt(work / "chi.dat", comments="#")
    return data[:, 0], data[:, 1]


@lru_cache(maxsize=None)
def _onepath_library():
    from larch.larchlib import get_dll  # lazy: larch, seconds to import; only when the fast engine first tabulates a path

    return get_dll("feff8lpath")


@lru_cache(maxsize=8)
def _read_pad_atoms(phase_pad: Path) -> np.ndarray:
    """Atomic numbers of the potentials in ``phase.pad`` (what calc_onepath needs as iz)."""
    with open(phase_pad) as fh:
        npots = int(fh.readline().split()[4])
        text = fh.readlines()
    iz = [int(line.split()[1]) for line in text[4:] if not line.startswith("$")][: npots + 1]
    out = np.zeros(1 + FEFF_MAXPOT, dtype=np.int32)
    out[: len(iz)] = iz
    return out


def onepath(phase_pad: Path, scatterers_a: np.ndarray, ipots: np.ndarray) -> PathSignal:
    """FEFF's amplitude and phase for the path absorber(origin) -> scatterers -> absorber."""
    nleg = len(ipots) + 1
    if nleg > FEFF_MAXLEG:
        raise ValueError(f"path with {nleg} legs exceeds FEFF's {FEFF_MAXLEG}")
    rat = np.zeros((3, 2 + FEFF_MAXLEG), dtype=np.float64, order="F")
    rat[:, 1:nleg] = np.asarray(scatterers_a, dtype=float).T / BOHR_A
    ipot = np.zeros(1 + FEFF_MAXLEG, dtype=np.int32)
    ipot[1:nleg] = ipots
    iz = _read_pad_atoms(phase_pad)
    out = {name: np.zeros(FEFF_MAXPTS, dtype=np.float64) for name in ("k", "real_phc", "mag_feff", "pha_feff", "red_fact", "lam", "rep")}
    legs = {name: np.zeros(n, dtype=np.float64) for name, n in (("ri", FEFF_MAXLEG), ("beta", 1 + FEFF_MAXLEG), ("eta", 2 + FEFF_MAXLEG))}
    vec3 = {name: np.zeros(3, dtype=np.float64) for name in ("evec", "xivec")}

    def ptr(arr):
        return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_double * arr.size))

    def lng(v):
        return ctypes.pointer(ctypes.c_long(v))

    def dbl(v=0.0):
        return ctypes.pointer(ctypes.c_double(v))

    nepts = lng(FEFF_MAXPTS)
    _onepath_library().calc_onepath(
        ctypes.create_string_buffer(str(phase_pad).ljust(256).encode()[:256]),
        lng(9999), lng(nleg), dbl(1.0), lng(2), ctypes.create_string_buffer(8),
        dbl(), dbl(), dbl(), dbl(), dbl(), dbl(), dbl(), ctypes.create_string_buffer(30),
        ipot.ctypes.data_as(ctypes.POINTER(ctypes.c_int * ipot.size)), ptr(rat),
        iz.ctypes.data_as(ctypes.POINTER(ctypes.c_int * iz.size)), lng(0), ptr(vec3["evec"]), dbl(), ptr(vec3["xivec"]),
        lng(0), lng(0), lng(0), ptr(legs["ri"]), ptr(legs["beta"]), ptr(legs["eta"]), nepts,
        *(ptr(out[name]) for name in ("k", "real_phc", "mag_feff", "pha_feff", "red_fact", "lam", "rep")),
    )
    n = nepts.contents.value
    if n < 10 or not np.isfinite(out["mag_feff"][:n]).all():
        raise UserError(f"FEFF onepath failed for {phase_pad}; delete the potentials folder and rerun")
    points = np.vstack([np.zeros(3), np.asarray(scatterers_a, dtype=float), np.zeros(3)])
    reff = 0.5 * float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    return PathSignal(
        k_inv_a=out["k"][:n].copy(),
        amp=(out["red_fact"] * out["mag_feff"])[:n].copy(),
        phase=(out["real_phc"] + out["pha_feff"])[:n].copy(),
        lambda_a=out["lam"][:n].copy(),
        reff_a=reff,
    )
