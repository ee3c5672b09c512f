"""The one study config: YAML -> pydantic, with named profiles (quick, paper).

A profile is a partial config under ``profiles.NAME`` deep-merged over the
base before validation, so a profile can change any setting and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlip_exafs.compare import CompareSettings
from mlip_exafs.config import field_of, read_yaml_mapping, validate_model
from mlip_exafs.cp2k import Cp2kSettings
from mlip_exafs.dataset import SHIPPED
from mlip_exafs.errors import UserError
from mlip_exafs.exafs.stage import ExafsEngine, ExafsSettings
from mlip_exafs.finetune import FinetuneRecipe, FinetuneSettings, FreezeMode
from mlip_exafs.md import MdSettings, Nuclei, Thermostat
from mlip_exafs.potentials import CHECKPOINT_SUFFIXES
from mlip_exafs.potentials.ase_callable import is_callable_spec
from mlip_exafs.potentials.runtime import Device
from mlip_exafs.settings import BUILTIN_STRUCTURES, SampleSpec
from mlip_exafs.spectra import spectrum_temperature_k


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_a_checkpoint(spec: str) -> str:
    """A study's steps are named and cached by their potential's spec: a checkpoint file swapped under the same name
    would reuse the old model's results."""
    if not is_callable_spec(spec) and Path(spec).suffix in CHECKPOINT_SUFFIXES:
        raise ValueError(f"'{spec}' is a checkpoint file, and a study's steps are cached by the potential's name, not its content; "
                         "use a registered name or python:MODULE:CALLABLE, or run 'mlip-exafs validate' and 'mlip-exafs md' on the checkpoint")
    return spec


class FinetunePlan(_Strict):
    base: str = field_of(FinetuneSettings, "potential", "potential to fine-tune")

    @field_validator("base")
    @classmethod
    def _base_is_a_name(cls, base: str) -> str:
        return _not_a_checkpoint(base)
    n: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100], description="training-set sizes")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    freeze: FreezeMode = field_of(FinetuneRecipe, "freeze")
    epochs: Optional[int] = field_of(FinetuneRecipe, "epochs", "None: the recipe's epochs for each N")


class MdPlan(_Strict):
    finetuned_n: list[int] = Field(default_factory=list, description="fine-tuned models (first seed) that also get MD + EXAFS")
    supercell: str = "6x6x2"
    temperature_k: float = field_of(MdSettings, "temperature_k")
    timestep_fs: float = field_of(MdSettings, "timestep_fs")
    equilibration_fs: float = field_of(MdSettings, "equilibration_fs")
    production_fs: float = field_of(MdSettings, "production_fs")
    snapshot_every_fs: float = field_of(MdSettings, "snapshot_every_fs")
    nuclei: Nuclei = field_of(MdSettings, "nuclei", "quantum nuclei (docs/md.md); corrected needs snapshot_every_fs short enough for the fastest vibration")
    beads: Optional[int] = field_of(MdSettings, "beads")
    npt_fs: Optional[float] = Field(None, ge=0, description="NPT (Berendsen, 0 GPa) before each MD for its temperature's lattice; None: equilibration_fs with several temperatures, 0 with one")
    thermostat: Optional[Thermostat] = field_of(MdSettings, "thermostat", description="NVT thermostat of the MDs (mlip_exafs.md.MdSettings.thermostat); None: its default for md.nuclei")
    temperatures_k: Optional[list[float]] = Field(None, min_length=1, description="temperature series: one MD, analysis and EXAFS per T (the first keeps the one-temperature step names; each spectrum is compared at its own temperature); replaces temperature_k")

    @field_validator("temperatures_k")
    @classmethod
    def _positive_distinct(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and (min(value) <= 0 or len(set(value)) != len(value)):
            raise ValueError("temperatures_k must be distinct temperatures above 0 K")
        return value

    @model_validator(mode="after")
    def _path_integrals_at_fixed_cell(self) -> "MdPlan":
        """i-PI runs NVT: a temperature series' default NPT would stop every path-integral MD step at its start."""
        if self.nuclei == "path-integral" and self.npt_time_fs() > 0:
            raise ValueError("path-integral MD runs at a fixed cell, but this temperature series runs an NPT before each MD "
                             f"(md.npt_fs {self.npt_time_fs():g} fs); set md.npt_fs: 0 (every temperature at the structure's cell), "
                             "or use md.nuclei: corrected, which runs the NPT")
        return self

    def temperatures(self) -> list[float]:
        """The MD temperatures, first one first (it keeps the step names of a one-temperature study)."""
        return list(self.temperatures_k) if self.temperatures_k else [self.temperature_k]

    def npt_time_fs(self) -> float:
        """NPT before each MD, for the lattice of its own temperature: by default the equilibration time when the
        study runs several temperatures (a 10 K MD on the room-temperature cell is strained), none for one."""
        if self.npt_fs is not None:
            return self.npt_fs
        return self.equilibration_fs if len(self.temperatures()) > 1 else 0.0


class ExafsPlan(_Strict):
    edge: str = "L3"
    rmax_a: float = Field(6.0, gt=1.0)
    engine: ExafsEngine = field_of(ExafsSettings, "engine")


class ExperimentPlan(_Strict):
    file: Path
    temperature_k: Optional[float] = Field(None, gt=0, description="the spectrum's temperature, one of md.temperatures_k; None: its XDI header's Sample.temperature")
    kmin_inv_a: float = field_of(CompareSettings, "kmin_inv_a")
    kmax_inv_a: float = field_of(CompareSettings, "kmax_inv_a")
    rmin_a: float = field_of(CompareSettings, "rmin_a")
    rmax_a: float = field_of(CompareSettings, "rmax_a")
    fit_shells: int = Field(2, ge=0, le=6, description="fit the spectrum's first K shells on its own (larch feffit); 0: no fit")

    def window(self) -> dict:
        """The comparison's k and R window (the compare and fit steps' ``window`` parameter)."""
        return self.model_dump(include={"kmin_inv_a", "kmax_inv_a", "rmin_a", "rmax_a"})


class DatasetPlan(_Strict):
    """Sample and CP2K-label a dataset inside the study (for a crystal without shipped labels)."""

    train: SampleSpec = Field(..., description="how to sample the training pool")
    test: SampleSpec = Field(..., description="how to sample the held-out test set (use another seed)")
    cp2k: Cp2kSettings = Field(default_factory=Cp2kSettings)
    chunk: int = Field(4, ge=1, description="structures per labelling step (one Dask task each)")


class StudyConfig(_Strict):
    """Everything a study needs; relative paths are relative to the YAML file."""

    name: str
    structure: str = Field(..., description="built-in crystal or structure file for the MD")
    absorber: str = Field(..., description="absorbing element, e.g. W")
    dataset: Union[str, DatasetPlan, None] = Field(None, description="labelled dataset: shipped name or folder, or a sample+label block; "
                                                   "None: a pristine-only study (no fine-tuning, no validation)")
    pristine: list[str] = Field(default_factory=lambda: ["chgnet"], description="pretrained potentials to compare: registered names or python:MODULE:CALLABLE")
    finetune: FinetunePlan = Field(default_factory=FinetunePlan)
    md: MdPlan = Field(default_factory=MdPlan)
    exafs: ExafsPlan = Field(default_factory=ExafsPlan)
    experiment: list[ExperimentPlan] = Field(default_factory=list, description="measured spectra (one block or a list), each compared with the MD at its temperature")
    threads: Optional[int] = Field(None, ge=1, description="torch threads per task (default: cores / workers)")
    device: Optional[Device] = Field(None, description="auto, cpu or cuda for every model step (default: $MLIP_EXAFS_DEVICE, else auto)")

    @field_validator("pristine")
    @classmethod
    def _pristine_names_are_folder_names(cls, pristine: list[str]) -> list[str]:
        """Each pristine potential names its step folders (validate-NAME, md-NAME, ...)."""
        for spec in pristine:
            _not_a_checkpoint(spec)
            if "/" in spec or spec in ("", ".", ".."):
                raise ValueError(f"pristine potential '{spec}' cannot name a step folder (it has a '/'); use a registered name "
                                 "or python:MODULE:CALLABLE whose arguments hold no path (wrap the path in a module of yours)")
        return pristine

    @field_validator("experiment", mode="before")
    @classmethod
    def _one_block_is_a_list_of_one(cls, experiment):
        """``experiment:`` may be one spectrum's block (as before lists were allowed) or a list of them."""
        return [] if experiment is None else [experiment] if isinstance(experiment, dict) else experiment

    @model_validator(mode="after")
    def _pristine_only_without_dataset(self) -> "StudyConfig":
        """Without a dataset nothing can be fine-tuned or validated: the study runs the pristine potentials' MD only."""
        if self.dataset is None:
            if "finetune" in self.model_fields_set and self.finetune.n:
                raise ValueError("finetune needs a dataset; add a dataset or remove the finetune block (a pristine-only study)")
            if self.md.finetuned_n:
                raise ValueError("md.finetuned_n needs a dataset to fine-tune on; add a dataset or remove md.finetuned_n")
            self.finetune = FinetunePlan(n=[])
        return self

    @model_validator(mode="after")
    def _splits_sample_the_study_structure(self) -> "StudyConfig":
        """A dataset block's split samples the study's own crystal unless it names another cell of it (SampleSpec's
        own default is WS2: a W study would have labelled WS2 for hours)."""
        if isinstance(self.dataset, DatasetPlan):
            for split in ("train", "test"):
                spec = getattr(self.dataset, split)
                if "structure" not in spec.model_fields_set:
                    setattr(self.dataset, split, spec.model_copy(update={"structure": self.structure}))
        return self


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_study_config(path: Path, profile: str | None = None) -> StudyConfig:
    """Read the YAML, apply the profile, resolve relative paths, validate."""
    raw = read_yaml_mapping(path, "study config")
    from mlip_exafs.study.checks import check_profiles  # lazy: import cycle, checks imports study.config at its top

    check_profiles(raw, path)
    profiles = raw.pop("profiles", {}) or {}
    if profile is not None:
        if profile not in profiles:
            raise UserError(f"profile '{profile}' is not in {path}; choose one of: {', '.join(profiles) or '(none defined)'}")
        raw = deep_merge(raw, profiles[profile])
    config = validate_model(StudyConfig, raw, str(path), keys_are_settings=False)
    return _resolve_paths(config, Path(path).resolve().parent)


def _resolve_paths(config: StudyConfig, root: Path) -> StudyConfig:
    def resolve(value: str, names: tuple[str, ...]) -> str:
        """A built-in or shipped name stays a name unless a file of that name lies beside the YAML; any other relative
        path is relative to the YAML, wherever the study is started from (so an error names the path tried)."""
        if Path(value).is_absolute():
            return value
        candidate = root / value
        return value if value.lower() in names and not candidate.exists() else str(candidate)

    update = {"structure": resolve(config.structure, BUILTIN_STRUCTURES)}
    if isinstance(config.dataset, DatasetPlan):
        specs = {split: getattr(config.dataset, split) for split in ("train", "test")}
        specs = {split: spec.model_copy(update={"structure": resolve(spec.structure, BUILTIN_STRUCTURES)}) for split, spec in specs.items()}
        update["dataset"] = config.dataset.model_copy(update=specs)
    elif config.dataset is not None:
        update["dataset"] = resolve(config.dataset, SHIPPED)
    update["experiment"] = [_resolve_spectrum(plan, root, config.md.temperatures()) for plan in config.experiment]
    at = [plan.temperature_k for plan in update["experiment"]]
    if len(set(at)) < len(at):
        twice = next(t for t in at if at.count(t) > 1)
        raise UserError(f"two experiment spectra are at {twice:g} K; a study compares one spectrum per MD temperature, so keep one of them")
    return config.model_copy(update=update)


def _resolve_spectrum(plan: ExperimentPlan, root: Path, temperatures_k: list[float]) -> ExperimentPlan:
    """The spectrum's file (relative to the YAML) and its temperature (given, else its header), one of the MD's."""
    exp_file = plan.file if plan.file.is_absolute() else root / plan.file
    if not exp_file.exists():
        raise UserError(f"experimental spectrum {exp_file} does not exist; fix experiment.file in the config or remove the block")
    temperature_k, source = plan.temperature_k, "temperature_k"
    header_k, text = spectrum_temperature_k(exp_file)
    if temperature_k is not None and header_k is not None and abs(header_k - temperature_k) > HEADER_CONFLICT_K:
        raise UserError(f"experiment {exp_file.name}: temperature_k is {temperature_k:g} K but its header says '{text}' ({header_k:g} K); "
                        "check that this is the spectrum you mean, or fix temperature_k")
    if temperature_k is None:
        temperature_k = header_k
        source = f"its header ('{text}')"
        if temperature_k is None:
            said = f"its header's Sample.temperature is '{text}', not a number" if text else "its header gives no Sample.temperature"
            raise UserError(f"experiment {exp_file.name}: {said}; give the spectrum's temperature_k in its experiment block")
    match = [t for t in temperatures_k if abs(t - temperature_k) < TEMPERATURE_MATCH_K]
    if not match:
        listed = ", ".join(f"{t:g}" for t in temperatures_k)
        raise UserError(f"experiment {exp_file.name} is at {temperature_k:g} K ({source}) but the MD runs at {listed} K; "
                        f"add {temperature_k:g} to md.temperatures_k or set the spectrum's temperature_k")
    return plan.model_copy(update={"file": exp_file, "temperature_k": match[0]})


TEMPERATURE_MATCH_K = 0.5  # a spectrum's temperature matches an MD temperature this close ('25 C' is 298.15 K, not 300 K)
HEADER_CONFLICT_K = 10.0  # a given temperature_k may round its header ('25 C' -> 300), not contradict it (100 K given for a 300 K scan)
