"""Reading the project's TOML files (study files, suite files) with one clear error, and checking
their tables: each stage declares a schema per table (``Key`` per key) next to its parser, and
``check_table`` refuses unknown keys (with a "did you mean"), missing ones, wrong types and ranges."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import QidlabError, did_you_mean


def read_toml(path: str | Path, kind: str) -> dict:
    """The parsed ``path``; a ``QidlabError`` naming the file when it is missing or not TOML.
    ``kind`` names the file in messages (e.g. "study")."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise QidlabError(f"{path}: no such {kind} file") from None
    except IsADirectoryError:
        raise QidlabError(f"{path}: a folder, not a {kind} file") from None
    except PermissionError:
        raise QidlabError(f"{path}: cannot read the {kind} file (permission denied)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{path}: not valid TOML ({exc})") from None


@dataclass(frozen=True)
class Key:
    """What one key of a TOML table may hold.

    ``kind``: "int" (not a bool), "number" (int or float, not a bool), "str", "bool", "list",
    "table" or "any" (the table's parser checks it); ``items``: the kind of a list's elements;
    ``min``/``max``: the range of a number (``above``: ``min`` itself excluded); ``choices``:
    the values allowed; ``required``: the table needs the key."""

    kind: str = "any"
    min: float | None = None
    max: float | None = None
    above: bool = False
    choices: tuple = ()
    items: str | None = None
    required: bool = False


def _is(value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"str": isinstance(value, str), "bool": isinstance(value, bool), "list": isinstance(value, list),
            "table": isinstance(value, dict)}.get(kind, True)


_NOUN = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
         "list": "a list", "table": "a table"}


def _wanted(key: Key) -> str:
    """How a message spells what ``key`` allows (``a positive integer``, ``a number > 0 and <= 1``,
    ``a list of integers >= 0``)."""
    kind = key.items or key.kind
    bounds = []
    if key.min is not None:
        bounds.append(f"{'>' if key.above else '>='} {key.min:g}")
    if key.max is not None:
        bounds.append(f"<= {key.max:g}")
    if kind == "int" and bounds == [">= 1"]:
        noun, bounds = "a positive integer", []
    else:
        noun = _NOUN.get(kind, "a value")
    if key.items:
        noun = f"a list of {noun.split(' ', 1)[1]}s"
    return noun + (" " + " and ".join(bounds) if bounds else "")


def check_table(table, schema: dict[str, Key], path, what: str, *, label: str | None = None) -> dict:
    """``table`` (a TOML table) checked against ``schema``: a key not in it is refused with a "did
    you mean", a required one missing, a value of the wrong type, out of range or not one of its
    choices. Messages start ``{path}: ``; ``what`` names the table (``[study]``, ``eval_sets[0]``);
    ``label`` is written before a key in value messages (default ``what`` and a space)."""
    if not isinstance(table, dict):
        raise QidlabError(f"{path}: {what} must be a table")
    label = f"{what} " if label is None else label
    for name in table:
        if name not in schema:
            hint = did_you_mean(name, schema, n=1)
            known = "" if hint else f" (known: {', '.join(sorted(schema))})"
            raise QidlabError(f"{path}: unknown key {name!r} in {what}{hint}{known}")
    for name, key in schema.items():
        if key.required and name not in table:
            raise QidlabError(f"{path}: {what} needs {name!r}")
    for name, value in table.items():
        key = schema[name]
        if key.choices:
            if value not in key.choices:
                raise QidlabError(f"{path}: {label}{name} must be one of {', '.join(map(str, key.choices))}, "
                                  f"not {value!r}")
            continue
        ok = _is(value, key.kind)
        if ok and key.kind == "list" and key.items:
            ok = all(_is(v, key.items) for v in value)
            values = value
        else:
            values = [value]
        if ok and (key.kind in ("int", "number") or key.items in ("int", "number")):
            ok = ok and all((key.min is None or (v > key.min if key.above else v >= key.min))
                            and (key.max is None or v <= key.max) for v in values)
        if not ok:
            raise QidlabError(f"{path}: {label}{name} must be {_wanted(key)}, got {value!r}")
    return table
