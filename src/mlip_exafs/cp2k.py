"""CP2K through ASE's ``cp2k_shell`` calculator: settings, input, and output checks.

The defaults are the settings shown converged for 2H-WS2 on these machines
(docs/dft_convergence.md): PBE + D3(BJ), GTH pseudopotentials, DZVP-MOLOPT-SR
basis, 400 Ry cutoff, Monkhorst-Pack k-points from a reciprocal spacing, SCF by
diagonalisation with Fermi-Dirac smearing and Broyden mixing. Γ-only supercell
labels are wrong by tens of meV/atom here: never set a spacing that gives 1x1x1
for small cells unless you mean it. Labels are spin-restricted unless the settings
give magnetic moments (then UKS, each atom starting from its element's moment or
from the structure's own, e.g. an antiferromagnet's ±; docs/datasets.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.cp2k import CP2K
from ase.data import chemical_symbols
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlip_exafs.errors import UserError, setting

RY_TO_EV = 13.605693122994


class Cp2kSettings(BaseModel):
    """Every CP2K setting that changes a label, and the solver's. The hash identifies a dataset's level of theory.

    Solver-only settings (:data:`SOLVER_ONLY`) change how many SCF steps reach ``eps_scf``, not the label, so
    they stay out of the hash: a dataset can be continued with a faster solver (rows record theirs).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    xc: Literal["PBE"] = "PBE"
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    basis_set_file: str = "BASIS_MOLOPT"
    pseudo_potential: str = "GTH-PBE"
    potential_file: str = "GTH_POTENTIALS"
    cutoff_ry: float = Field(400.0, gt=0, description="plane-wave density cutoff (Ry)")
    rel_cutoff_ry: float = Field(50.0, gt=0)
    ngrids: int = Field(5, ge=1)
    eps_default: float = Field(1e-10, gt=0)
    eps_scf: float = Field(1e-6, gt=0)
    max_scf: int = Field(100, ge=1)
    added_mos: int = Field(20, ge=0)
    electronic_temperature_k: float = Field(300.0, ge=0, description="Fermi-Dirac smearing (K)")
    mixing_alpha: float = Field(0.3, gt=0, le=1)
    dispersion: Literal["D3BJ", "none"] = "D3BJ"
    d3_cutoff_a: float = Field(12.0, gt=0)
    kspacing_inv_a: float = Field(0.26, gt=0, description="k-point spacing, Å^-1 including 2π (VASP KSPACING)")
    broyden_nbuffer: int = Field(4, ge=1, description="Broyden mixing history (CP2K's NBUFFER; solver only)")
    nonmagnetic: bool = Field(False, description="label Cr, Mn, Fe, Co or Ni compounds spin-restricted anyway: for a material known "
                                                  "to be non-magnetic")
    magnetic_moments_mub: dict[str, float] = Field(
        default_factory=dict, description="spin-polarised (UKS) labels: each element's initial magnetic moment per atom (μB), the "
                                          "start that the SCF relaxes where a structure carries no moments of its own (an "
                                          "antiferromagnet's ±), e.g. {Fe: 3.0}; empty: spin-restricted")

    @field_validator("magnetic_moments_mub")
    @classmethod
    def _moments_of_elements(cls, moments: dict[str, float]) -> dict[str, float]:
        unknown = sorted(s for s in moments if s not in chemical_symbols[1:])
        if unknown:
            raise ValueError(f"not an element symbol: {', '.join(unknown)} (write e.g. Fe: 3.0)")
        return moments

    @model_validator(mode="after")
    def _spin_said_once(self) -> "Cp2kSettings":
        if self.nonmagnetic and self.magnetic_moments_mub:
            raise ValueError("nonmagnetic: true (spin-restricted labels) and magnetic_moments_mub (spin-polarised ones) contradict each "
                             "other; keep one")
        return self

    def level_of_theory(self) -> dict:
        """The settings that make a label: the hash's input and the database's record. Spin stays out while it is
        unused, so datasets labelled before it existed keep their hash (and their hours of CP2K rows)."""
        unused = set() if self.magnetic_moments_mub else {"magnetic_moments_mub"}
        return self.model_dump(exclude=NOT_THE_LABEL | unused)

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.level_of_theory(), sort_keys=True).encode()).hexdigest()[:16]

    def as_params(self) -> dict:
        """The settings as a study step's parameters: solver-only ones only when set, so that the label steps of
        studies begun before they existed keep their hashes (and their hours of finished CP2K rows)."""
        return self.level_of_theory() | self.model_dump(include=NOT_THE_LABEL, exclude_defaults=True)


SOLVER_ONLY = frozenset({"broyden_nbuffer"})
NOT_THE_LABEL = SOLVER_ONLY | {"nonmagnetic"}  # out of the hash: an acknowledgement changes no CP2K input
MAGNETIC_ELEMENTS = ("Cr", "Mn", "Fe", "Co", "Ni")  # 3d metals whose compounds are usually magnetic


def kpoint_mesh(atoms: Atoms, spacing: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with at most ``spacing`` Å^-1 (2π included) between k-points."""
    recip = 2 * np.pi * np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    return tuple(max(1, math.ceil(b / spacing - 1e-6)) for b in recip)  # type: ignore[return-value]


class Kind(NamedTuple):
    """A CP2K kind: atoms of one element that start with one magnetic moment."""

    name: str  # the element's symbol, or the symbol and a number for its second, third, … start moment
    element: str
    moment_mub: float


def site_kinds(settings: Cp2kSettings, atoms: Atoms) -> list[Kind]:
    """Each atom's kind; empty for spin-restricted labels.

    Atoms start from the structure's own initial magnetic moments where it carries any (an antiferromagnet's ±,
    extxyz ``initial_magmoms``), else from their element's ``magnetic_moments_mub``.
    """
    if not settings.magnetic_moments_mub:
        return []
    symbols = atoms.get_chemical_symbols()
    own = atoms.get_initial_magnetic_moments()
    moments = own if own.any() else [settings.magnetic_moments_mub.get(symbol, 0.0) for symbol in symbols]
    names: dict[tuple[str, float], str] = {}
    for symbol, moment in zip(symbols, map(float, moments)):
        if (symbol, moment) not in names:
            count = sum(element == symbol for element, _ in names)
            names[(symbol, moment)] = symbol if count == 0 else f"{symbol}{count + 1}"
    return [Kind(names[(symbol, float(moment))], symbol, float(moment)) for symbol, moment in zip(symbols, moments)]


def check_start_moments(settings: Cp2kSettings, frames: list[Atoms]) -> None:
    """Initial magnetic moments in the structures need spin-polarised settings, and collinear ones."""
    carrying = [a for a in frames if a.has("initial_magmoms") and a.get_initial_magnetic_moments().any()]
    if carrying and carrying[0].get_initial_magnetic_moments().ndim != 1:
        raise UserError("the structures carry non-collinear (vector) initial magnetic moments; these labels are collinear: give one "
                        "number per atom")
    if carrying and not settings.magnetic_moments_mub:
        raise UserError(f"the structures carry initial magnetic moments but the CP2K settings are spin-restricted; set "
                        f"{setting('magnetic_moments_mub')} (each element's moment, used where a structure carries none) for "
                        f"spin-polarised labels, or take the moments out of the structure file (ASE's bulk Fe, Co and Ni carry some)")


def _kind_section(kind: Kind, settings: Cp2kSettings) -> str:
    """A kind named by its element gets its basis and potential from ASE; a second kind of the element needs its own."""
    own = "" if kind.name == kind.element else f"""
      ELEMENT {kind.element}
      BASIS_SET {settings.basis_set}
      POTENTIAL {settings.pseudo_potential}"""
    return f"""
    &KIND {kind.name}{own}
      MAGNETIZATION {kind.moment_mub}
    &END KIND"""


def input_template(settings: Cp2kSettings, kpts: tuple[int, int, int], kinds: Sequence[Kind] = ()) -> str:
    """The part of the CP2K input ASE's calculator does not write itself."""
    s = settings
    kpoints = ""
    if kpts != (1, 1, 1):
        kpoints = f"""
    &KPOINTS
      SCHEME MONKHORST-PACK {kpts[0]} {kpts[1]} {kpts[2]}
      FULL_GRID .FALSE.
      SYMMETRY .FALSE.
    &END KPOINTS"""
    vdw = ""
    if s.dispersion == "D3BJ":
        vdw = f"""
    &XC
      &VDW_POTENTIAL
        POTENTIAL_TYPE PAIR_POTENTIAL
        &PAIR_POTENTIAL
          TYPE DFTD3(BJ)
          PARAMETER_FILE_NAME dftd3.dat
          REFERENCE_FUNCTIONAL PBE
          R_CUTOFF {s.d3_cutoff_a}
        &END PAIR_POTENTIAL
      &END VDW_POTENTIAL
    &END XC"""
    subsys = "".join(_kind_section(kind, s) for kind in dict.fromkeys(kinds))
    subsys = f"""
  &SUBSYS{subsys}
  &END SUBSYS""" if subsys else ""
    return f"""&FORCE_EVAL
  &DFT
    &QS
      EPS_DEFAULT {s.eps_default:.1E}
    &END QS
    &MGRID
      REL_CUTOFF {s.rel_cutoff_ry}
      NGRIDS {s.ngrids}
    &END MGRID{kpoints}
    &SCF
      EPS_SCF {s.eps_scf:.1E}
      ADDED_MOS {s.added_mos}
      &DIAGONALIZATION ON
        ALGORITHM STANDARD
      &END DIAGONALIZATION
      &SMEAR ON
        METHOD FERMI_DIRAC
        ELECTRONIC_TEMPERATURE [K] {s.electronic_temperature_k}
      &END SMEAR
      &MIXING ON
        METHOD BROYDEN_MIXING
        ALPHA {s.mixing_alpha}
        NBUFFER {s.broyden_nbuffer}
      &END MIXING
    &END SCF{vdw}
  &END DFT{subsys}
&END FORCE_EVAL
"""


def cp2k_executable() -> str:
    """The cp2k_shell binary, or a clear error saying how to install it."""
    exe = shutil.which("cp2k_shell") or shutil.which("cp2k_shell.psmp")
    if exe is None:
        raise UserError("CP2K not found: 'cp2k_shell' is not on PATH; install it with 'apt-get install cp2k cp2k-data'")
    return exe


def shell_command(mpi_ranks: int) -> str:
    """The command ASE starts; fixed strings only, no user paths in it."""
    exe = shlex.quote(cp2k_executable())  # ASE starts this string with a shell
    # exec: no shell in between; setpriv --pdeathsig: CP2K is killed with the labelling process
    # (a `kill -9` of `mlip-exafs label` would otherwise leave an orphan CP2K computing for minutes)
    setpriv = shutil.which("setpriv")
    start = f"exec {shlex.quote(setpriv)} --pdeathsig KILL env" if setpriv else "exec env"
    if mpi_ranks <= 1:
        return f"{start} OMP_NUM_THREADS=1 {exe}"
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise UserError(f"mpirun not found; install OpenMPI (comes with 'apt-get install cp2k') or set {setting('mpi_ranks')} to 1")
    return (
        f"{start} OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
        f"{shlex.quote(mpirun)} --bind-to none -np {int(mpi_ranks)} {exe}"
    )


CP2K_DATA_DIRS = ("/usr/share/cp2k", "/usr/share/cp2k/data")  # Debian's cp2k-data; $CP2K_DATA_DIR first


def data_file(name: str) -> Path | None:
    """A CP2K data file (basis sets, pseudopotentials) where CP2K looks for it; None where it cannot be found here."""
    folders = [os.environ["CP2K_DATA_DIR"]] if os.environ.get("CP2K_DATA_DIR") else []
    for folder in folders + list(CP2K_DATA_DIRS):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


@lru_cache(maxsize=8)
def _named_entries(path: Path) -> frozenset[tuple[str, str]]:
    """(element, name) of every entry of a basis or potential file: its header lines read 'W  NAME ALIAS ...'."""
    entries = set()
    for line in path.read_text(errors="replace").splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and not tokens[0].startswith("#") and tokens[0].isalpha() and len(tokens[0]) <= 2:
            entries.update((tokens[0].capitalize(), name) for name in tokens[1:])
    return frozenset(entries)


def check_can_label(settings: Cp2kSettings, symbols: set[str]) -> None:
    """Before any sampling or CP2K: each element has the basis set and pseudopotential the settings name (CP2K would
    abort on the first structure and say why only in its output), and no magnetic material is labelled without a word on spin."""
    magnetic = sorted(set(symbols) & set(MAGNETIC_ELEMENTS))
    if magnetic and not settings.nonmagnetic and not settings.magnetic_moments_mub:
        raise UserError(f"{', '.join(magnetic)} compounds are usually magnetic, and these CP2K settings are spin-restricted; set "
                        f"{setting('magnetic_moments_mub')} (e.g. {{{magnetic[0]}: 3.0}}) for spin-polarised labels (an antiferromagnet: "
                        f"give the structure file its own ± initial moments too), or {setting('nonmagnetic')} true for a material known "
                        f"to be non-magnetic (DFT+U: label with your own DFT and 'mlip-exafs import' it)")
    absent = sorted(set(settings.magnetic_moments_mub) - set(symbols))
    if absent:
        raise UserError(f"{setting('magnetic_moments_mub')} names {', '.join(absent)}, which the structures do not hold; "
                        f"give moments to their elements ({', '.join(sorted(symbols))})")
    for kind, name, file_name in (("basis set", settings.basis_set, settings.basis_set_file),
                                  ("pseudopotential", settings.pseudo_potential, settings.potential_file)):
        path = data_file(file_name)
        if path is None:  # CP2K elsewhere: it will say so itself
            continue
        missing = sorted(s for s in symbols if (s, name) not in _named_entries(path))
        if missing:
            raise UserError(f"CP2K's {file_name} ({path}) has no {kind} {name} for {', '.join(missing)}; "
                            f"choose a {kind} it has for every element ({setting('basis_set')}, {setting('pseudo_potential')} and their files)")


@lru_cache(maxsize=8)
def _valence_electrons(path: Path) -> dict[tuple[str, str], int]:
    """(element, name) -> valence electrons of a GTH potential file: the line after 'Fe GTH-PBE-q16 GTH-PBE' holds
    the electrons per angular momentum ('3 6 7')."""
    lines = path.read_text(errors="replace").splitlines()
    counts = {}
    for header, following in zip(lines, lines[1:]):
        tokens, numbers = header.split(), following.split()
        if len(tokens) >= 2 and tokens[0].isalpha() and len(tokens[0]) <= 2 and numbers and all(n.isdigit() for n in numbers):
            counts.update(((tokens[0].capitalize(), name), sum(map(int, numbers))) for name in tokens[1:])
    return counts


def spin_multiplicity(settings: Cp2kSettings, atoms: Atoms) -> int:
    """2S + 1 of the start: the atoms' start moments summed, rounded to the parity of the electron count.

    CP2K rescales the atomic guess to this many unpaired electrons; at its default (1) the kinds' moments are
    rescaled away and the SCF stays non-magnetic (measured on bcc Fe). The smeared SCF then relaxes the moment.
    """
    symbols = atoms.get_chemical_symbols()
    path = data_file(settings.potential_file)
    if path is None:
        raise UserError(f"spin-polarised labels count valence electrons in CP2K's {settings.potential_file}, which is neither in "
                        f"$CP2K_DATA_DIR nor in {', '.join(CP2K_DATA_DIRS)}; set CP2K_DATA_DIR to the folder that holds it")
    valence = _valence_electrons(path)
    electrons = sum(valence[(symbol, settings.pseudo_potential)] for symbol in symbols)
    unpaired = abs(round(sum(kind.moment_mub for kind in site_kinds(settings, atoms))))
    return unpaired + (electrons - unpaired) % 2 + 1


SPIN_TABLE = re.compile(r"#\s+Atom\s+Element\s+Kind\s+Atomic population \(alpha,beta\)\s+Net charge\s+Spin moment\n(.*?)\n\s*# Total charge and spin",
                        re.DOTALL)


def spin_moments(output_file: Path, offset: int = 0) -> np.ndarray | None:
    """Each atom's Mulliken spin moment (μB) of the last spin-polarised SCF after byte ``offset``; None when there is none."""
    tables = SPIN_TABLE.findall(_output_from(output_file, offset))
    if not tables:
        return None
    return np.array([float(line.split()[-1]) for line in tables[-1].splitlines() if line.strip()])


@lru_cache(maxsize=1)
def cp2k_version() -> str:
    exe = cp2k_executable()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"CP2K version\s+(\S+)", out)
    return match.group(1) if match else "unknown"


def make_calculator(settings: Cp2kSettings, atoms: Atoms, workdir: Path, mpi_ranks: int = 2):
    """An ASE CP2K calculator writing its files under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    kpts = kpoint_mesh(atoms, settings.kspacing_inv_a)
    kinds = site_kinds(settings, atoms)
    return _KindedCP2K(
        [kind.name for kind in kinds],
        command=shell_command(mpi_ranks),
        label=str(workdir / "cp2k"),
        inp=input_template(settings, kpts, kinds),
        xc=settings.xc,
        basis_set=settings.basis_set,
        basis_set_file=settings.basis_set_file,
        pseudo_potential=settings.pseudo_potential,
        potential_file=settings.potential_file,
        cutoff=settings.cutoff_ry * RY_TO_EV,
        max_scf=settings.max_scf,
        stress_tensor=True,
        print_level="MEDIUM",
        poisson_solver=None,
        uks=bool(settings.magnetic_moments_mub),
        multiplicity=spin_multiplicity(settings, atoms) if settings.magnetic_moments_mub else None,
    )


class _KindedCP2K(CP2K):
    """ASE's CP2K calculator with each atom written under its own kind: ASE names every atom by its element, and an
    antiferromagnet's sublattices start from opposite moments, so they are two kinds of one element."""

    def __init__(self, kind_names: list[str], **kwargs):
        super().__init__(**kwargs)
        self.kind_names = kind_names

    def _generate_input(self) -> str:
        return with_kind_names(super()._generate_input(), self.kind_names)


def with_kind_names(text: str, names: list[str]) -> str:
    """A CP2K input whose ``&COORD`` lines name the atoms' kinds (one name per atom, in order) instead of elements."""
    if not names:
        return text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == "&COORD") + 1
    for i, name in enumerate(names, start=first):
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = f"{indent}{name} {lines[i].split(maxsplit=1)[1]}"
    return "\n".join(lines)


ABORT_ART = re.compile(r"^(\[ABORT\]|\\___/|\||O/\||/\| \||/ \\|/   \\|___)\s*")  # the drawing around CP2K's abort message


def abort_reason(output_file: Path, offset: int = 0) -> str | None:
    """The message of CP2K's [ABORT] box (e.g. 'The requested basis set <X> for element <LA> was not found ...')."""
    if not output_file.exists():  # CP2K killed before it wrote any output
        return None
    lines = _output_from(output_file, offset).splitlines()
    start = next((i for i, line in enumerate(lines) if "[ABORT]" in line), None)
    if start is None:
        return None
    words = []
    for line in lines[start:]:
        if line.strip().startswith("*****"):
            break
        text = ABORT_ART.sub("", line.strip().strip("*").strip())
        words.append(re.sub(r"\s*\S+\.F:\d+$", "", text).strip())
    return " ".join(w for w in words if w) or None


def scf_converged(output_file: Path, offset: int = 0) -> bool:
    """True only if every SCF in the CP2K output (from byte ``offset`` on) converged."""
    text = _output_from(output_file, offset)
    if "SCF run NOT converged" in text:
        return False
    return "SCF run converged in" in text


def scf_steps(output_file: Path, offset: int = 0) -> int | None:
    """SCF steps of the converged runs in the CP2K output from byte ``offset`` on: the cost a solver setting changes."""
    steps = [int(n) for n in re.findall(r"SCF run converged in\s+(\d+) steps", _output_from(output_file, offset))]
    return sum(steps) if steps else None


def _output_from(output_file: Path, offset: int) -> str:
    with open(output_file, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")
