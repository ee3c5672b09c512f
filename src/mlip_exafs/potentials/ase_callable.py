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
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ase.calculators.calculator import BaseCalculator

from mlip_exafs.errors import UserError
from mlip_exafs.potentials.base import ModelFamily, Pretrained

PREFIX = "python:"
EXAMPLE = "python:ase.calculators.emt:EMT"


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
    pairs = [part for part in query.split("&") if part]
    if any("=" not in part for part in pairs):
        raise UserError(f"the arguments of potential '{spec}' must be key=value pairs joined by &; e.g. {EXAMPLE}?asap_cutoff=True")
    return CallableSpec(module, attribute, {key: _literal(value) for key, value in parse_qsl(query, keep_blank_values=True)})


def _literal(text: str):
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
        raise UserError(f"potential '{spec}': cannot import module '{parsed.module}' ({_first_line(exc)}); install it in this environment or fix the spec") from None
    factory = getattr(module, parsed.attribute, None)
    if factory is None or not callable(factory):
        what = "has no" if factory is None else "has a non-callable"
        raise UserError(f"potential '{spec}': module '{parsed.module}' {what} '{parsed.attribute}'; name a class or function that returns an ASE calculator")
    try:
        calc = factory(**parsed.kwargs)
    except Exception as exc:  # user code: any failure becomes one line
        raise UserError(f"potential '{spec}': {parsed.module}.{parsed.attribute}(**{parsed.kwargs}) failed ({type(exc).__name__}: {_first_line(exc)}); fix its arguments") from None
    if not isinstance(calc, BaseCalculator):
        raise UserError(f"potential '{spec}': {parsed.module}.{parsed.attribute} returned a {type(calc).__name__}, not an ASE calculator; point to a callable that returns one")
    return calc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AseCallableFamily(ModelFamily):
    """The 'model' is the calculator the callable returned; it is shared by every use of the potential."""

    name = "python"
    pretrained: tuple[Pretrained, ...] = ()

    def load_pretrained(self, entry: Pretrained, device: str):
        raise UserError(f"'{entry.name}' is not a python: potential")  # nothing is registered under this family

    def load(self, spec: str) -> BaseCalculator:
        return make_calculator(spec)

    def calculator(self, model: BaseCalculator, device: str) -> BaseCalculator:
        return model
