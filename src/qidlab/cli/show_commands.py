"""Commands of the show stage: plot (one figure of a store), report (the HTML report)."""

from __future__ import annotations

from ..data import DEFAULT
from ..errors import QidlabError
from ..files import check_writable
from ..show.figures import check_output, get_figure, list_figures, make_figure, save_figure
from ..show.report import build_report
from ..show.study import ShowOptions, load_study
from .args import data_input, emit, library_names, number, numbers


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw one of the paper's figures (or a diagnostic) from a store")
    p.add_argument("name", nargs="?", help="figure name (see --list)")
    p.add_argument("store", nargs="?", help="a qidlab store (.db) or data set (name or folder; default: the "
                   "shipped measured data set)")
    p.add_argument("--out", help="image file to write (.png, .svg or .pdf)")
    p.add_argument("--list", action="store_true", help="list the figures and what each shows")
    _options(p)
    p.set_defaults(run=run_plot)

    p = sub.add_parser("report", help="a self-contained HTML report of a store: provenance, fitted laws, "
                       "Table 1, figures")
    p.add_argument("store", nargs="?", help="a qidlab store (.db) or data set (name or folder; default: the "
                   "shipped measured data set, qidlab.data.DEFAULT)")
    p.add_argument("--out", required=True, help="folder for report.html and the fit documents")
    _options(p)
    p.set_defaults(run=run_report)


def _options(p) -> None:
    p.add_argument("--suite", action="append", default=[], metavar="DIR",
                   help="a suite folder (train-log.csv, weight-dynamics.json, manifest) besides those of the "
                   "store's checkpoints; repeatable")
    p.add_argument("--only-suite", metavar="NAME", help="a store of several suites: draw this one "
                   "(default: the most measured)")
    p.add_argument("--where", nargs="+", action="extend", metavar="COLUMN=V1,V2",
                   help="the rows the laws, Table 1 and the paper's figures use, e.g. kind=run step>=128 "
                   "(default: a data set's primary where, else every row; the cooldown, peak-lr and averaging "
                   "figures draw every row)")
    p.add_argument("--eval-set", help="eval set the laws are fitted on (default: the most measured)")
    p.add_argument("--method", help="quantization method the laws are fitted on (default: the most measured)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B", help="bootstrap replicates for 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    p.add_argument("--sizes", default="7B,70B,405B", help="model sizes N of Fig. 1 (default: %(default)s)")
    p.add_argument("--bits", help="bit widths of Fig. 1 and Table 1 (default: the study's)")
    p.add_argument("--max-tokens", default="100T", help="D up to which Fig. 1 projects (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, help="V of the uniform-guess loss ln(V) (default: the checkpoints')")
    p.add_argument("--dpi", type=int, default=100, help="resolution of raster figures (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    library_names(p, suites="suite", suite="only_suite")


def _show_options(args):
    if args.dpi < 10:
        raise QidlabError("--dpi must be at least 10")
    return ShowOptions(suite=args.only_suite, eval_set=args.eval_set, method=args.method, bootstrap=args.bootstrap, seed=args.seed,
                       sizes=tuple(numbers(args.sizes, "--sizes")),
                       bits=tuple(numbers(args.bits, "--bits")) if args.bits else None,
                       max_tokens=number(args.max_tokens), vocab_size=args.vocab_size, dpi=args.dpi,
                       where=tuple(args.where) if args.where else None)


def _input(args) -> str:
    return data_input(args.store or DEFAULT)


def run_plot(args):
    if args.list:
        specs = list_figures()
        emit(args, {"figures": [{"name": s.name, "paper": s.paper, "caption": s.caption} for s in specs]},
             "\n".join(f"{s.name:>12}  {s.paper or '(new)':<15} {s.caption}" for s in specs))
        return
    if not (args.name and args.out):
        raise QidlabError("plot needs NAME STORE --out FILE (or --list; STORE defaults to the shipped data set)")
    get_figure(args.name)
    check_output(args.out)
    check_writable(args.out)  # before the figure is drawn
    options = _show_options(args)
    study = load_study(_input(args), suites=args.suite, options=options)
    path = save_figure(make_figure(args.name, study), args.out, dpi=options.dpi)
    emit(args, {"figure": args.name, "out": str(path), "suite": study.suite, "eval_set": study.eval_set,
                "method": study.method},
         f"wrote {path} ({args.name}; " + (f"suite {study.suite}, " if study.suite else "")
         + f"eval set {study.eval_set}, method {study.method})")


def run_report(args):
    check_writable(args.out, folder=True)
    report = build_report(_input(args), args.out, suites=args.suite, options=_show_options(args))
    path, summary = report.path, report.summary
    skipped = summary["skipped"]
    text = [f"wrote {path}: {len(summary['figures'])} figures, {len(summary['fits'])} fit documents"]
    text += [f"  skipped {name}: {why}" for name, why in skipped.items()]
    choice = summary.get("model_choice")
    if choice:
        text.append(f"  QiD law out of sample: lowest error {choice['best']}, chosen {choice['chosen']} (report: Model choice)")
    emit(args, {"report": str(path), **summary}, "\n".join(text))
