"""Commands of the measurement pipeline: sweep, export."""

from __future__ import annotations

from ..errors import QidlabError
from . import emit


def register(sub) -> None:
    p = sub.add_parser("sweep", help="measure a study (checkpoints x methods x bits x eval sets) into its store")
    p.add_argument("study", help="study file (TOML)")
    p.add_argument("--executor", default="local", choices=("local", "ray"))
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_sweep)

    p = sub.add_parser("export", help="the store's canonical measurement table as CSV or Parquet")
    p.add_argument("store", help="a qidlab store (.db)")
    p.add_argument("--format", default="csv", choices=("csv", "parquet"))
    p.add_argument("--out", help="output file (default: stdout for CSV)")
    p.set_defaults(run=run_export)


def run_sweep(args):
    from ..sweep import load_study, run_study

    study = load_study(args.study)
    summary = run_study(study, executor=args.executor, address=args.address, progress=not args.quiet)
    doc = {"study": study.name, "store": str(study.store), "measured": summary.measured,
           "skipped": summary.skipped, "failed": summary.failed}
    text = (f"{study.name}: {summary.measured} measured, {summary.skipped} already in {study.store}, "
            f"{len(summary.failed)} failed" + "".join(f"\n  failed: {f}" for f in summary.failed))
    emit(args, doc, text)
    return 1 if summary.failed else 0


def run_export(args):
    from pathlib import Path

    from ..store import read_canonical

    if not Path(args.store).exists():
        raise QidlabError(f"{args.store}: no such store")
    table = read_canonical(args.store)
    if args.format == "parquet":
        if not args.out:
            raise QidlabError("--format parquet needs --out FILE")
        table.to_parquet(args.out, index=False)
    elif args.out:
        table.to_csv(args.out, index=False)
    else:
        print(table.to_csv(index=False), end="")
