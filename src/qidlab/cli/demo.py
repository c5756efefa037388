"""``qidlab demo``: the main job, end to end (see ``qidlab.demo``)."""

from __future__ import annotations

import sys

from ..demo import SCALES, run_demo
from ..torchenv import THREADS_HELP, idle_cores
from .args import emit, positive_int


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: corpus -> tiny suite -> QiD sweep -> fitted laws -> report")
    p.add_argument("--out", default="qidlab-demo", help="output folder; a second run reuses it (default: %(default)s)")
    p.add_argument("--scale", choices=("full", "smoke"), default="full",
                   help="full: ~8 minutes on 2 CPU cores; smoke: seconds, to check the wiring (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, help=THREADS_HELP)
    p.add_argument("--no-report", action="store_true", help="stop after the fits")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (progress goes to stderr)")
    p.set_defaults(run=run_demo_command)


def run_demo_command(args):
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    summary = run_demo(args.out, scale=SCALES[args.scale], threads=args.threads or idle_cores(), report=not args.no_report, log=log)
    emit(args, summary, "") if args.json else None
