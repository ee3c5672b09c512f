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

from mlip_exafs.errors import UserError, setting
from mlip_exafs.files import check_output_file, db_write_guard
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


def detect_format(path: Path) -> str:
    name = path.name.lower()
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
        raise UserError(f"unknown format '{fmt}'; use outcar, vasprun or extxyz")
    return readers[fmt](path)


def _ase_frames(path: Path, fmt: str) -> list[Atoms]:
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:
        raise UserError(f"cannot read {path} as {fmt} ({type(exc).__name__}: {exc}); check the file is complete") from None
    if not frames:
        raise UserError(f"{path} holds no structures")
    return frames


def _labels(atoms: Atoms, stress: np.ndarray | None) -> dict:
    return {
        "energy": float(atoms.get_potential_energy(force_consistent=True)),
        "forces": np.asarray(atoms.get_forces(), dtype=float),
        "stress": stress,
    }


def _read_outcar(path: Path) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "vasp-out")
    text = path.read_text(errors="replace")
    kbar = [np.array(line.split()[2:8], dtype=float) for line in re.findall(r"^\s*in kB.*$", text, re.M)]
    if len(kbar) != len(frames):
        raise UserError(f"{path}: found {len(kbar)} 'in kB' stress lines for {len(frames)} ionic steps; give a complete OUTCAR")
    for atoms, s in zip(frames, kbar):
        atoms.info["labels"] = _labels(atoms, vasp_kbar_to_ase(s))
    version = re.search(r"vasp\.(\S+)", text)
    return frames, f"VASP {version.group(1) if version else 'unknown'}"


def _read_vasprun(path: Path) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "vasp-xml")
    try:
        root = ET.parse(path).getroot()
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
    for i, atoms in enumerate(frames):
        atoms.info["labels"] = _labels(atoms, stresses[i] if stresses else None)
    gen = root.find("generator/i[@name='version']")
    return frames, f"VASP {gen.text.strip() if gen is not None and gen.text else 'unknown'}"


def _read_extxyz(path: Path, stress_units: StressUnits) -> tuple[list[Atoms], str]:
    frames = _ase_frames(path, "extxyz")
    for i, atoms in enumerate(frames):
        if atoms.calc is None or "energy" not in atoms.calc.results or "forces" not in atoms.calc.results:
            raise UserError(f"{path}: frame {i} has no energy or forces; write them as 'energy' and 'forces' in the extxyz")
        stress = atoms.calc.results.get("stress")
        atoms.info["labels"] = {
            "energy": float(atoms.calc.results["energy"]),
            "forces": np.asarray(atoms.calc.results["forces"], dtype=float),
            "stress": None if stress is None else stress_to_ase(stress, stress_units),
        }
    return frames, str(frames[0].info.get("dft_code", "unknown (extxyz)"))


def structure_uid(atoms: Atoms, source: str, index: int) -> str:
    digest = hashlib.sha256(np.round(atoms.positions, 5).tobytes() + atoms.numbers.tobytes()).hexdigest()[:10]
    return f"{source}:{index}:{digest}"


def import_files(paths: list[Path], db_path: Path, fmt: str = "auto", stress_units: StressUnits = "ev/a3", check_units: bool = True) -> dict:
    """Import every frame of every file; rerunning skips frames already in the database.

    With ``check_units`` the stresses are compared with the pretrained CHGNet
    (:func:`check_stress_units`) before anything is written.
    """
    check_output_file(db_path)  # before reading (and checking with CHGNet) every file
    parsed = [(path, *read_labelled(path, fmt, stress_units)) for path in paths]  # read all before writing any
    for path, frames, _ in parsed:
        for i, atoms in enumerate(frames):
            labels = atoms.info["labels"]
            values = [labels["energy"], labels["forces"]] + ([] if labels["stress"] is None else [labels["stress"]])
            if not all(np.isfinite(v).all() for v in values):
                raise UserError(f"{path}: frame {i} has NaN or infinite labels; remove that frame and import again")
    if check_units:
        with_stress = [(a, a.info["labels"]["stress"]) for _, frames, _ in parsed for a in frames if a.info["labels"]["stress"] is not None]
        check_stress_units([a for a, _ in with_stress], [s for _, s in with_stress])
    with db_write_guard(db_path):  # disk full: one-line error; a database this import created is removed
        _ensure_metadata(db_path, parsed[0][2])
        done = finished_uids(db_path)
        added = 0
        for path, frames, code in parsed:
            for i, atoms in enumerate(frames):
                uid = structure_uid(atoms, path.name, i)
                if uid in done:
                    continue
                labels = atoms.info["labels"]
                keys = {"uid": uid, "scf_converged": True, "dft_code": code, "source_file": path.name, "method": "imported"}
                write_row(db_path, atoms, labels["energy"], labels["forces"], labels["stress"], keys)
                added += 1
    return {"added": added, "skipped": sum(len(f) for _, f, _ in parsed) - added}


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
