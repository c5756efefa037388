"""Commands of the measurement pipeline: sweep, export, store merge, store drop, store publish."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import QidlabError
from ..files import check_writable, open_atomic
from ..output import count as _count
from ..store import drop_models, merge_stores, publish_dataset, read_canonical
from ..sweep import SlurmExecutor, load_study, plan_study, preset_names, run_study, write_preset
from ..sweep.recheck import TOLERANCE, recheck
from ..torchenv import THREADS_HELP, idle_cores, require_measure, torch_threads
from .args import assignments, emit, library_names, positive_int


def register(sub) -> None:
    p = sub.add_parser("sweep", help="measure a study (checkpoints x methods x bits x eval sets) into its store")
    p.add_argument("study", help="study file (TOML)")
    p.add_argument("--executor", default="local", choices=("local", "ray", "slurm"),
                   help="local: this process; ray: one long-lived Ray worker per GPU (per CPU on a cluster "
                   "without GPUs), each measuring checkpoints in turn; slurm: a submitit job per checkpoint (--slurm-per model: per model), each measuring into "
                   "its own store STORE.parts/<suite>/<model>-step<N>.db, merged into the study's store as it ends "
                   "(a rerun submits only what the store lacks)")
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--slurm-partition", metavar="NAME", help="slurm: the partition (default: the cluster's)")
    p.add_argument("--slurm-time", type=int, metavar="MIN", help="slurm: time limit per job, minutes (default 120)")
    p.add_argument("--slurm-gpus", type=int, metavar="N", help="slurm: GPUs per job (default 1; 0: CPU jobs)")
    p.add_argument("--slurm-folder", metavar="DIR", help="slurm: submitit's job files and logs "
                   "(default: STORE.parts/logs)")
    p.add_argument("--slurm-per", choices=("checkpoint", "model"),
                   help="slurm: one job per checkpoint (default) or per model (its checkpoints in turn)")
    p.add_argument("--slurm-param", action="append", type=_slurm_param, metavar="KEY=VALUE",
                   help="slurm: another submitit Slurm parameter, e.g. account=abc, qos=high, cpus_per_task=8, "
                   "mem=64G, array_parallelism=8 (repeatable)")
    p.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"),
                   help="slurm: where jobs run (default slurm); local runs each job as a subprocess of this "
                   "machine, all at once, debug in this process (a failing job opens the debugger): to try a study out "
                   "without a cluster")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="only these models (overrides the study's [checkpoints] models; e.g. one per GPU job)")
    p.add_argument("--store", help="store file (overrides the study's; e.g. one per GPU job, merged later)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be measured (checkpoints x configs x eval sets, how many already in the "
                   "store) and, for Hub checkpoints, what must be downloaded and its size; writes nothing")
    p.add_argument("--threads", type=positive_int, help="--executor local: " + THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress lines (default: one updating line on a "
                   "terminal, one line per checkpoint in a log; the ETA weighs what remains by model size and "
                   "method, see qidlab/sweep/progress.py)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_sweep)

    p = sub.add_parser("study", help="write a published study as a study file (qidlab study init ouyang2024 --out "
                       "study.toml), to read, edit and run with qidlab sweep")
    group = p.add_subparsers(dest="study_command", metavar="ACTION", required=True, parser_class=type(p))
    q = group.add_parser("init", help=f"write a preset study file (presets: {', '.join(preset_names())})")
    q.add_argument("name", metavar="PRESET", help=f"the preset: {', '.join(preset_names())}")
    q.add_argument("--out", required=True, help="the study file to write (refused if it exists, unless --force)")
    q.add_argument("--force", action="store_true", help="overwrite an existing --out")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=run_study_init)

    p = sub.add_parser("export", help="the store's canonical measurement table as CSV or Parquet")
    p.add_argument("store", help="a qidlab store (.db)")
    p.add_argument("--format", default="csv", choices=("csv", "parquet"), help="file format (default: %(default)s)")
    p.add_argument("--out", help="output file (default: stdout for CSV)")
    p.add_argument("--json", action="store_true", help="without --out: the rows as a JSON document; with --out: "
                   "what was written, as JSON")
    p.set_defaults(run=run_export)

    p = sub.add_parser("store", help="merge stores; drop models; publish a store as a data set loadable by name")
    group = p.add_subparsers(dest="store_command", metavar="ACTION", required=True, parser_class=type(p))
    q = group.add_parser("merge", help="merge stores into one (idempotent; one transaction per source)")
    q.add_argument("sources", nargs="+", help="qidlab stores (.db) to merge")
    q.add_argument("--out", required=True, help="the merged store (created, or added to)")
    q.add_argument("--on-conflict", default="error", choices=("error", "skip"),
                   help="rows that disagree with the destination: stop with an error (default) or skip them")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=run_store_merge)
    q = group.add_parser("drop", help="delete models of a suite (checkpoints, measurements, per-document losses) "
                         "from a store, e.g. before merging the store of a model trained again")
    q.add_argument("store", help="a qidlab store (.db)")
    q.add_argument("--suite", required=True, help="the suite's name")
    q.add_argument("--models", nargs="+", required=True, metavar="NAME", help="the models to delete")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=run_store_drop)
    q = group.add_parser("publish", help="write a store as a data set (Parquet + manifest) loadable by name")
    q.add_argument("store", help="a qidlab store (.db)")
    q.add_argument("--name", required=True, help="data set name (lower case, digits, . - _)")
    q.add_argument("--out", required=True, help="folder that receives NAME/ (src/qidlab/data to ship it)")
    q.add_argument("--description", default="", help="one paragraph: what was measured, how")
    q.add_argument("--suite", action="append", default=[], metavar="DIR",
                   help="a suite folder (manifest, config.json) besides those of the stored checkpoint paths")
    q.add_argument("--primary", nargs="+", metavar="KEY=VALUE",
                   help="the slice figures and reports draw by default: suite=, eval_set=, method=")
    q.add_argument("--doc-losses", default="auto", choices=("auto", "always", "never"),
                   help="ship per-document losses: auto = when their file is at most 2 MiB")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=run_store_publish)
    library_names(q, suites="suite")
    q = group.add_parser("recheck", help="recompute every QiD and its 95%% CI from the store's per-document losses "
                         "and compare them with what is stored (exit 1 when one differs or cannot be recomputed)")
    q.add_argument("store", help="a qidlab store (.db) with per-document losses")
    q.add_argument("--sample", type=int, metavar="N", help="recompute N measurements drawn at random (default: all)")
    q.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="largest absolute difference taken as equal (default: %(default)g, in the loss unit)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=run_store_recheck)


def run_sweep(args):
    study = load_study(args.study)
    if args.models:
        study = dataclasses.replace(study, models=tuple(args.models))
    if args.store:
        study = dataclasses.replace(study, store=Path(args.store))
    if args.dry_run:
        return _dry_run(args, plan_study(study))
    executor = _executor(args)
    if executor == "local":
        require_measure("measuring (a local sweep)")
        with torch_threads(args.threads or idle_cores()):
            summary = run_study(study, executor=executor, address=args.address, progress=not args.quiet)
    else:
        summary = run_study(study, executor=executor, address=args.address, progress=not args.quiet)
    doc = {"study": study.name, "store": str(study.store), "measured": summary.measured,
           "skipped": summary.skipped, "failed": summary.failed, "task_results": summary.task_results}
    text = (f"{study.name}: {summary.measured} measured, {summary.skipped} already in {study.store}, "
            f"{len(summary.failed)} failed" + "".join(f"\n  failed: {f}" for f in summary.failed))
    emit(args, doc, text)
    return 1 if summary.failed else 0


def run_study_init(args):
    out = write_preset(args.name, args.out, force=args.force)
    emit(args, {"preset": args.name, "out": str(out)},
         f"wrote {out} (preset {args.name}): check it, then `qidlab sweep {out} --dry-run` lists what would be "
         f"measured and downloaded")


def _dry_run(args, plan) -> int:
    """Print ``plan`` (a ``DryRun``): one line per checkpoint, then the totals and the download."""
    todo = sum(c.todo for c in plan.checkpoints)
    lines = [f"{len(plan.checkpoints)} checkpoints x {len(plan.configs)} configs ({', '.join(plan.configs)}) x "
             f"{len(plan.eval_sets)} eval sets = {plan.total} measurements; {plan.total - todo} already in "
             f"{plan.store}, {todo} to measure"]
    for c in plan.checkpoints:
        where = c.location
        if c.cached is not None:
            size = _size(c.download_bytes) if c.download_bytes is not None else "size unknown offline"
            where += f" (cached, {size})" if c.cached else f" (to download, {size})"
        tasks = f"; tasks: {c.tasks_todo} to run, {c.tasks_stored} stored" if plan.tasks else ""
        lines.append(f"  {c.suite} step {c.step} D={c.tokens}: {c.todo} to measure, {c.stored} stored{tasks}; {where}")
    hub = [c for c in plan.checkpoints if c.cached is False and c.todo]
    if hub:
        known = sum(c.download_bytes or 0 for c in hub)
        unknown = sum(c.download_bytes is None for c in hub)
        lines.append(f"download: {len(hub)} revisions, {_size(known)}"
                     + (f" + {unknown} of size unknown offline" if unknown else ""))
    if plan.tasks:
        runs = sum(c.tasks_todo for c in plan.checkpoints)
        lines.append(f"tasks (lm-evaluation-harness, on the 16-bit model and each of the study's configs; "
                     f"{runs} runs to do): " + "; ".join(plan.tasks))
    lines += [f"not available here (fetched when the sweep runs online, or needed first): {u}"
              for u in plan.unavailable]
    doc = {"checkpoints": [dataclasses.asdict(c) for c in plan.checkpoints], "configs": plan.configs,
           "eval_sets": plan.eval_sets, "store": plan.store, "total": plan.total, "to_measure": todo,
           "offline": plan.offline, "unavailable": plan.unavailable, "tasks": plan.tasks,
           "tasks_to_run": sum(c.tasks_todo for c in plan.checkpoints)}
    emit(args, doc, "\n".join(lines))
    return 0


def _size(n: int | None) -> str:
    """Bytes as text (B, KB, MB, GB, TB; powers of 1000)."""
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


SLURM_FLAGS = {"slurm_partition": "partition", "slurm_time": "time_min", "slurm_gpus": "gpus",
               "slurm_folder": "folder", "slurm_per": "per", "slurm_param": "params", "slurm_cluster": "cluster"}


def _slurm_param(text: str) -> tuple[str, str | int | float]:
    key, sep, value = (t.strip() for t in text.partition("="))
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expects KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key.removeprefix("slurm_"), kind(value)
        except ValueError:
            pass
    return key.removeprefix("slurm_"), value


def _executor(args):
    """``args.executor``, or with ``--executor slurm`` the ``SlurmExecutor`` its flags configure."""
    given = {SLURM_FLAGS[k]: v for k, v in vars(args).items() if k in SLURM_FLAGS and v is not None}
    if args.executor != "slurm":
        if given:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in SLURM_FLAGS if getattr(args, k) is not None)
            raise QidlabError(f"{flags}: only with --executor slurm")
        return args.executor
    if "params" in given:
        given["params"] = dict(given["params"])
    return SlurmExecutor(**given)


def run_export(args):
    if not Path(args.store).exists():
        raise QidlabError(f"{args.store}: no such store")
    if args.format == "parquet" and not args.out:
        raise QidlabError("--format parquet needs --out FILE")
    if args.out:
        check_writable(args.out)  # before the store is read
    table = read_canonical(args.store)
    if args.format == "parquet":
        with open_atomic(args.out, "wb") as fh:
            table.to_parquet(fh, index=False)
    elif args.out:
        with open_atomic(args.out) as fh:
            table.to_csv(fh, index=False)
    elif args.json:
        emit(args, {"store": str(args.store), "rows": json.loads(table.to_json(orient="records"))}, "")
        return
    else:
        print(table.to_csv(index=False), end="")
        return
    emit(args, {"store": str(args.store), "out": str(args.out), "format": args.format, "rows": len(table)},
         f"wrote {args.out}: {_count(len(table), 'measurement')} ({args.format})")


def run_store_merge(args):
    summary = merge_stores(args.sources, args.out, on_conflict=args.on_conflict)
    doc = summary.to_dict()
    lines = []
    for s in summary.sources:
        added = ", ".join(f"{n} {t}" for t, n in s.added.items())
        lines.append(f"{s.path}: added {added}; {s.present.get('measurements', 0)} measurements already there"
                     + (f"; {len(s.conflicts)} conflicts skipped ({s.skipped_measurements} measurements)"
                        if s.conflicts else ""))
        lines += [f"  skipped: {c}" for c in s.conflicts]
    total = summary.total()
    lines.append(f"{args.out}: +{total['measurements']} measurements from {len(summary.sources)} stores")
    duplicates = summary.duplicates
    if duplicates:
        lines.append(f"warning: {len(duplicates)} settings measured under several configs (the canonical table "
                     f"holds each more than once), e.g. {duplicates[0]}")
    emit(args, doc, "\n".join(lines))


def run_store_drop(args):
    deleted = drop_models(args.store, args.suite, args.models)
    emit(args, {"store": args.store, "suite": args.suite, "models": args.models, "deleted": deleted},
         f"{args.store}: dropped {', '.join(args.models)} of suite {args.suite}: "
         + ", ".join(f"{n} {table}" for table, n in deleted.items()))


def run_store_publish(args):
    check_writable(args.out, folder=True)
    published = publish_dataset(args.store, args.name, args.out, description=args.description, suites=args.suite,
                                doc_losses=args.doc_losses, primary=assignments(args.primary, "--primary"))
    folder, manifest = published.folder, published.manifest
    files = manifest["files"]
    docs = files["doc_losses"]
    text = (f"wrote {folder}: {files['measurements']['rows']} measurements ({files['measurements']['bytes']} bytes), "
            + (f"{docs['rows']} per-document losses ({docs['bytes']} bytes)" if docs.get("path")
               else f"per-document losses not shipped ({docs.get('reason', 'left out')})"))
    if files["tasks"].get("path"):
        text += f", {files['tasks']['rows']} task results ({files['tasks']['bytes']} bytes)"
    if manifest["duplicate_settings"]:
        text += (f"\nwarning: {len(manifest['duplicate_settings'])} settings measured under several configs, e.g. "
                 f"{manifest['duplicate_settings'][0]}")
    emit(args, {"dataset": str(folder), "manifest": manifest}, text)


def run_store_recheck(args):
    if args.sample is not None and args.sample < 1:
        raise QidlabError(f"--sample must be a positive number of measurements, not {args.sample}")
    if not args.tolerance >= 0:
        raise QidlabError(f"--tolerance must be a difference >= 0, not {args.tolerance}")
    rows = recheck(args.store, sample=args.sample)
    failed = [r for r in rows if "error" in r]
    differ = [r for r in rows if "diff" in r and r["diff"] > args.tolerance]
    largest = max((r["diff"] for r in rows if "diff" in r), default=float("nan"))
    text = (f"{args.store}: {len(rows) - len(failed)} of {len(rows)} QiD recomputed from per-document losses; "
            f"{len(differ)} differ by more than {args.tolerance:g} (largest difference {largest:.3g})"
            + "".join(f"\n  measurement {r['id']} ({r['method']}): {r['error']}" for r in failed[:10])
            + "".join(f"\n  measurement {r['id']} ({r['method']}): differs by {r['diff']:.3g}" for r in differ[:10]))
    emit(args, {"store": args.store, "recomputed": len(rows) - len(failed), "checked": len(rows),
                "differ": [r["id"] for r in differ], "largest_difference": largest, "rows": rows}, text)
    return 1 if differ or failed else 0
