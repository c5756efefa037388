"""The ``qidlab`` command. Every command takes ``--json``; bad input prints one line
``qidlab: error: ...`` on stderr and exits with status 2 (no traceback). A library error names
its parameters as the Python API spells them; the line names the command's flags instead."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

from .. import __version__
from ..errors import QidlabError, did_you_mean
from . import demo, law_commands, measure_commands, quantize_command, show_commands, tour, train_commands
from .args import subcommand_flags, with_flags


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        bad = re.match(r"argument (COMMAND|ACTION): invalid choice: '([^']*)'", message)
        if bad:  # a misspelt (sub)command: name the close ones, not all of them
            commands = next(a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction))
            message = f"unknown {bad[1].lower()} {bad[2]!r}" + did_you_mean(bad[2], commands, cutoff=0.6)
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qidlab",
        description="Quantization scaling laws: fit, predict and invert QiD = loss(quantized) - loss(16-bit).",
    )
    parser.add_argument("--version", action="version", version=f"qidlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    law_commands.register(sub)
    measure_commands.register(sub)
    quantize_command.register(sub)
    train_commands.register(sub)
    show_commands.register(sub)
    demo.register(sub)
    tour.register(sub)
    _describe(parser)
    return parser


JSON_HELP = "print the result as one JSON document (progress and notes go to stderr)"


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's help line is also its page's description (``qidlab fit --help``), and each
    ``--json`` says what it does (tests/test_cli_help.py checks that every option has help)."""
    for action in parser._actions:
        if "--json" in action.option_strings and not action.help:
            action.help = JSON_HELP
        if isinstance(action, argparse._SubParsersAction):
            action.help = action.help or "one of:"
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported
        return int(exc.code or 0)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe is met here, not at exit
        return status
    except BrokenPipeError:  # `qidlab ... | head -1`: the reader has gone; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except OSError as exc:  # an output the user named cannot be written (read-only, missing folder, disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"qidlab: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except QidlabError as exc:
        message = " ".join(with_flags(exc, subcommand_flags(parser, args)).split())  # always one line
        print(f"qidlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qidlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
