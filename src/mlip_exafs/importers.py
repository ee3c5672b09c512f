"""Import a user's DFT labels (VASP OUTCAR / vasprun.xml, extxyz) into a dataset database.

Units are converted explicitly here, once, and tested per format:
VASP prints stress in kbar with the opposite sign to ASE and in the order
XX YY ZZ XY YZ ZX; the database stores eV/Å^3, ASE sign (positive = tensile),
Voigt order xx yy zz yz xz xy.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.io.formats import open_with_compression

from mlip_exafs.dataset import structure_fingerprint
from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_database, db_write_guard
from mlip_exafs.label import UNITS, finished_uids, write_row
from mlip_exafs.potentials import calculator_for
from mlip_exafs.units import ase_stress_to_gpa, gpa_to_ase_stress, matrix_to_voigt, vasp_kbar_to_gpa

StressUnits = Literal["ev/a3", "gpa", "kbar-vasp"]


def vasp_kbar_to_ase(stress_kbar_vasp: np.ndarray) -> np.ndarray:
    """VASP 'in kB' six-vector (XX YY ZZ XY YZ ZX, compressive positive) -> ASE Voigt eV/Å^3."""
    xx, yy, zz, xy, yz, zx = np.asarray(stress_kbar_vasp, dtype=float)
    return gpa_to_ase_stress(vasp_kbar_to_gpa(np.array([xx, yy, zz, yz, zx, xy])))


def stress_to_ase(stress_voigt: np.ndarray, units: StressUnits) -> np.ndarray:
    """An extxyz stress in the stated units and sign -> ASE Voigt eV/Å^3 (positive = tensile)."""
    stress = np.asarray(stress_voigt, dtype=float)
    if stress.shape == (3, 3) or stress.size == 9:
        stress = matrix_to_voigt(stress.reshape(3, 3))
    if units == "ev/a3":
        return stress
    if units == "gpa":
        return gpa_to_ase_stress(stress)
    if units == "kbar-vasp":
        return gpa_to_ase_stress(vasp_kbar_to_gpa(stress))
    raise UserError(f"unknown stress units '{units}'; use ev/a3, gpa or kbar-vasp")


COMPRESSED = (".gz", ".bz2", ".xz")  # ASE reads these by name; so do the raw re-reads below


def detect_format(path: Path) -> str:
    name = path.name.lower()
    name = name.rsplit(".", 1)[0] if name.endswith(COMPRESSED) else name
    if "outcar" in name:
        return "outcar"
    if name.endswith(".xml") and "vasprun" in name:
        return "vasprun"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    raise UserError(f"cannot tell the format of {path}; name it OUTCAR*, vasprun*.xml or *.extxyz, or give {setting('fmt')}")


def read_labelled(path: Path, fmt: str = "auto", stress_units: StressUnits = "ev/a3") -> tuple[list[Atoms], str]:
    """Frames with energy (eV), forces (eV/Å), stress (ASE eV/Å^3) in ``atoms.info['labels']``; and the code name."""
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path")
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {"outcar": _read_outcar, "vasprun": _read_vasprun, "extxyz": lambda p: _read_extxyz(p, stress_units)}
    if fmt not in readers:
        raise UserError(f"unknown format '{fmt}'; use auto, outcar, vasprun or extxyz")
    return readers[fmt](path)


def _ase_frames(path: Path, fmt: str) -> list[Atoms]:
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:
        raise UserError(f"cannot read {path} as {fmt} ({type(exc).__name__}: {exc}); check the file is complete") from None
    if not frames:
        raise UserError(f"{path} holds no structures")
    return frames


def _labels(atoms: Atoms, stress: np.ndarray | None, scf_converged: bool) -> dict:
    return {
        "energy": float(atoms.get_potential_energy(force_consistent=True)),
        # the DFT forces on every atom: ASE zeroes those on atoms a POSCAR or vasprun fixes (selective dynamics)
        "forces": np.asarray(atoms.get_forces(apply_constraint=False), dtype=float),
        "stress": stress,
        "scf_converged": scf_converged,
    }


def _read_text(path: Path) -> str:
    with open_with_compression(str(path), "rb") as handle:
        return handle.read().decode(errors="replace")


def _read_outcar(path: Path) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "vasp-out")
    text = _read_text(path)
    kbar = [np.array(line.split()[2:8], dtype=float) for line in re.findall(r"^\s*in kB.*$", text, re.M)]
    if kbar and len(kbar) != len(frames):  # none: a run without stress (ISIF = 0, VASP's default for MD)
        raise UserError(f"{path}: found {len(kbar)} 'in kB' stress lines for {len(frames)} ionic steps; give a complete OUTCAR")
    converged = outcar_scf_converged(text, len(frames), path)
    for i, atoms in enumerate(frames):
        atoms.info["labels"] = _labels(atoms, vasp_kbar_to_ase(kbar[i]) if kbar else None, converged[i])
    version = re.search(r"vasp\.(\S+)", text)
    return frames, f"VASP {version.group(1) if version else 'unknown'}"


def outcar_scf_converged(text: str, n_frames: int, path: Path) -> list[bool]:
    """Per ionic step, whether its SCF loop converged: VASP ends a converged loop with 'aborting loop because EDIFF
    is reached'; one that ran into NELM says 'EDIFF was not reached' (VASP 6) or nothing (VASP 5)."""
    converged: dict[int, bool] = {}
    ionic = None
    for line in text.splitlines():
        if match := re.search(r"Iteration\s+(\d+)\(\s*\d+\)", line):
            ionic = int(match.group(1))
            converged.setdefault(ionic, False)
        elif "aborting loop" in line and ionic is not None:
            converged[ionic] = "EDIFF is reached" in line
    if len(converged) < n_frames:
        raise UserError(f"{path}: found {len(converged)} SCF loops for {n_frames} ionic steps; give a complete OUTCAR "
                        "(steps without an SCF loop, such as VASP's machine-learned force-field steps, are no DFT labels)")
    return [converged[i] for i in sorted(converged)[:n_frames]]


def _read_vasprun(path: Path) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "vasp-xml")
    try:
        with open_with_compression(str(path), "rb") as handle:
            root = ET.parse(handle).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path} is not valid XML ({exc}); give a complete vasprun.xml") from None
    stresses = []
    for calc in root.iter("calculation"):
        varray = calc.find("varray[@name='stress']")
        if varray is not None:
            matrix = np.array([v.text.split() for v in varray.findall("v")], dtype=float)
            # vasprun's 3x3 stress is in kbar, VASP sign (compressive positive)
            stresses.append(gpa_to_ase_stress(vasp_kbar_to_gpa(matrix_to_voigt(matrix))))
    if stresses and len(stresses) != len(frames):
        raise UserError(f"{path}: {len(stresses)} stress tensors for {len(frames)} ionic steps; give a complete vasprun.xml")
    converged = vasprun_scf_converged(root, len(frames), path)
    for i, atoms in enumerate(frames):
        atoms.info["labels"] = _labels(atoms, stresses[i] if stresses else None, converged[i])
    gen = root.find("generator/i[@name='version']")
    return frames, f"VASP {gen.text.strip() if gen is not None and gen.text else 'unknown'}"


VASP_NELM_DEFAULT = 60  # VASP's own default, for a vasprun.xml that does not state NELM


def vasprun_scf_converged(root: ET.Element, n_frames: int, path: Path) -> list[bool]:
    """Per ionic step, whether its SCF loop stopped before NELM (vasprun.xml has no convergence flag of its own)."""
    nelm = root.find(".//parameters//i[@name='NELM']")
    limit = int(nelm.text) if nelm is not None and nelm.text else VASP_NELM_DEFAULT
    steps = [len(calc.findall("scstep")) for calc in root.iter("calculation")]
    if len(steps) < n_frames:
        raise UserError(f"{path}: {len(steps)} calculations for {n_frames} ionic steps; give a complete vasprun.xml")
    return [n < limit for n in steps[:n_frames]]


def _read_extxyz(path: Path, stress_units: StressUnits) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "extxyz")
    for i, atoms in enumerate(frames):
        if atoms.calc is None or "energy" not in atoms.calc.results or "forces" not in atoms.calc.results:
            raise UserError(f"{path}: frame {i} has no energy or forces; write them as 'energy' and 'forces' in the extxyz")
        atoms.info["labels"] = {
            "energy": float(atoms.calc.results["energy"]),
            "forces": np.asarray(atoms.calc.results["forces"], dtype=float),
            "stress": _extxyz_stress(atoms, stress_units, f"{path}: frame {i}"),
            "scf_converged": bool(atoms.info.get("scf_converged", True)),  # the exporter's word, where it gives one
        }
    return frames, str(frames[0].info.get("dft_code", "unknown (extxyz)"))


def _extxyz_stress(atoms: Atoms, stress_units: StressUnits, where: str) -> np.ndarray | None:
    """The frame's stress in ASE's units and sign; from a ``virial`` (eV, as GAP, MACE and NequIP datasets write it:
    virial = −stress × volume) when it gives no stress."""
    if (stress := atoms.calc.results.get("stress")) is not None:
        return stress_to_ase(stress, stress_units)
    if (virial := atoms.info.get("virial")) is None:
        return None
    if atoms.cell.rank < 3:
        raise UserError(f"{where} has a virial but no 3D cell; give the Lattice of the periodic cell")
    return matrix_to_voigt(-np.asarray(virial, dtype=float).reshape(3, 3) / atoms.get_volume())


def structure_uid(atoms: Atoms, energy_ev: float) -> str:
    """A label's identity: its geometry (positions, cell, species) and energy, so that rerunning an import, or
    importing the same label from another file, skips it; two calculations of one geometry (another spin state,
    other settings) are two labels."""
    payload = f"{structure_fingerprint(atoms)}:{energy_ev:.6f}"
    return f"imported:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def import_files(paths: list[Path], db_path: Path, fmt: str = "auto", stress_units: StressUnits = "ev/a3", check_units: bool = True) -> dict:
    """Import every frame of every file; rerunning skips frames already in the database.

    With ``check_units`` the stresses are compared with the pretrained CHGNet
    (:func:`check_stress_units`) before anything is written.
    """
    check_output_database(db_path)  # before reading (and checking with CHGNet) every file
    parsed = [(path, *read_labelled(path, fmt, stress_units)) for path in paths]  # read all before writing any
    for path, frames, code in parsed:
        check_same_code(db_path, code, path)
        for i, atoms in enumerate(frames):
            _check_frame(atoms, f"{path}: frame {i}")
    if check_units:
        with_stress = [(a, a.info["labels"]["stress"]) for _, frames, _ in parsed for a in frames if a.info["labels"]["stress"] is not None]
        check_stress_units([a for a, _ in with_stress], [s for _, s in with_stress])
    with db_write_guard(db_path):  # disk full: one-line error; a database this import created is removed
        _ensure_metadata(db_path, parsed[0][2])
        done = finished_uids(db_path)
        added = not_converged = 0
        for path, frames, code in parsed:
            for i, atoms in enumerate(frames):
                labels = atoms.info["labels"]
                uid = structure_uid(atoms, labels["energy"])
                if uid in done:
                    continue
                keys = {"uid": uid, "scf_converged": labels["scf_converged"], "dft_code": code, "source_file": path.name,
                        "source_frame": i, "method": "imported"}
                write_row(db_path, atoms, labels["energy"], labels["forces"], labels["stress"], keys)
                done.add(uid)
                added += 1
                not_converged += not labels["scf_converged"]
    return {"added": added, "skipped": sum(len(f) for _, f, _ in parsed) - added, "not_converged": not_converged}


def _check_frame(atoms: Atoms, where: str) -> None:
    """Labels a crystal's fine-tune can use: finite, and of a cell periodic in three dimensions."""
    labels = atoms.info["labels"]
    values = [labels["energy"], labels["forces"]] + ([] if labels["stress"] is None else [labels["stress"]])
    if not all(np.isfinite(v).all() for v in values):
        raise UserError(f"{where} has NaN or infinite labels; remove that frame and import again")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise UserError(f"{where} is not periodic in three dimensions (pbc {atoms.pbc.tolist()}); "
                        "mlip-exafs fits crystals: give the periodic cell (extxyz: Lattice=... pbc=\"T T T\")")


def _code_name(code: str) -> str:
    return code.partition(" ")[0]


def check_same_code(db_path: Path, code: str, source: Path) -> None:
    """One database, one level of theory: refuse to add another code's labels, or any to a CP2K-labelled database."""
    if not db_path.exists() or db_path.stat().st_size == 0:
        return
    with ase.db.connect(db_path) as db:
        meta = db.metadata
    if not meta:
        return
    recorded = meta.get("dft_code", {}).get("name", "unknown")
    if "settings_hash" in meta or recorded != _code_name(code):
        raise UserError(f"{db_path} holds {recorded} labels{' from mlip-exafs label' if 'settings_hash' in meta else ''} and "
                        f"{source} has {code} ones; a database never mixes levels of theory: import into a new database file")


def _ensure_metadata(db_path: Path, code: str) -> None:
    """Imported datasets state their code and units like labelled ones."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(db_path) as db:
        if not db.metadata:
            name, _, version = code.partition(" ")
            db.metadata = {"dft_code": {"name": name, "version": version or "unknown"}, "settings": {"imported": True}, "units": UNITS}


def check_stress_units(frames: list[Atoms], stresses_ase: list[np.ndarray], potential: str = "chgnet") -> None:
    """Refuse stresses that are detectably off by a sign or a factor of 10 (kbar vs GPa).

    The pretrained potential is no reference for absolute stresses (it lacks
    dispersion, for one), but how the stress *varies* between structures it
    gets right to tens of percent. So compare the spread around the mean: a
    negative slope means a flipped sign, a slope near 10 or 0.1 a unit slip.
    Skipped when the structures barely differ in stress (< 0.3 GPa spread).
    """
    if len(frames) < 3:
        return
    picks = np.linspace(0, len(frames) - 1, min(len(frames), 8)).round().astype(int)
    calc = calculator_for(potential, frames[0], threads=1)
    predicted = []
    for i in picks:
        atoms = frames[i].copy()
        atoms.calc = calc
        predicted.append(ase_stress_to_gpa(atoms.get_stress(voigt=True)))
    labelled = np.array([ase_stress_to_gpa(stresses_ase[i]) for i in picks])
    predicted = np.array(predicted)
    d, p = labelled - labelled.mean(0), predicted - predicted.mean(0)
    if np.abs(p).max() < 0.3:
        return
    slope = float((d * p).sum() / (p * p).sum())
    if slope < -0.3:
        raise UserError(
            f"stresses look sign-flipped (slope {slope:.2f} against {potential}); "
            f"if they are VASP kbar set {setting('stress_units')} to kbar-vasp, else negate them (ASE: positive = tensile)"
        )
    if slope > 4 or slope < 0.25:
        raise UserError(
            f"stresses look off by a factor of ~{slope:.3g} against {potential}; "
            f"check {setting('stress_units')} (ev/a3, gpa or kbar-vasp: 1 GPa = 10 kbar = 0.00624 eV/Å^3)"
        )
