"""Typed configuration: one dataclass per stage, read from YAML and the command line.

Each stage config is a plain dataclass whose fields carry their help text as the docstring
written right under the field (the convention tyro reads, as in cleanrl). A stage's config is
built in three layers, later ones winning: the dataclass defaults, a YAML file
(``--config run.yaml``), and command-line flags (``--lr 1e-5``). Cross-field checks live in one
place, the dataclass's ``validate`` method, which raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the reason."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of field name -> value (nested dataclasses as nested mappings)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys with the list of known ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})


def _coerce(value: Any, hint: Any) -> Any:
    """YAML gives lists and strings: turn them into the tuples and Paths the field declares."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner) for v in value)
    if isinstance(value, str) and (hint is Path or Path in args):
        return Path(value)
    if isinstance(value, (str, int)) and not isinstance(value, bool) and (hint is float or float in args):
        try:  # YAML 1.1 reads "2e-5" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}") from None
    return value


def split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Pull ``--config PATH`` (or ``--config=PATH``) out of argv."""
    rest, path, it = [], None, iter(argv)
    for arg in it:
        if arg == "--config":
            path = next(it, None)
            if path is None:
                raise ConfigError("--config needs a path to a YAML file")
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return path, rest


def parse(cls: type[T], argv: Sequence[str], prog: str, description: str | None = None) -> T:
    """Parse a stage config from YAML (``--config``) and flags; validate; return it.

    ``--help`` lists every field with the help text written beside it in the dataclass.
    """
    import tyro

    path, rest = split_config_flag(argv)
    default = from_dict(cls, load_yaml(path), source=str(path)) if path else None
    config = tyro.cli(cls, args=rest, default=default, prog=prog, description=description)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (Paths become strings)."""
    out = dataclasses.asdict(config)
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def check(condition: bool, field: str, reason: str) -> None:
    """Raise :class:`ConfigError` ``"field: reason"`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}: {reason}")
