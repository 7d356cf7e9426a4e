"""Command-line flags generated from a frozen config dataclass, so that a default is written once.

A command declares its settings as a dataclass whose fields carry their help text, unit, choices and flag in
``dataclasses.field(metadata=...)`` (built with :func:`option`). :func:`add_arguments` turns the fields into
argparse flags (a field that is itself a dataclass becomes an argument group), and :func:`from_namespace`
builds the validated dataclass back from the parsed namespace, so ``__post_init__`` checks every value.

Rules of the generated flags:
- ``field_name`` -> ``--field-name`` unless ``flag=`` names another; ``aliases=`` adds more spellings;
- a field without a default is a required flag;
- ``bool`` with default False -> ``store_true``; a bool that defaults to True needs ``negate="--no-x"``
  (``store_false`` under that flag);
- ``tuple[T, ...]`` -> a repeatable flag (``action="append"``), ``nargs="+"`` with ``many=True``; repeats add up;
- ``T | None`` -> a flag of type ``T`` defaulting to None;
- ``--help`` shows every flag's default and unit: ``(default: 10.0 s)``.

No Beam, no torch: the module is imported by every command before anything heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_MISSING: Any = dataclasses.MISSING


def option(default: Any = _MISSING, *, help: str, unit: str | None = None,  # noqa: A002 - argparse's word
           choices: Sequence[Any] | None = None, flag: str | None = None, aliases: Sequence[str] = (),
           metavar: str | None = None, negate: str | None = None, many: bool = False, cli: bool = True,
           group: str | None = None, default_factory: Any = _MISSING) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring for the rules).

    ``cli=False`` keeps a field out of the command line (it keeps its default). ``group`` titles the argument
    group of a nested dataclass field.
    """
    metadata = {"help": help, "unit": unit, "choices": tuple(choices) if choices is not None else None,
                "flag": flag, "aliases": tuple(aliases), "metavar": metavar, "negate": negate, "many": many,
                "cli": cli, "group": group}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The main flag of a field: its ``flag``/``negate`` metadata, else ``--`` + the name with dashes."""
    meta = field.metadata
    return meta.get("negate") or meta.get("flag") or "--" + field.name.replace("_", "-")


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional) of ``T | None`` / ``Optional[T]``; (tp, False) otherwise."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return tp, False


def field_default(field: dataclasses.Field) -> Any:
    """The default of a field (its factory called), or ``dataclasses.MISSING`` for a required one."""
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        factory: Callable[[], Any] = field.default_factory  # type: ignore[assignment]
        return factory()
    return _MISSING


def _help(field: dataclasses.Field, default: Any) -> str:
    meta = field.metadata
    text = meta.get("help") or ""
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if default is _MISSING:
        return f"{text} (required{', in' + unit if unit else ''})".replace("%", "%%")
    if isinstance(default, bool) and meta.get("negate"):
        return f"{text} (default: off)"
    if isinstance(default, bool):
        return f"{text} (default: {'on' if default else 'off'})"
    if default is None or default == ():
        return f"{text} (default: none)".replace("%", "%%")
    shown = default
    if isinstance(shown, tuple):
        shown = " ".join(map(str, shown))
    return f"{text} (default: {shown}{unit})".replace("%", "%%")


def cli_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every field of ``cls`` that is on the command line, nested ones included."""
    hints = typing.get_type_hints(cls)
    found: list[tuple[dataclasses.Field, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            found.extend(cli_fields(tp))  # type: ignore[arg-type]
        else:
            found.append((f, tp))
    return found


def finite_float(text: str) -> float:
    """argparse type for float options: nan and inf are refused (nan slips past every ``x <= 0`` check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _flag_kwargs(cls: type, f: dataclasses.Field, tp: Any) -> dict[str, Any]:
    """argparse keyword arguments of the flag of field ``f`` (type ``tp``) of ``cls`` (rules: module docstring)."""
    meta = f.metadata
    default = field_default(f)
    inner, _ = _unwrap(tp)  # a None default needs nothing more: argparse keeps it when the flag is absent
    kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f, default)}
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if inner is bool:
        if meta.get("negate"):
            if default is not True:
                raise TypeError(f"{cls.__name__}.{f.name}: negate= needs a default of True")
            kwargs.update(action="store_false", default=True)
        else:
            if default not in (False, _MISSING):
                raise TypeError(f"{cls.__name__}.{f.name}: a bool defaulting to True needs negate=")
            kwargs.update(action="store_true", default=False)
        return kwargs
    if typing.get_origin(inner) is tuple:
        element = typing.get_args(inner)[0]
        kwargs.update(type=finite_float if element is float else element, default=None)
        if meta.get("many"):
            kwargs.update(nargs="+", action="extend")
        else:
            kwargs.update(action="append")
    else:
        kwargs["type"] = finite_float if inner is float else inner if inner in (int, str) else str
        if default is not _MISSING:
            kwargs["default"] = default
    if default is _MISSING:
        kwargs["required"] = True
    if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
    return kwargs


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """Add one flag per field of the dataclass ``cls`` (nested dataclasses become argument groups)."""
    hints = typing.get_type_hints(cls)
    root = parser
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(root, argparse.ArgumentParser):
                raise TypeError(f"{cls.__name__}.{f.name}: nested groups deeper than one level")
            group = root.add_argument_group(meta.get("group") or f.name.replace("_", " "))
            add_arguments(group, tp)  # type: ignore[arg-type]
            continue
        target: argparse.ArgumentParser | argparse._ArgumentGroup = root
        if meta.get("group") and isinstance(root, argparse.ArgumentParser):
            if meta["group"] not in groups:
                groups[meta["group"]] = root.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        target.add_argument(flag_name(f), *meta.get("aliases", ()), **_flag_kwargs(cls, f, tp))


def from_namespace(cls: type, namespace: argparse.Namespace | dict[str, Any]) -> Any:
    """The dataclass ``cls`` built from parsed flags; raises ValueError/TypeError from its validation."""
    values = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if f.metadata.get("cli", True) and dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_namespace(tp, values)  # type: ignore[arg-type]
        elif f.metadata.get("cli", True) and f.name in values:
            value = values[f.name]
            inner, _ = _unwrap(tp)
            if typing.get_origin(inner) is tuple:
                value = tuple(value) if value is not None else field_default(f)
                if value is _MISSING:
                    continue
            kwargs[f.name] = value
    return cls(**kwargs)


def option_strings(cls: type) -> list[str]:
    """Every flag spelling the generated parser accepts (for suggestions and for tests)."""
    names: list[str] = []
    for f, _ in cli_fields(cls):
        names += [flag_name(f), *f.metadata.get("aliases", ())]
    return names


def defaults(cls: type) -> dict[str, Any]:
    """{flag: default} of every optional flag of ``cls``, as ``--help`` shows them."""
    return {flag_name(f): field_default(f) for f, _ in cli_fields(cls) if field_default(f) is not _MISSING}


def as_parameters(config: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A config's settings as JSON-ready values (tuples become lists), for stats.json's ``parameters``."""
    skipped = set(skip)
    out = {k: v for k, v in dataclasses.asdict(config).items() if k not in skipped}
    return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def with_flag_names(message: str, cls: type) -> str:
    """``message`` (a settings error) with field names as the user's flags: ``rows_per_shard must be >= 1`` ->
    ``--rows-per-shard must be >= 1``. Names with an underscore are replaced anywhere, a one-word name only as
    the message's first word (``threads must be ...``). Fields of nested configs carry their own flags
    (``deadline_s`` -> ``--deadline``)."""
    flags = {f.name: flag_name(f) for f, _ in cli_fields(cls)}

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        if word in flags and ("_" in word or match.start() == 0):
            return flags[word]
        return word

    return re.sub(r"(?<![-\w])[a-z][a-z0-9_]*(?![-\w])", replace, message)


def check_out_folder(path: str, flag: str = "--out") -> None:
    """ValueError when the output folder ``path`` cannot be a folder: it, or the nearest existing path above it,
    is a file (``os.makedirs`` would fail mid-run with a traceback). URLs (``gs://``...) are not checked."""
    if "://" in path:
        return
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"is below the file {probe}"
        raise ValueError(f"{flag} {path!r} {where}, not a folder: name a folder for the outputs")
