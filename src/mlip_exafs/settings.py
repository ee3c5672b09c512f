"""The settings of the stages (sample, md, finetune, learning curve, analysis, exafs, compare), light to import.

Each model is the one place that defines its stage's defaults and bounds. They live
here, not in their stage modules, because the CLI shows every default in ``--help``
and registers all verbs at start-up: importing the stages (numpy, ase, scipy,
matplotlib) for that took seconds, this module (pydantic) takes milliseconds.
Each stage re-exports its own models (``mlip_exafs.md.MdSettings``), and the rules
that belong to the settings themselves (the default thermostat, which settings
identify an MD run) stay with their model.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from mlip_exafs.errors import UserError, setting
from mlip_exafs.potentials.runtime import Device
from mlip_exafs.shells import SHELL_TOL_A
from mlip_exafs.spectra import FTWindow

# Validators are built at a model's first use, not at import: building them (and loading pydantic's plugins) for
# every model made each --help ~0.3 s slower. Fields, defaults and bounds are there at once (model_fields).
DEFER_BUILD = True

BUILTIN_STRUCTURES = ("ws2", "mos2", "w-bcc", "srtio3")  # the crystals mlip_exafs.structures builds by name (listed in --help)

# ---------------------------------------------------------------- sample


class SampleSpec(BaseModel):
    """How to sample one pool of structures (a training pool or a test set)."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    structure: str = "ws2"
    supercell: str = "3x3x1"
    potential: str = Field("chgnet", description="potential that drives the sampling MD")
    temperatures_k: list[PositiveFloat] = Field(default_factory=lambda: [300.0, 600.0, 1000.0])
    snapshots_per_temperature: int = Field(22, ge=0)
    strained: int = Field(20, ge=0, description="MD snapshots with a random strain applied")
    strain_max: float = Field(0.03, ge=0, lt=0.5, description="largest strain component (0.03 = 3 %)")
    strain_temperature_k: float = Field(600.0, gt=0)
    rattled: int = Field(14, ge=0, description="perfect cells with Gaussian displacements")
    rattle_max_a: float = Field(0.12, gt=0, description="largest rattle standard deviation (Å)")
    timestep_fs: float = Field(2.0, gt=0)
    equilibration_fs: float = Field(1000.0, ge=0)
    interval_fs: float = Field(50.0, gt=0, description="MD time between snapshots (fs)")
    seed: int = 0
    threads: int | None = None

    def total(self) -> int:
        return len(self.temperatures_k) * self.snapshots_per_temperature + self.strained + self.rattled


# ---------------------------------------------------------------- md

RUNTIME_ONLY = {"threads", "device"}  # settings that may change between a run and its resumption
Thermostat = Literal["bussi", "langevin"]
Nuclei = Literal["classical", "corrected", "path-integral"]
LEGACY_DEFAULTS = {"nuclei": "classical", "beads": None, "thermostat": "bussi"}  # settings added later: at these values a run made before them is the same run


class MdSettings(BaseModel):
    """One MD run. Times are in fs; they must be whole multiples of the timestep."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    structure: str = Field("ws2", description="built-in crystal or structure file")
    supercell: Optional[str] = None
    potential: str = "chgnet"
    temperature_k: float = Field(300.0, gt=0)
    timestep_fs: float = Field(2.0, gt=0, le=20)
    equilibration_fs: float = Field(2000.0, ge=0)
    production_fs: float = Field(10000.0, gt=0)
    snapshot_every_fs: float = Field(50.0, gt=0)
    thermo_every_fs: float = Field(10.0, gt=0)
    checkpoint_every_fs: float = Field(200.0, gt=0)
    npt_fs: float = Field(0.0, ge=0, description="NPT run before NVT to find the thermal lattice (0 = none)")
    pressure_gpa: float = 0.0
    bulk_modulus_gpa: float = Field(50.0, gt=0, description="sets the Berendsen barostat's response time only")
    thermostat: Optional[Thermostat] = Field(None, description="NVT thermostat: bussi (global) or langevin (local); None: default_thermostat(nuclei)")
    thermostat_time_fs: float = Field(100.0, gt=0, description="Bussi relaxation time; Langevin friction is its inverse")
    barostat_time_fs: float = Field(1000.0, gt=0)
    seed: int = 0
    threads: int = Field(1, ge=1)
    device: Optional[Device] = Field(None, description="auto, cpu or cuda (None: $MLIP_EXAFS_DEVICE, else auto)")
    nuclei: Nuclei = Field("classical", description="quantum nuclei: see mlip_exafs.quantum")
    beads: Optional[int] = Field(None, ge=1, le=256, description="path-integral beads (default: from the highest frequency and T)")

    @model_validator(mode="after")
    def _thermostat_of_the_nuclei(self) -> "MdSettings":
        if self.thermostat is not None and self.nuclei == "path-integral" and "thermostat" in self.model_fields_set:
            raise UserError(f"{setting('thermostat')} {self.thermostat} is not used by path-integral MD, which i-PI thermostats with PILE-L "
                            f"(time {setting('thermostat_time_fs')}; docs/md.md); leave {setting('thermostat')} out")
        if self.thermostat is None:
            self.thermostat = default_thermostat(self.nuclei)
        return self

    @model_validator(mode="after")
    def _nothing_given_is_ignored(self) -> "MdSettings":
        """Refuse a setting the run would record in md.json but not use. Only values set to something unused are
        refused: a study plan leaves ``beads`` at None and ``pressure_gpa``/``checkpoint_every_fs`` unset."""
        if self.beads is not None and self.nuclei != "path-integral":
            raise UserError(f"{setting('beads')} {self.beads} is used only by path-integral MD, but this run has {self.nuclei} nuclei; "
                            f"set {setting('nuclei')} path-integral, or leave {setting('beads')} out")
        if self.pressure_gpa != 0 and self.npt_fs == 0:
            raise UserError(f"{setting('pressure_gpa')} {self.pressure_gpa:g} GPa is the NPT barostat's pressure, but this run has no NPT "
                            f"({setting('npt_fs')} 0); run NPT first ({setting('npt_fs')} above 0), or leave {setting('pressure_gpa')} out")
        if "checkpoint_every_fs" in self.model_fields_set:  # the default (200 fs) is rounded to whole steps, as it always was
            steps = round(self.checkpoint_every_fs / self.timestep_fs)  # the tolerance of mlip_exafs.md.schedule_of
            if steps < 1 or abs(steps * self.timestep_fs - self.checkpoint_every_fs) > 1e-6 * max(1.0, self.checkpoint_every_fs):
                raise UserError(f"checkpoint interval ({setting('checkpoint_every_fs')}) {self.checkpoint_every_fs:g} fs is not a whole number of "
                                f"{self.timestep_fs:g} fs timesteps; choose a multiple of the timestep")
        return self

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return comparable_settings(self.model_dump(exclude=RUNTIME_ONLY))


def default_thermostat(nuclei: str) -> Thermostat:
    """Langevin for ``corrected`` nuclei, Bussi otherwise.

    A corrected σ² is only as good as the classical σ² of each mode beneath it. Bussi's global
    rescaling leaves a stiff, nearly harmonic crystal's mode energies unequilibrated for ps (bcc W
    with CHGNet: corrected up to 11–20 % off path integrals per shell, on Langevin within 1.5–4 %; docs/md.md), and
    the correction unfolds Langevin's line broadening (:func:`mlip_exafs.quantum.undamped_modes`).
    Classical runs keep Bussi, so that their runs and study steps stay what they were.
    """
    return "langevin" if nuclei == "corrected" else "bussi"


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without the later-added ones at their defaults, so runs made before them still match.

    The thermostat: a run recorded without one ran Bussi (the only one then), an unset one (None, as a
    study plan may leave it) is :func:`default_thermostat`. It is left out at Bussi, except for
    ``corrected`` nuclei, whose default is Langevin: there it always stays, so that a Bussi run is never
    taken for a Langevin one (or rebuilt as one from a study step's parameters).
    """
    settings = dict(settings)
    if "nuclei" in settings or "thermostat" in settings:
        nuclei = settings.get("nuclei", "classical")
        thermostat = settings.get("thermostat", "bussi")
        settings["thermostat"] = default_thermostat(nuclei) if thermostat is None else thermostat
    keep = {"thermostat"} if settings.get("nuclei") == "corrected" else set()
    return {k: v for k, v in settings.items() if k in keep or not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}


# ---------------------------------------------------------------- finetune and learning curve

FreezeMode = Literal["none", "readout", "energy-scale"]
DEFAULT_LR = {"none": 3e-3, "readout": 3e-3, "energy-scale": 1e-2}  # per freeze mode: one scalar trains faster than a network
EPOCHS_MAX, EPOCHS_MIN, STRUCTURE_PASSES = 100, 40, 2500  # the epochs rule (epochs_for_n)


def epochs_for_n(n: int) -> int:
    """About 2500 structure-passes per run, between 40 and 100 epochs (Deng: 100).

    Small-N runs keep the paper's 100 epochs; at N = 24 the recipe bench
    measured 100 epochs 14 % better than 42, so larger N get 2500 passes but
    at least 40 epochs (N = 100: 40), which keeps a 7 N x 3 seed curve to a
    few hours on one CPU core.
    """
    return int(min(EPOCHS_MAX, max(EPOCHS_MIN, math.ceil(STRUCTURE_PASSES / n))))


class FinetuneRecipe(BaseModel):
    """How to train; everything here enters the run's identity (inputs hash)."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    epochs: int | None = Field(None, ge=1, description="None: epochs_for_n(n)")
    learning_rate: float | None = Field(None, gt=0, description="None: DEFAULT_LR[freeze]")
    final_lr_fraction: float = Field(0.01, gt=0, le=1)
    energy_weight: float = Field(0.1, ge=0)
    force_weight: float = Field(100.0, gt=0)
    stress_weight: float = Field(1.0, ge=0)
    batch_size: int = Field(4, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    freeze: FreezeMode = "none"


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    potential: str = "chgnet"
    train: str
    n: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    recipe: FinetuneRecipe = Field(default_factory=FinetuneRecipe)  # a factory: an instance would build the model at import
    threads: int = Field(1, ge=1)
    device: Device | None = Field(None, description="auto, cpu or cuda (None: $MLIP_EXAFS_DEVICE, else auto); like threads, not part of the run's identity")


class LearningCurveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    potential: str = "chgnet"
    train: str
    test: str
    ns: list[int] = Field([1, 2, 5, 10, 20, 50, 100], min_length=1)  # the paper's N
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    recipe: FinetuneRecipe = Field(default_factory=FinetuneRecipe)  # a factory: an instance would build the model at import
    forgetting_structure: str = "w-bcc"
    forgetting_test: str | None = None  # optional DFT dataset outside the training chemistry (e.g. datasets/w-bcc)
    threads: int = Field(1, ge=1)

    @field_validator("ns", "seeds")
    @classmethod
    def _each_once(cls, values: list[int], info) -> list[int]:
        """Two equal N (or seeds) are one step run twice at once, which the second finds locked after hours."""
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"gives {', '.join(map(str, twice))} more than once; give each value once")
        if info.field_name == "ns" and min(values) < 1:
            raise ValueError("every N must be at least 1")
        return values


# ---------------------------------------------------------------- analysis

DEFAULT_SHELL_RMAX_A = 4.5  # first shells, the ones an EXAFS fit resolves


def refuse_supercell_alone(settings: BaseModel, structure_key: str, instead: str) -> None:
    """``<structure_key>_supercell`` repeats ``<structure_key>``: given alone it would be recorded and unused."""
    supercell_key = f"{structure_key}_supercell"
    supercell = getattr(settings, supercell_key)
    if supercell is not None and getattr(settings, structure_key) is None:
        raise UserError(f"{setting(supercell_key)} {supercell} repeats the ideal structure of {setting(structure_key)}, which is not given "
                        f"({instead}); give {setting(structure_key)} too, or leave {setting(supercell_key)} out")


def element_case(symbol: str | None) -> str | None:
    """'w' is W, as compare reads an absorber: analyze, exafs and compare take any case."""
    return symbol.strip().capitalize() if symbol else symbol


class AnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    absorber: Optional[str] = Field(None, description="element whose shells are reported; None: the only element, or the only one heavier than Ar")
    reference: Optional[str] = Field(None, description="ideal structure (built-in or file); default: average of each trajectory")
    reference_supercell: Optional[str] = None
    labels: Optional[list[str]] = Field(None, description="one name per trajectory for tables and plots")
    shell_rmax_a: Optional[float] = Field(None, gt=0, description=f"whole shells up to this radius are reported (at most half the cell width; moved into the gap between shells, as the EXAFS stage cuts); None: {DEFAULT_SHELL_RMAX_A:g} Å or half the cell width")
    shell_tol_a: float = Field(SHELL_TOL_A, gt=0, description="reference distances closer than this belong to one shell")
    rdf_rmax_a: float = Field(6.0, gt=0)
    rdf_bin_a: float = Field(0.02, gt=0)
    angle_bin_deg: float = Field(1.0, gt=0)

    @field_validator("absorber")
    @classmethod
    def _symbol_case(cls, absorber: str | None) -> str | None:
        return element_case(absorber)

    @model_validator(mode="after")
    def _supercell_of_a_reference(self) -> "AnalysisSettings":
        """Without a reference each trajectory's own average is the reference: a supercell would be recorded and unused."""
        refuse_supercell_alone(self, "reference", "each trajectory's average is the reference")
        return self


# ---------------------------------------------------------------- exafs

ExafsEngine = Literal["fast", "feff"]  # fast: our own sum over the FEFF paths of each frame; feff: FEFF8L per frame
DEFAULT_RMAX_A = 6.0  # the cut when none is given (lowered to half the cell width, then moved into a gap)


class FTWindowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    kmin_inv_a: float = 3.0
    kmax_inv_a: float = 15.0
    dk_inv_a: float = 1.0
    kweight: int = 2

    def window(self) -> FTWindow:
        return FTWindow(self.kmin_inv_a, self.kmax_inv_a, self.dk_inv_a, self.kweight)


class ExafsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    absorber: Optional[str] = Field(None, description="Absorbing element; None: the only element of the snapshots, or the only one heavier than Ar.")
    edge: Optional[str] = Field(None, description="Absorption edge; None: K up to Z = 50 (Sn), L3 above (spectra.default_edge).")
    rmax_a: Optional[float] = Field(None, gt=1.0, description=f"Largest half path length kept (Å); None: {DEFAULT_RMAX_A:g} Å or half the cell width. Moved into a gap when it is near a shell.")
    engine: ExafsEngine = "fast"
    nleg: int = Field(4, ge=2, le=4, description="Most legs per path (FEFF NLEG).")
    scf_radius_a: Optional[float] = Field(4.5, gt=0, description="FEFF SCF radius (Å); None = overlapped atoms, no SCF.")
    ideal: Optional[str] = Field(None, description="Ideal structure (file or built-in + supercell) instead of the frame average.")
    ideal_supercell: Optional[str] = None
    max_frames: Optional[int] = Field(None, ge=1)
    max_absorbers: Optional[int] = Field(None, ge=1)
    n_blocks: int = Field(10, ge=2, description="Frame blocks for the error band.")
    ft: FTWindowSettings = Field(default_factory=lambda: FTWindowSettings())

    @field_validator("edge")
    @classmethod
    def _edge_upper(cls, edge: str | None) -> str | None:
        """'l3' is L3, as compare reads it."""
        return edge.strip().upper() if edge else edge

    @field_validator("absorber")
    @classmethod
    def _symbol_case(cls, absorber: str | None) -> str | None:
        return element_case(absorber)

    @model_validator(mode="after")
    def _supercell_of_an_ideal(self) -> "ExafsSettings":
        """Without an ideal structure the frame average is the reference: a supercell would be recorded and unused."""
        refuse_supercell_alone(self, "ideal", "the frame average is the reference")
        return self


# ---------------------------------------------------------------- compare


R_WINDOW_BELOW_NEXT_SHELL_A = 0.5  # a shell fit's R range ends this far below the next shell's true distance (exafs.fit)


class CompareSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)

    absorber: Optional[str] = Field(None, description="absorbing element; None: the spectrum's header, else the theory's exafs.json")
    edge: Optional[str] = Field(None, description="edge; None: the spectrum's header, else the theory's, else K up to Sn and L3 above")
    e0_ev: Optional[float] = Field(None, gt=0, description="the experiment's E0 (eV); None: larch's (maximum of dμ/dE)")
    s02_bounds: tuple[float, float] = Field((0.05, 3.0), description="fit bounds of S0²: wide, so that a wrong disorder shows as an unphysical S0²")
    kmin_inv_a: float = Field(3.0, ge=0)
    kmax_inv_a: float = Field(14.0, gt=0)
    dk_inv_a: float = Field(1.0, ge=0)
    kweight: int = Field(2, ge=0, le=3)
    rmin_a: float = Field(1.0, ge=0)
    rmax_a: float = Field(5.0, gt=0)
    rbkg_a: float = Field(1.0, gt=0, description="autobk background cutoff (Å)")
    de0_bound_ev: float = Field(20.0, gt=0)
    fit_shells: int = Field(0, ge=0, le=6, description="also fit the experiment's first K shells (0: no shell fit)")
    third_cumulant: bool = Field(False, description="shell fit: a third cumulant for the first shell")
    fit_rmax_a: Optional[float] = Field(None, gt=0, description=f"shell fit: end of the R range (Å); None: {R_WINDOW_BELOW_NEXT_SHELL_A:g} Å below the next shell")
    structure: Optional[str] = Field(None, description="shell fit: the ideal crystal (built-in name or file)")

    @model_validator(mode="after")
    def _ranges(self):
        if self.kmin_inv_a >= self.kmax_inv_a:
            raise UserError(f"{setting('kmin_inv_a')} {self.kmin_inv_a:g} Å⁻¹ must be below {setting('kmax_inv_a')} {self.kmax_inv_a:g} Å⁻¹; fix the k range")
        if self.rmin_a >= self.rmax_a:
            raise UserError(f"{setting('rmin_a')} {self.rmin_a:g} Å must be below {setting('rmax_a')} {self.rmax_a:g} Å; fix the R range")
        if not 0 < self.s02_bounds[0] < self.s02_bounds[1]:
            raise UserError(f"{setting('s02_bounds')} must be two numbers 0 < low < high; fix them")
        if self.rbkg_a > self.rmin_a:  # autobk removes everything below rbkg: the fit would fit what was removed
            raise UserError(f"{setting('rbkg_a')} ({self.rbkg_a:g} Å) must not exceed {setting('rmin_a')} ({self.rmin_a:g} Å): the background "
                            "removal takes out what lies below rbkg; about 1 Å for both")
        return self

    @model_validator(mode="after")
    def _shell_fit_settings_need_the_shell_fit(self) -> "CompareSettings":
        """structure, third_cumulant and fit_rmax_a are read only by the shell fit: without it they would be recorded and unused."""
        given = {"structure": self.structure is not None, "third_cumulant": self.third_cumulant, "fit_rmax_a": self.fit_rmax_a is not None}
        unused = [name for name, is_given in given.items() if is_given] if not self.fit_shells else []
        if unused:
            name = unused[0]
            raise UserError(f"{setting(name)} is a setting of the shell fit, which runs only with {setting('fit_shells')} above 0; "
                            f"give {setting('fit_shells')} K to fit the experiment's first K shells, or leave {setting(name)} out")
        return self

    def window(self, kmax_inv_a: float | None = None) -> FTWindow:
        return FTWindow(self.kmin_inv_a, kmax_inv_a or self.kmax_inv_a, self.dk_inv_a, self.kweight)
