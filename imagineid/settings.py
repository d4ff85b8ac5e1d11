"""Job settings from a file: one reader and one type check for every job's config dataclass.

    values = read_settings("preprocess.yaml")                    # a mapping (YAML or JSON)
    config = settings_from(PreprocessConfig, values)             # unknown keys and wrong types fail here
    config = settings_from(PreprocessConfig, given, base=config) # options given on the command line last

The dataclass's own `__post_init__` checks run on the result, so a file is held to the same rules as the
CLI, the flows and the deployments.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def read_settings(path: str | Path) -> dict[str, Any]:
    """A settings file (YAML, or JSON by its suffix) → its mapping; anything else is a ValueError."""
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a settings file is a mapping of settings, got {type(values).__name__}")
    return values


def settings_from(cls: type[T], values: dict[str, Any], base: T | None = None) -> T:
    """`base` (default: `cls()`) with `values` laid over it, each converted to its field's type."""
    base = cls() if base is None else base
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return replace(base, **{k: typed(k, v, getattr(base, k), known[k].type) for k, v in values.items()})


def typed(key: str, value: Any, current: Any, declared: Any = None) -> Any:
    """`value` as the type of the setting it replaces: ints stay ints (3.0 → 3), floats accept ints, and a
    value of another kind (a string for a number) is an error that names the key."""
    optional = declared is not None and "None" in str(declared)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} cannot be null")
    kind = (
        type(current)
        if current is not None
        else float
        if "float" in str(declared)
        else int
        if "int" in str(declared)
        else str
    )
    if kind in (int, float) and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{key} takes a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key} takes a {kind.__name__}, got {value!r}")
