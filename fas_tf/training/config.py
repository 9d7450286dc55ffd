"""Settings as one list: a dataclass whose fields carry their help text, turned into absl flags
and read from recipe files.

A settings field is declared once with :func:`setting` (default, help, optional choices);
:func:`define_flags` makes one flag per field (the flag's type from the field's annotation),
:func:`read_recipe` reads a recipe (a JSON or YAML mapping of field names to values, e.g.
``recipes/default.yaml``) and :func:`config_from_flags` merges them: dataclass default < recipe
< flags given on the command line. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fas_tf.errors import UsageError

T = TypeVar("T")
RECIPE_SUFFIXES = (".json", ".yaml", ".yml")


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            choices: Iterable[str] | None = None, flag: bool = True, recipe: bool = True,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A settings field: ``help`` becomes the flag's help text, ``choices`` makes it an enum;
    ``flag=False`` keeps it out of the command line (library-only settings), ``recipe=False``
    out of recipes (how a run is driven, not what it trains: e.g. ``resume``)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "flag": flag,
                "recipe": recipe}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``list[str]`` -> list, ``bool`` -> bool."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) or annotation


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def define_flags(cls: type, flag_values=None) -> None:
    """One absl flag per :func:`setting` field of ``cls`` (bool, integer, float, list, enum or
    string by the field's type), with the field's default and help text."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              list: flags.DEFINE_list, str: flags.DEFINE_string}
    for f, kind in _fields(cls):
        if not f.metadata.get("flag", False):
            continue
        default, text = _default(f), f.metadata["help"]
        if f.metadata.get("choices"):
            flags.DEFINE_enum(f.name, default, list(f.metadata["choices"]), text, flag_values=fv)
        else:
            if kind is list:
                default = default or None  # absl: an empty list flag is None
            define[kind](f.name, default, text, flag_values=fv)


def _coerce(name: str, kind: Any, value: Any, choices: tuple[str, ...] | None) -> Any:
    """A recipe value as the field's type; ValueError naming what is wrong."""
    if value is None:
        return None
    if kind is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{name}: expected a list of names, got {value!r}")
        return [v.strip() for v in items if v.strip()]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def read_recipe(path: str | os.PathLike, cls: type) -> dict[str, Any]:
    """The settings of a recipe file for ``cls``: a JSON or YAML mapping of field names to values
    (a run's ``config.json``, whose settings are under ``"config"``, works too).

    Raises UsageError (one line naming the file) for a missing or unreadable file, an unknown
    setting, a value of the wrong type or a flag-only field.
    """
    path = Path(path)
    if path.suffix not in RECIPE_SUFFIXES:
        raise UsageError(f"{path}: a recipe is a .json, .yaml or .yml file")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as err:
        raise UsageError(f"{path}: cannot read the recipe ({err.strerror or err})") from err
    except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
        raise UsageError(f"{path}: not a recipe ({' '.join(str(err).split())})") from err
    known = {f.name: (f, kind) for f, kind in _fields(cls)}
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "versions" in data:
        data = {k: v for k, v in data["config"].items()  # a run's config.json: its recipe part
                if k in known and known[k][0].metadata.get("recipe", True)}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe is a mapping of settings to values")
    settings = {}
    for name, value in data.items():
        if name not in known:
            raise UsageError(f"{path}: unknown setting {name!r}")
        f, kind = known[name]
        if not f.metadata.get("recipe", True):
            raise UsageError(f"{path}: {name} is not a recipe setting (give it as a flag)")
        try:
            settings[name] = _coerce(name, kind, value, f.metadata.get("choices"))
        except ValueError as err:
            raise UsageError(f"{path}: {err}") from err
    return settings


def recipe_text(config: Any, comment: str = "") -> str:
    """The recipe YAML of a settings dataclass instance (every recipe setting, in field order;
    ``# comment`` lines first): what :func:`read_recipe` reads back into the same settings."""
    import yaml

    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if f.metadata.get("recipe", True)}
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)


def config_from_flags(cls: type[T], flag_values=None,
                      recipe: Mapping[str, Any] | None = None) -> tuple[T, set[str]]:
    """``cls`` from its defaults, then ``recipe``, then the flags given on the command line;
    also the names of the settings given (recipe or command line)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    values = dict(recipe or {})
    for f, _ in _fields(cls):
        if f.metadata.get("flag", False) and f.name in fv and fv[f.name].present:
            value = fv[f.name].value
            values[f.name] = list(value) if isinstance(value, list) else value
    return cls(**values), set(values)
