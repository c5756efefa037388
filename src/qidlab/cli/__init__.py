"""The ``qidlab`` command. Every command takes ``--json``; bad input prints one line
``qidlab: error: ...`` on stderr and exits with status 2 (no traceback)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

from ..errors import QidlabError

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


def _clean(obj: Any) -> Any:
    """JSON-safe: inf as the string "inf", NaN as null, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def dump_json(doc: Any) -> str:
    return json.dumps(_clean(doc), indent=2, allow_nan=False)


def emit(args, doc: dict, text: str) -> None:
    """Print the JSON document with --json, the human text otherwise."""
    print(dump_json(doc) if getattr(args, "json", False) else text)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import demo, law_commands, measure_commands, quantize_command, show_commands, tour, train_commands

    parser = _Parser(
        prog="qidlab",
        description="Quantization scaling laws: fit, predict and invert QiD = loss(quantized) - loss(16-bit).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    law_commands.register(sub)
    measure_commands.register(sub)
    quantize_command.register(sub)
    train_commands.register(sub)
    show_commands.register(sub)
    demo.register(sub)
    tour.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported
        return int(exc.code or 0)
    try:
        return int(args.run(args) or 0)
    except QidlabError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"qidlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qidlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
