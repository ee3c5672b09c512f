"""YAML -> pydantic: one place that turns config files into typed settings."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mlip_exafs.errors import UserError

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: Path, what: str = "config file") -> dict:
    """A YAML file that must hold a mapping; every failure is a one-line error."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping of settings (key: value lines)")
    return data


def load_yaml_model(model: type[M], path: Path) -> M:
    """Read ``path`` into ``model``; unknown keys and wrong types are one-line errors."""
    return validate_model(model, read_yaml_mapping(path), str(path))


def validate_model(model: type[M], data: object, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if err["type"] == "extra_forbidden":
            raise UserError(f"{where}: unknown key '{loc}'{more}; remove it or check its spelling") from None
        raise UserError(f"{where}: '{loc}' {err['msg'].lower()}{more}; fix that value") from None
