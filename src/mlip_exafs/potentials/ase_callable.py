"""Any ASE calculator: ``python:MODULE:CALLABLE[?key=value&...]``.

The callable (a calculator class or a factory function) is imported from the
running environment and called with the keyword arguments, once per loaded
potential; it must return an ASE calculator. Values are read as Python
literals where they parse as one (``?default_dtype='float64'&cutoff=5.0``),
else kept as strings (``?model=medium``). This is how a MACE, MatterSim, ORB
or home-made model installed on the user's machine runs the whole MD → EXAFS
→ compare chain; such a potential has no checkpoint format and cannot be
fine-tuned here. The device is the callable's business: pass it as an
argument (``?device=cuda``) if the callable takes one.

What the callable returns runs behind :class:`CheckedCalculator`: a calculator
that raises, returns NaN or arrays of the wrong shape, or lacks a property a run
needs stops the verb with one line naming the spec, not a traceback from deep in
ASE or a NaN that surfaces later as a blown-up MD or a NaN metric.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes

from mlip_exafs.errors import UserError, first_line, setting
from mlip_exafs.potentials.base import ModelFamily, Pretrained
from mlip_exafs.units import matrix_to_voigt

PREFIX = "python:"
EXAMPLE = "python:ase.calculators.emt:EMT"
CHECKED_SHAPES = {"energy": [()], "free_energy": [()], "forces": [("n_atoms", 3)], "stress": [(6,), (3, 3)]}  # ASE's


@dataclass(frozen=True)
class CallableSpec:
    module: str
    attribute: str
    kwargs: dict


def is_callable_spec(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def parse(spec: str) -> CallableSpec:
    """'python:pkg.mod:make?a=1&b=x' -> CallableSpec('pkg.mod', 'make', {'a': 1, 'b': 'x'})."""
    body, _, query = str(spec)[len(PREFIX):].partition("?")
    module, sep, attribute = body.rpartition(":")
    if not (sep and module and attribute):
        raise UserError(f"potential '{spec}' is not python:MODULE:CALLABLE; write e.g. {EXAMPLE}")
    pairs = [part.partition("=") for part in query.split("&") if part]  # as written: no URL decoding ('+' stays '+')
    if any(not sep or not key for key, sep, _ in pairs):
        raise UserError(f"the arguments of potential '{spec}' must be key=value pairs joined by &; e.g. {EXAMPLE}?asap_cutoff=True")
    keys = [key for key, _, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise UserError(f"potential '{spec}' gives {', '.join(twice)} more than once; give each argument once")
    return CallableSpec(module, attribute, {key: _literal(value) for key, _, value in pairs})


SPELLED_CONSTANTS = {"true": True, "false": False, "none": None}  # ?flag=false was the string 'false', which is truthy


def _literal(text: str):
    if text.strip().lower() in SPELLED_CONSTANTS:
        return SPELLED_CONSTANTS[text.strip().lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def make_calculator(spec: str) -> BaseCalculator:
    """Import, call, and check that an ASE calculator came back; every failure is a one-line UserError."""
    parsed = parse(spec)
    try:
        module = importlib.import_module(parsed.module)
    except ImportError as exc:
        raise UserError(f"potential '{spec}': cannot import module '{parsed.module}' ({first_line(exc)}); install it in this environment or fix the spec") from None
    factory = getattr(module, parsed.attribute, None)
    if factory is None or not callable(factory):
        what = "has no" if factory is None else "has a non-callable"
        raise UserError(f"potential '{spec}': module '{parsed.module}' {what} '{parsed.attribute}'; name a class or function that returns an ASE calculator")
    try:
        calc = factory(**parsed.kwargs)
    except Exception as exc:  # user code: any failure becomes one line
        raise UserError(f"potential '{spec}': {parsed.module}.{parsed.attribute}(**{parsed.kwargs}) failed ({type(exc).__name__}: {first_line(exc)}); fix its arguments") from None
    if not isinstance(calc, BaseCalculator):
        raise UserError(f"potential '{spec}': {parsed.module}.{parsed.attribute} returned a {type(calc).__name__}, not an ASE calculator; point to a callable that returns one")
    return calc


class CheckedCalculator(Calculator):
    """A user's calculator behind checks: every failure at compute time is a one-line UserError naming the spec.

    It asks the wrapped calculator for each property and checks what comes back:
    energy one finite number, forces finite (n_atoms, 3), stress finite, 6 Voigt
    components or 3x3 (stored as Voigt, as ASE does). Other properties pass through.
    It implements what the wrapped one implements, so a stage that asks
    ``"stress" in calc.implemented_properties`` still sees a calculator without stress.
    """

    def __init__(self, inner: BaseCalculator, spec: str):
        super().__init__()
        self.inner, self.spec = inner, spec
        self.implemented_properties = list(inner.implemented_properties)

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name not in self.implemented_properties:
            todo = f"run MD without NPT ({setting('npt_fs')} 0: only the barostat needs stress) or use" if name == "stress" else "use"
            raise UserError(f"potential '{self.spec}': its calculator does not compute {name}; {todo} a calculator that does")
        return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        # Forces with every energy: what MD asks next anyway, and a faulty force fails at the first energy
        # (before md writes its first file), not at the first step.
        wanted = list(dict.fromkeys([*properties, *(name for name in ("energy", "forces") if name in self.implemented_properties)]))
        for name in wanted:
            try:
                value = self.inner.get_property(name, self.atoms)
            except Exception as exc:  # user code: any failure becomes one line
                raise UserError(f"potential '{self.spec}': its calculator failed computing {name} of {self.atoms.get_chemical_formula()} "
                                f"({type(exc).__name__}: {first_line(exc)}); fix the calculator or the arguments of the spec") from None
            self.results[name] = self._checked(name, value, self.atoms)

    def _checked(self, name: str, value, atoms: Atoms):
        if name not in CHECKED_SHAPES:
            return value
        shapes = [tuple(len(atoms) if size == "n_atoms" else size for size in shape) for shape in CHECKED_SHAPES[name]]
        try:
            array = np.array(value, dtype=float)
        except (TypeError, ValueError):
            raise UserError(f"potential '{self.spec}': its calculator returned {name} that is not numbers ({type(value).__name__}); "
                            "make it return numbers or numpy arrays") from None
        if name in ("energy", "free_energy") and array.size == 1:
            array = array.reshape(())
        if array.shape not in shapes:
            raise UserError(f"potential '{self.spec}': its calculator returned {name} of shape {array.shape} for {len(atoms)} atoms, expected "
                            f"{' or '.join(map(str, shapes))}; make it return ASE's shapes (energy eV, forces (n_atoms, 3) eV/Å, stress Voigt eV/Å³)")
        if not np.isfinite(array).all():
            raise UserError(f"potential '{self.spec}': its calculator returned non-finite {name} (NaN or inf) for {atoms.get_chemical_formula()}; "
                            "check its model and arguments, and that it covers these elements")
        if name == "stress" and array.shape == (3, 3):
            array = matrix_to_voigt(array)
        return float(array) if array.ndim == 0 else array


class AseCallableFamily(ModelFamily):
    """The 'model' is the calculator the callable returned, behind its checks; it is shared by every use of the potential."""

    name = "python"
    pretrained: tuple[Pretrained, ...] = ()

    def load_pretrained(self, entry: Pretrained, device: str):
        raise UserError(f"'{entry.name}' is not a python: potential")  # nothing is registered under this family

    def load(self, spec: str) -> CheckedCalculator:
        return CheckedCalculator(make_calculator(spec), spec)

    def calculator(self, model: BaseCalculator, device: str) -> BaseCalculator:
        return model
