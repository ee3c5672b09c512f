"""The protocol every model family implements, and the handle the rest of the code holds.

A family (CHGNet, SevenNet, ...) knows how to load its pretrained weights, make
an ASE calculator (and a faster one for MD where it has one), predict energy,
forces and stress for a batch of structures, which elements it covers, and how
to put a model into a plain-weights checkpoint and back. Nothing outside
``potentials/`` needs to know which family a model belongs to: it holds a
:class:`Potential` and calls its methods. Training lives in ``finetune/``'s
family adapters, which take the same handle (see docs/potentials.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import chemical_symbols

from mlip_exafs.errors import UserError
from mlip_exafs.units import ase_stress_to_gpa, voigt_to_matrix


@dataclass(frozen=True)
class Pretrained:
    """A registered name: which family, which of its shipped weights, and what they were trained on."""

    name: str  # what users type: --potential NAME
    family: str
    weights: str  # the family's own name for the weights ('0.3.0', '7net-l3i5')
    trained_on: str
    description: str
    options: dict = field(default_factory=dict)  # family-specific, e.g. SevenNet-MF's fidelity head


class ModelFamily(ABC):
    """One model family. ``model`` is whatever object the family uses for a loaded model."""

    name: ClassVar[str]  # recorded in checkpoints
    pretrained: ClassVar[tuple[Pretrained, ...]] = ()

    @property
    def checkpoint_format(self) -> str:
        return f"mlip-exafs-{self.name}-v1"

    @abstractmethod
    def load_pretrained(self, entry: Pretrained, device: str) -> Any:
        """The shipped weights of ``entry`` on ``device`` (offline)."""

    @abstractmethod
    def calculator(self, model: Any, device: str) -> BaseCalculator:
        """A general ASE calculator: energy, forces and stress."""

    def md_calculator(self, model: Any, device: str) -> BaseCalculator:
        """The calculator for MD; a family with a faster path for many force calls overrides this.

        An MD calculator may expose ``compute_stress``: the md stage sets it only while a barostat needs stress.
        """
        return self.calculator(model, device)

    def predict_efs(self, model: Any, frames: list[Atoms], device: str) -> list[dict]:
        """Per structure: ``e`` (eV/atom), ``f`` (eV/Å), ``s`` (GPa 3x3, tensile positive; None if the calculator has no stress).

        Default: one calculator call per structure; a family with a batched predictor overrides it.
        """
        calc = self.calculator(model, device)
        has_stress = "stress" in calc.implemented_properties
        preds = []
        for atoms in frames:
            probe = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            probe.calc = calc
            stress = voigt_to_matrix(ase_stress_to_gpa(probe.get_stress(voigt=True))) if has_stress else None
            preds.append({"e": probe.get_potential_energy() / len(probe), "f": probe.get_forces(), "s": stress})
        return preds

    def elements(self, model: Any) -> set[int] | None:
        """Atomic numbers the model was trained on; None when the family cannot tell."""
        return None

    def checkpoint_payload(self, model: Any) -> dict:
        """Plain tensors and Python values only (``torch.load(weights_only=True)`` must read them back)."""
        raise UserError(f"models of family '{self.name}' cannot be saved as mlip-exafs checkpoints; fine-tune a registered family")

    def from_checkpoint(self, payload: dict, device: str) -> Any:
        raise UserError(f"family '{self.name}' has no checkpoint format; use a checkpoint written by 'mlip-exafs finetune'")


@dataclass
class Potential:
    """A loaded model with its family and device: what stages hold instead of a bare model."""

    spec: str  # what the user gave: a name, a checkpoint path, or python:MODULE:CALLABLE
    identity: str  # for provenance and caches (see potentials.potential_id)
    family: ModelFamily
    model: Any
    device: str
    checkpoint_metadata: dict = field(default_factory=dict)  # what a fine-tuned checkpoint recorded (base potential, offsets)

    @property
    def family_name(self) -> str:
        return self.family.name

    def calculator(self) -> BaseCalculator:
        return self.family.calculator(self.model, self.device)

    def md_calculator(self) -> BaseCalculator:
        return self.family.md_calculator(self.model, self.device)

    def predict_efs(self, frames: list[Atoms]) -> list[dict]:
        return self.family.predict_efs(self.model, frames, self.device)

    def check_elements(self, atoms: Atoms) -> None:
        """Refuse a structure with an element the model never saw, before any compute."""
        known = self.family.elements(self.model)
        if known is None:
            return
        missing = sorted(set(atoms.get_chemical_symbols()) - {chemical_symbols[z] for z in known})
        if missing:
            raise UserError(f"potential '{self.spec}' does not cover element(s) {', '.join(missing)}; choose a potential trained on them")
