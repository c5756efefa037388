"""What every subcommand shares: argument values read from text (numbers with size suffixes,
NAME=VALUE pairs, comma-separated lists) and printing a result as text or JSON."""

from __future__ import annotations

from typing import Sequence

from ..errors import QidlabError
from ..output import dump_json

SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def number(text: str) -> float:
    """A float, also written with a size suffix: 7B, 405B, 100T, 1.5M."""
    text = text.strip()
    try:
        if text and text[-1].upper() in SUFFIXES and text[:-1]:
            return float(text[:-1]) * SUFFIXES[text[-1].upper()]
        return float(text)
    except ValueError:
        raise QidlabError(f"{text!r} is not a number") from None


def named_number(name: str, text: str) -> float:
    try:
        return number(text)
    except QidlabError:
        raise QidlabError(f"{name}={text!r}: {text!r} is not a number") from None


def assignments(items: Sequence[str] | None, what: str = "--set") -> dict[str, str]:
    """Parse NAME=VALUE pairs (values kept as text)."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise QidlabError(f"{what} expects NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def numbers(text: str, what: str = "list") -> list[float]:
    """A non-empty comma-separated list of numbers."""
    values = [number(t) for t in text.split(",") if t.strip()]
    if not values:
        raise QidlabError(f"{what} needs at least one value")
    return values


def emit(args, doc: dict, text: str) -> None:
    """Print the JSON document with --json, the human text otherwise."""
    print(dump_json(doc) if getattr(args, "json", False) else text)
