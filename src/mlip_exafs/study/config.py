"""The one study config: YAML -> pydantic, with named profiles (quick, paper).

A profile is a partial config under ``profiles.NAME`` deep-merged over the
base before validation, so a profile can change any setting and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlip_exafs.config import read_yaml_mapping, validate_model
from mlip_exafs.cp2k import Cp2kSettings
from mlip_exafs.sample import SampleSpec
from mlip_exafs.errors import UserError
from mlip_exafs.md import Thermostat
from mlip_exafs.potentials.runtime import Device


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FinetunePlan(_Strict):
    base: str = Field("chgnet", description="potential to fine-tune")
    n: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100], description="training-set sizes")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    freeze: Literal["none", "readout", "energy-scale"] = "none"
    epochs: Optional[int] = Field(None, ge=1, description="None: the recipe's epochs for each N")


class MdPlan(_Strict):
    finetuned_n: list[int] = Field(default_factory=list, description="fine-tuned models (first seed) that also get MD + EXAFS")
    supercell: str = "6x6x2"
    temperature_k: float = Field(300.0, gt=0)
    timestep_fs: float = Field(2.0, gt=0)
    equilibration_fs: float = Field(2000.0, ge=0)
    production_fs: float = Field(10000.0, gt=0)
    snapshot_every_fs: float = Field(50.0, gt=0)
    nuclei: Literal["classical", "corrected", "path-integral"] = Field("classical", description="quantum nuclei (docs/md.md); corrected needs snapshot_every_fs short enough for the fastest vibration")
    beads: Optional[int] = Field(None, ge=1, le=256, description="path-integral beads; None: the bead rule")
    npt_fs: Optional[float] = Field(None, ge=0, description="NPT (Berendsen, 0 GPa) before each MD for its temperature's lattice; None: equilibration_fs with several temperatures, 0 with one")
    thermostat: Thermostat = Field("bussi", description="NVT thermostat of the MDs (mlip_exafs.md.MdSettings.thermostat)")
    temperatures_k: Optional[list[float]] = Field(None, min_length=1, description="temperature series: one MD, analysis and EXAFS per T (the first keeps the one-temperature step names; compare runs at the first); replaces temperature_k")

    @field_validator("temperatures_k")
    @classmethod
    def _positive_distinct(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and (min(value) <= 0 or len(set(value)) != len(value)):
            raise ValueError("temperatures_k must be distinct temperatures above 0 K")
        return value

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
    engine: Literal["fast", "feff"] = "fast"


class ExperimentPlan(_Strict):
    file: Path
    kmin_inv_a: float = 3.0
    kmax_inv_a: float = 14.0
    rmin_a: float = 1.0
    rmax_a: float = 5.0
    fit_shells: int = Field(2, ge=0, le=6, description="fit the spectrum's first K shells on its own (larch feffit); 0: no fit")


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
    dataset: Union[str, DatasetPlan] = Field(..., description="labelled dataset: shipped name or folder, or a sample+label block")
    pristine: list[str] = Field(default_factory=lambda: ["chgnet"], description="pretrained potentials to compare: registered names or python:MODULE:CALLABLE")
    finetune: FinetunePlan = Field(default_factory=FinetunePlan)
    md: MdPlan = Field(default_factory=MdPlan)
    exafs: ExafsPlan = Field(default_factory=ExafsPlan)
    experiment: Optional[ExperimentPlan] = None
    threads: Optional[int] = Field(None, ge=1, description="torch threads per task (default: cores / workers)")
    device: Optional[Device] = Field(None, description="auto, cpu or cuda for every model step (default: $MLIP_EXAFS_DEVICE, else auto)")

    @field_validator("pristine")
    @classmethod
    def _pristine_names_are_folder_names(cls, pristine: list[str]) -> list[str]:
        """Each pristine potential names its step folders (validate-NAME, md-NAME, ...)."""
        for spec in pristine:
            if "/" in spec or spec in ("", ".", ".."):
                raise ValueError(f"pristine potential '{spec}' cannot name a step folder (it has a '/'); use a registered name "
                                 "or python:MODULE:CALLABLE whose arguments hold no path (wrap the path in a module of yours)")
        return pristine


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_study_config(path: Path, profile: str | None = None) -> StudyConfig:
    """Read the YAML, apply the profile, resolve relative paths, validate."""
    raw = read_yaml_mapping(path, "study config")
    profiles = raw.pop("profiles", {}) or {}
    if profile is not None:
        if profile not in profiles:
            raise UserError(f"profile '{profile}' is not in {path}; choose one of: {', '.join(profiles) or '(none defined)'}")
        raw = deep_merge(raw, profiles[profile])
    config = validate_model(StudyConfig, raw, str(path))
    return _resolve_paths(config, Path(path).resolve().parent)


def _resolve_paths(config: StudyConfig, root: Path) -> StudyConfig:
    def resolve(value: str) -> str:
        candidate = root / value
        return str(candidate) if not Path(value).is_absolute() and candidate.exists() else value

    update = {"structure": resolve(config.structure)}
    if isinstance(config.dataset, DatasetPlan):
        specs = {split: getattr(config.dataset, split) for split in ("train", "test")}
        specs = {split: spec.model_copy(update={"structure": resolve(spec.structure)}) for split, spec in specs.items()}
        update["dataset"] = config.dataset.model_copy(update=specs)
    else:
        update["dataset"] = resolve(config.dataset)
    if config.experiment is not None:
        exp_file = config.experiment.file if config.experiment.file.is_absolute() else root / config.experiment.file
        if not exp_file.exists():
            raise UserError(f"experimental spectrum {exp_file} does not exist; fix experiment.file in the config or remove the block")
        update["experiment"] = config.experiment.model_copy(update={"file": exp_file})
    return config.model_copy(update=update)
