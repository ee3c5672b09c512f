"""YAML -> pydantic: one place that turns config files into typed settings."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mlip_exafs.errors import UserError, setting

M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor': keys given beside it override the merged ones
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first_line: int, line: int):
        where = f"on line {line}" if line == first_line else f"on lines {first_line} and {line}"
        super().__init__(f"key '{key}' is given twice, {where}")
        self.key, self.line = key, line


def read_yaml_mapping(path: Path, what: str = "config file") -> dict:
    """A YAML file that must hold a mapping; every failure is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; give the YAML file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file (it holds binary data); give the YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc}); check the path and its permissions") from None
    except DuplicateKey as exc:
        raise UserError(f"{what} {path}: {exc}; keep one (YAML would silently use the last)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping of settings (key: value lines)")
    return data


def load_yaml_model(model: type[M], path: Path) -> M:
    """Read ``path`` into ``model``; unknown keys and wrong types are one-line errors."""
    return validate_model(model, read_yaml_mapping(path), str(path), keys_are_settings=False)


def validate_model(model: type[M], data: object, where: str, keys_are_settings: bool = True) -> M:
    """``data`` as ``model``; a bad value is one line naming its key.

    ``keys_are_settings``: the keys are the stage's settings (a verb's options, a study step's settings), so the
    key is marked (:func:`errors.setting`) and the CLI or the study names it as its flag or YAML key; False for
    a YAML file's own keys, which are already the user's terms.
    """
    check_numbers(data, where, keys_are_settings=keys_are_settings)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise user_error_of(exc, where, keys_are_settings) from None


def field_of(model: type[BaseModel], name: str, description: str | None = None) -> FieldInfo:
    """A stage setting's field (default, bounds, description) for a study plan that exposes it: each default is
    defined once, by the stage that uses it, and the plan cannot drift from it."""
    info = copy.copy(model.model_fields[name])
    if description is not None:
        info.description = description
    return info


def user_error_of(exc: ValidationError, where: str, keys_are_settings: bool = True) -> UserError:
    """A pydantic error as the one line a user reads: which key, what is wrong with it, what to do."""
    err = exc.errors()[0]
    loc = _key_text(err["loc"], keys_are_settings)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        return UserError(f"{where}: unknown key {loc}{more}; remove it or check its spelling")
    message = err["msg"].removeprefix("Value error, ")  # a validator's own sentence, not pydantic's label for it
    message = message[:1].lower() + message[1:]  # only the first letter: 'Å' and 'L3' stay as written
    if err["type"] in BOUND_ERRORS and err["loc"]:
        message += unit_of(str(err["loc"][-1]))
    subject = f"{loc} " if err["loc"] else ""
    return UserError(f"{where}: {subject}{message}{more}; fix that value")


BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
UNIT_SUFFIXES = {"_inv_a": "Å⁻¹", "_a2": "Å²", "_a": "Å", "_fs": "fs", "_ps": "ps", "_k": "K", "_gpa": "GPa", "_ev": "eV", "_deg": "°",
                 "_thz": "THz", "_ry": "Ry"}  # the project's names carry their unit; longest suffixes first


def unit_of(key: str) -> str:
    """' fs' for 'timestep_fs': a bound in an error is in the setting's unit, which the message should say."""
    return next((f" {unit}" for suffix, unit in UNIT_SUFFIXES.items() if key.endswith(suffix)), "")


def _key_text(loc: tuple, keys_are_settings: bool) -> str:
    """The key of a bad value: a stage setting marked for the front end to name (an item of it as [i]), else quoted."""
    if keys_are_settings and loc and isinstance(loc[0], str):
        return setting(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    return "'" + (".".join(str(p) for p in loc) or "(top level)") + "'"


LARGEST_SETTING = 1e9  # no setting in its unit (K, fs, Å, eV, GPa, counts) means anything above; 1e400 or 1e30 fs crashed or ran forever
LARGEST_SEED = 2**32 - 1  # numpy's SeedSequence and torch take any seed in 0 .. 2^32 - 1
SEED_KEYS = ("seed", "seeds")
THREAD_KEYS = ("threads", "mpi_ranks")  # None means 'the default'; a number must be at least 1


def check_numbers(data: object, where: str, loc: tuple = (), keys_are_settings: bool = True) -> None:
    """Every number of a config or of a verb's options: finite, at most 1e9 in size, seeds in 0 .. 2^32 - 1, threads ≥ 1.

    One check for every verb and config, before any model is loaded or any file
    written (was: NaN/inf or 1e400 slipped past 'greater than 0' and crashed or
    blew up later; a seed of -1 crashed numpy). Nested mappings and lists are
    checked too; values already validated (pydantic models) are left alone.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            check_numbers(value, where, (*loc, key), keys_are_settings)
        return
    if isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            check_numbers(value, where, (*loc, i), keys_are_settings)
        return
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        return
    name = _key_text(loc, keys_are_settings)
    if isinstance(data, float) and not math.isfinite(data):
        raise UserError(f"{where}: {name} is {data}, not a finite number; give a finite value")
    if loc and loc[-1] in THREAD_KEYS and data < 1:
        raise UserError(f"{where}: {name} = {data:g} must be at least 1; give a positive number (or leave it out for the default)")
    if any(str(p) in SEED_KEYS for p in loc):
        if not 0 <= data <= LARGEST_SEED:
            raise UserError(f"{where}: {name} = {data} is not a valid seed; give a whole number from 0 to {LARGEST_SEED}")
    elif abs(data) > LARGEST_SETTING:
        raise UserError(f"{where}: {name} = {data:.3g} is too large (more than {LARGEST_SETTING:g}); give a value in the setting's unit, e.g. fs for times")
