"""What every subcommand shares: argument values read from text (numbers with size suffixes,
NAME=VALUE pairs, comma-separated lists), printing a result as text or JSON, and a library
error's parameters written as the flags that set them."""

from __future__ import annotations

import argparse
import sys
from typing import Mapping, Sequence

from .. import data
from ..errors import QidlabError
from ..output import dump_json
from ..tables import parse_number


def number(text: str) -> float:
    """A float, also written with a size suffix: 7B, 405B, 100T, 1.5M (argparse's errors call
    this type "number")."""
    return parse_number(text)


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse's errors call this type "positive_int")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}")
    return value


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


def data_input(name: str) -> str:
    """A command's data input, after one line on stderr if it is a superseded shipped data set."""
    note = data.superseded_note(name)
    if note:
        print(note, file=sys.stderr)
    return name


def emit(args, doc: dict, text: str) -> None:
    """Print the JSON document with --json, the human text otherwise."""
    print(dump_json(doc) if getattr(args, "json", False) else text)


def library_names(parser: argparse.ArgumentParser, **dests: str) -> None:
    """Declare the library parameters a subcommand's options feed where an option's dest is
    not the parameter's name, e.g. ``library_names(p, values="sets")``: the error "needs
    `values` ..." then reads "needs --set ..."."""
    parser.set_defaults(library_names=dests)


def subcommand_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Library parameter name -> flag of the subcommand that ran (``store publish``: its own)."""
    parser = _subcommand(parser, args)
    flags = {a.dest: _long(a.option_strings) for a in parser._actions if a.option_strings}
    aliases = getattr(args, "library_names", {})
    return {**flags, **{name: flags[dest] for name, dest in aliases.items() if dest in flags}}


def _subcommand(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None:
            return parser
        parser = subs[0].choices[chosen]


def _long(options: Sequence[str]) -> str:
    return next((o for o in options if o.startswith("--")), options[0])


def with_flags(error: QidlabError, flags: Mapping[str, str]) -> str:
    """The error's message with each parameter it names (in backticks) written as its flag, or
    as the bare name where the subcommand has no flag for it."""
    text = str(error)
    for name in error.params:
        text = text.replace(f"`{name}`", flags.get(name, name))
    return text
