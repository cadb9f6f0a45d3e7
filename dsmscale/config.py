"""Typed job configuration: one pydantic model per job, loadable from YAML.

Unknown keys and wrong types are errors (``extra="forbid"``), reported in one line that names the
config file and the offending key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dsmscale.errors import InputError

C = TypeVar("C", bound="JobConfig")
TYPE_TAGS = {"int", "float", "str", "bool", "list", "tuple", "dict", "none"}


def config_key(loc: tuple) -> str:
    """The dotted key of a validation error, without pydantic's union-member tags
    (``batch_size.constrained-int`` → ``batch_size``)."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (
        p in TYPE_TAGS or re.search(r"[-\[\]()]", p)))]
    return ".".join(parts) or "<root>"


def read_yaml_mapping(path: str | Path) -> dict:
    """The keys of a YAML config file, not yet validated (a part of a config is fine: command
    line flags may complete it); `InputError` if it is unreadable or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read config: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise InputError(path, "config must be a mapping of keys to values")
    return data


class JobConfig(BaseModel):
    """Base of every job's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        """Load and validate a YAML file; raise `InputError` naming the file and the bad key."""
        return cls.from_mapping(read_yaml_mapping(path), source=path)

    @classmethod
    def from_mapping(cls: type[C], data: dict, source: str | Path | None = None) -> C:
        """Validate a mapping (e.g. parsed YAML merged with CLI overrides)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            key = config_key(errors[0]["loc"])
            problems = [e["msg"] for e in errors if config_key(e["loc"]) == key]
            raise InputError(source, f"config key '{key}': {' or '.join(problems)}") from exc

