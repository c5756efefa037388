"""Commands of the law engine: laws, fit, predict, solve, table1, project,
training-level, min-bits, critical-tokens, optimal-format."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from .. import data, provenance
from ..errors import QidlabError, did_you_mean
from ..dataset_format import split_condition
from ..files import check_writable, open_atomic, write_text
from ..laws import get_law, list_laws
from ..laws.analysis import (
    critical_tokens,
    min_bits,
    optimal_format,
    projection,
    quantized_loss,
    random_level_note,
    token_grid,
    training_level,
)
from ..laws.compare import compare_laws
from ..laws.fit import fit_document, fit_law, pooled_columns, resampling
from ..laws.solve import law_params, params_for, predict_point, solve
from ..laws.uncertainty import (
    interval_text,
    min_bits_many,
    predict_many,
    projection_intervals,
    solve_many,
    source_for,
    sources_for,
    token_grid_intervals,
    uncertainty,
)
from ..output import count, dump_json, fit_cautions, size
from .args import assignments, data_input, emit, library_names, named_number, number, numbers


def register(sub) -> None:
    _laws(sub)
    _fit(sub)
    _predict(sub)
    _solve(sub)
    _table1(sub)
    _project(sub)
    _training_level(sub)
    _min_bits(sub)
    _critical(sub)
    _optimal(sub)


def _common(p: argparse.ArgumentParser, law_required: bool = True) -> None:
    p.add_argument("--law", required=law_required, help="law name (see `qidlab laws`)")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", metavar="VAR=VALUE",
                   help="input values, canonical names (n_params, tokens, bits, group_size, exp_bits, "
                   "man_bits, block_size); sizes may carry K/M/B/T")
    p.add_argument("--fit", help="a `qidlab fit --out` file to take parameters from (default: published); fitted "
                   "with --bootstrap B, predictions get a 95%% interval over the replicates")
    p.add_argument("--constants", help="which published constant set (default: the law's first)")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    library_names(p, values="sets", known="sets")


def _law_and_params(args, values: dict[str, Any]):
    law = get_law(args.law)
    params, source = law_params(law, constants=args.constants, fit=args.fit, values=values)
    return law, params, source


def _values(args, law_name: str | None = None) -> dict[str, Any]:
    """--set values: numbers for law variables (or a variable's named values), text for others."""
    raw = assignments(args.sets)
    law = get_law(law_name or args.law)
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name in law.variable_names or name == "loss16":
            named = law.variable(name).named if name in law.variable_names else {}
            out[name] = named[text] if text in named else named_number(name, text)
        elif getattr(args, "fit", None):
            out[name] = text  # a group key of a fit file (e.g. method=gptq)
        else:
            raise QidlabError(f"law {law.name!r} has no input {name!r} (its variables: {', '.join(law.variable_names)})")
    return out


def _law_inputs(law, values):
    return {k: v for k, v in values.items() if k in law.variable_names}


def _setup(args):
    """(--set values, law, params, where the params come from, the law's inputs among the values)."""
    values = _values(args)
    law, params, source = _law_and_params(args, values)
    return values, law, params, source, _law_inputs(law, values)


def _source(args, values):
    """(--set values) -> (law, ``uncertainty.Source``, the law's inputs among the values)."""
    law = get_law(args.law)
    return law, source_for(law, constants=args.constants, fit=args.fit, values=values), _law_inputs(law, values)


def _with_uncertainty(text: str, u: dict) -> str:
    """A prediction's text, its interval (or why none) and its warnings, one line each."""
    return "\n".join([text, "  " + interval_text(u), *("  " + w for w in u["warnings"])])


# ---------------------------------------------------------------------------
def _laws(sub):
    p = sub.add_parser("laws", help="list every registered law with formula, parameters, constants")
    p.add_argument("name", nargs="?", help="show one law")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_laws)


def run_laws(args):
    laws = [get_law(args.name)] if args.name else list_laws()
    docs = [law.to_dict() for law in laws]
    lines = []
    for d in docs:
        lines.append(f"{d['name']}: {d['title']}\n    {d['formula']}")
        for key, pub in d["published"].items():
            vals = ", ".join(f"{k}={v:g}" for k, v in pub["values"].items())
            flag = "" if pub["verified"] else " [unverified]"
            lines.append(f"    [{key}]{flag} {vals}\n        {pub['source']}")
        if d["note"]:
            lines.append(f"    note: {d['note']}")
    emit(args, {"laws": docs}, "\n".join(lines))


# ---------------------------------------------------------------------------
HOLDOUT = "n_params,tokens"


def _fit(sub):
    p = sub.add_parser("fit", help="fit a law to measurements (CSV, Parquet, SQLite store, or a bundled name)")
    p.add_argument("data", nargs="?", help="table file, store .db, data set folder, or bundled name "
                   "(ouyang2024-table1, chinchilla-epoch, a measured data set; default: the shipped measured "
                   "data set, qidlab.data.DEFAULT)")
    p.add_argument("--law", help="the law to fit (see `qidlab laws`); not with --compare")
    p.add_argument("--compare", action="store_true",
                   help="instead of one fit: out-of-sample error of every QiD law family (unified, per-bit, "
                   "kumar-exp, interaction), each size and each size's latest D held out in turn")
    p.add_argument("--by", help="fit one law per group of these columns (comma-separated), e.g. bits")
    p.add_argument("--where", nargs="+", action="extend", metavar="COLUMN=V1,V2",
                   help="fit only the rows whose COLUMN is one of the values, e.g. suite=en method=gptq "
                   "tokens>=4e6 (>=, <= and > < also work for numeric columns)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap replicates for 95%% CIs")
    p.add_argument("--resample", default="auto",
                   help="what the bootstrap draws: 'auto' (default: whole models, suite+model (+run), or n_params "
                   "when no model column, when a model has several points; else points), 'points', or column(s) "
                   "whose groups are resampled whole (e.g. n_params)")
    p.add_argument("--weights", default="none", choices=("none", "ci"),
                   help="'ci': weight each point by the inverse variance of log target from its measured 95%% CI "
                   "(delta method); default none")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default: %(default)s)")
    p.add_argument("--drop-highest", type=int, default=0, metavar="K", help="drop the K points with the highest target")
    p.add_argument("--target", help="column to fit (default: the law's, e.g. qid or loss), or task:NAME:METRIC: "
                   "a store's lm-evaluation-harness metric as its drop from 16 bits (positive = worse)")
    p.add_argument("--method", default="auto", choices=("auto", "lstsq", "huber"),
                   help="loss of the fit in log space: least squares, Huber, or the law's default (auto)")
    p.add_argument("--huber-delta", type=float, default=1e-3,
                   help="Huber's delta in log space (--method huber; default: %(default)s)")
    p.add_argument("--grid", nargs="+", action="extend", metavar="PARAM=V1,V2,...",
                   help="Approach-3 start values for a parameter, in fit space (log of log-scale coefficients)")
    p.add_argument("--all-starts", action="store_true",
                   help="run every start to convergence (default: screen starts, keep the best 128)")
    p.add_argument("--nonpositive", default="drop", choices=("drop", "floor"),
                   help="what to do with target <= 0 (QiD noise): drop the points or floor them")
    p.add_argument("--floor", type=float, default=1e-4, help="value (nats) for --nonpositive floor")
    p.add_argument("--holdout", default=HOLDOUT,
                   help="columns whose largest value is held out to test extrapolation ('' for none)")
    p.add_argument("--out", help="also write the JSON document here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_fit)


def run_fit(args):
    if args.compare:
        return run_compare(args)
    if not args.law:
        raise QidlabError("qidlab fit needs --law LAW (or --compare)")
    law = get_law(args.law)
    if args.out:
        check_writable(args.out)  # before the work
    name = data_input(args.data or data.DEFAULT)
    path = data.resolve(name)
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    where = list(args.where or ())
    task = bool(args.target and args.target.startswith(data.TASK_TARGET))
    primary = [] if args.data or task else _primary_slice(name, where, by)
    if task:  # a downstream task's drop from 16 bits
        frame = data.load_task_target(name, args.target, where=where)
    else:
        frame = data.load(name, where=where + primary)  # rows selected before N and D are checked
    if not args.data:
        print(f"qidlab fit: no input given: read the shipped data set {name} ({path}), "
              + (f"its primary slice {' '.join(primary)}" if primary else "all of it")
              + f": {count(len(frame), 'row')} (choose others with --where, or give a table)", file=sys.stderr)
    holdout = tuple(c.strip() for c in args.holdout.split(",") if c.strip())
    if args.holdout != HOLDOUT:  # the default's columns may be missing: the law's own check names them
        _known_columns(frame, holdout, "--holdout")
    if args.resample not in ("auto", "points") and not args.bootstrap:  # with --bootstrap the fit checks it
        _known_columns(frame, [c.strip() for c in args.resample.split(",") if c.strip()], "--resample",
                       also=("auto", "points"))
    pooled = pooled_columns(frame, by)
    if pooled:
        print(f"qidlab fit: pooling {', '.join(f'{n} {c} values' for c, n in pooled.items())} into one fit "
              "(choose with --where or --by)", file=sys.stderr)
    options = dict(bootstrap=args.bootstrap, resample=args.resample, weights=args.weights, seed=args.seed,
                   drop_highest=args.drop_highest, target=args.target, method=args.method,
                   huber_delta=args.huber_delta, nonpositive=args.nonpositive, floor=args.floor,
                   grid=_grid(law, args.grid), screen=not args.all_starts,
                   holdout=holdout)
    fits = fit_law(frame, law, by=by, **options)
    doc = fit_document(law, fits, by=by, options=options,
                       data={"path": str(path), "sha256": provenance.file_sha256(path), "rows": int(len(frame)),
                             "where": where, **({"primary": primary} if primary else {})})
    if args.out:
        write_text(args.out, dump_json(doc) + "\n")
    text = _fit_text(law, fits)
    if not args.bootstrap:
        text += f"\nno 95% CIs: --bootstrap B adds them, resampling {_resample_hint(frame, args.resample)}"
    emit(args, doc, text)


def _primary_slice(name: str, where: list[str], by: list[str] | None) -> list[str]:
    """The data set's primary slice (its manifest's ``primary``: suite, eval set, method, and its
    ``where`` conditions) as ``--where`` items, for the columns that neither ``where`` nor ``by``
    names: what ``plot`` and ``report`` draw and fit by default."""
    primary = dict(data.manifest(name).get("primary") or {} if data.dataset_dir(name) else {})
    conditions = list(primary.pop("where", None) or ())
    named = {parts[0] for parts in map(split_condition, where) if parts} | set(by or ())
    items = [f"{column}={value}" for column, value in sorted(primary.items()) if column not in named]
    return items + [c for c in conditions if (split_condition(c) or ("",))[0] not in named]


def _known_columns(frame, names, flag: str, also: tuple[str, ...] = ()) -> None:
    """``QidlabError`` for a name among ``names`` that is no column of ``frame`` (nor one of ``also``)."""
    for name in names:
        if name not in frame.columns:
            known = [*also, *map(str, frame.columns)]
            raise QidlabError(f"{flag}: no column {name!r} in the data" + did_you_mean(name, known)
                              + f" (columns: {', '.join(map(str, frame.columns))})")


def _value(column: str, value: float) -> str:
    """A held-out value: counts (N, D) as 7B or 1.5T, anything else with 4 significant digits."""
    return size(value) if column in ("n_params", "n_params_total", "tokens") else f"{value:.4g}"


def _resample_hint(frame, resample: str) -> str:
    """What ``--bootstrap`` would draw from ``frame`` (all groups together), in words."""
    if resample != "auto":
        return "points" if resample == "points" else f"whole groups of {resample}"
    codes, cols = resampling(frame, "auto")
    if codes is None:
        return "points (no model with several points)"
    return f"whole models ({'+'.join(cols)}: {int(codes.max()) + 1} of them; --resample points to draw points)"


def _bound_text(law, name, value) -> str:
    lo, hi = law.param(name).bounds
    side = "lower" if abs(value - lo) <= abs(value - hi) else "upper"
    bound = lo if side == "lower" else hi
    return f"   AT ITS {side.upper()} BOUND {bound:g} (the data push it out of range: not an estimate)"


def _resampling_text(info) -> str:
    """One line: what the bootstrap resampled and which interval it gives."""
    if info.get("resample") == "points":
        what = "points (independent)"
    else:
        what = f"{info.get('clusters', '?')} clusters ({info['resample']}) whole"
    interval = {"bca": "BCa, small-sample widened", "percentile": "percentile"}.get(info.get("interval"),
                                                                                  info.get("interval"))
    text = f"bootstrap: {info['replicates']} replicates resampling {what}; {interval} 95% intervals"
    if info.get("failed"):
        text += f"; {info['failed']} replicate(s) failed"
    return text + (f"\n  warning: {info['warning']}" if info.get("warning") else "")


def run_compare(args):
    """``qidlab fit --compare``: ``laws.compare.compare_laws`` on the selected rows."""
    if args.law or args.by:
        raise QidlabError("--compare fits every QiD law family itself: leave out --law and --by")
    name = data_input(args.data or data.DEFAULT)
    path = data.resolve(name)
    frame = data.load(name, where=args.where or ())
    pooled = pooled_columns(frame)
    if pooled:
        print(f"qidlab fit: pooling {', '.join(f'{n} {c} values' for c, n in pooled.items())} into one comparison "
              "(choose with --where)", file=sys.stderr)
    doc = compare_laws(frame)
    doc["data"] = {"path": str(path), "sha256": provenance.file_sha256(path), "rows": int(len(frame)),
                   "where": list(args.where or ())}
    doc["provenance"] = provenance.record()
    if args.out:
        write_text(Path(args.out), dump_json(doc) + "\n")
    emit(args, doc, compare_text(doc))


def compare_text(doc) -> str:
    """The out-of-sample table: one row per held-out slice, one column per family (rmse of
    ln(predicted / measured QiD)), then the summary."""
    names = [f["name"] for f in doc["families"]]
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"out-of-sample error: {doc['metric']}",
             f"{'held out':<24}{'n':>5}" + "".join(f"{n:>{width}}" for n in names)]
    for row in doc["slices"]:
        cells = []
        for n in names:
            e = row["errors"][n]
            cells.append(f"{e['rmse_log']:>{width}.4f}" if "rmse_log" in e else f"{'n/a':>{width}}")
        lines.append(f"{row['label']:<24}{row['n_test']:>5}" + "".join(cells))
    lines.append("")
    lines.append("summary (best first): family, parameters, mean and worst error over slices, slices won")
    for srow in doc["summary"]:
        mean = "n/a" if srow["mean_rmse_log"] is None else f"{srow['mean_rmse_log']:.4f}"
        worst = "n/a" if srow["worst_rmse_log"] is None else f"{srow['worst_rmse_log']:.4f}"
        missed = f", {srow['missed']} slice(s) not predicted" if srow["missed"] else ""
        lines.append(f"  {srow['family']:<12} {srow['n_params']:>3} params  mean {mean}  worst {worst}  "
                     f"won {srow['wins']}{missed}")
    for row in doc["slices"]:
        for n in names:
            if "error" in row["errors"][n]:
                lines.append(f"  {row['label']}, {n}: {row['errors'][n]['error']}")
    lines.append(f"best: {doc['best']}; chosen: {doc['chosen']} (fewest parameters within "
                 f"{doc['parsimony']:.0%} of the best mean error)")
    return "\n".join(lines)


def _grid(law, items):
    grid = {}
    for name, text in assignments(items, "--grid").items():
        if name not in law.param_names:
            raise QidlabError(f"--grid: law {law.name!r} has no parameter {name!r} ({', '.join(law.param_names)})")
        grid[name] = tuple(numbers(text, f"--grid {name}"))
    return grid or None


def _fit_text(law, fits) -> str:
    lines = [f"{law.name}: {law.formula}"]
    for f in fits:
        head = f"group {f.group}" if f.group else "all data"
        weighted = "; weighted by measured CIs" if f.weights == "ci" else ""
        lines.append(f"\n{head}: n = {f.n} ({f.method}; target {f.target}{weighted})")
        for name, value in f.params.items():
            if value is None:
                lines.append(f"  {name:>10} = folded  ({f.folded[name]})")
                continue
            ci = f.ci95.get(name) if f.ci95 else None
            ci_text = f"   95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
            bound = _bound_text(law, name, value) if name in f.at_bound else ""
            lines.append(f"  {name:>10} = {value:.6g}{ci_text}{bound}")
        if f.bootstrap:
            lines.append("  " + _resampling_text(f.bootstrap))
        m = f.metrics
        r2 = (f"{m['r2_log']:.4f}" if math.isfinite(m["r2_log"])
              else f"n/a (every {f.target} is the same: nothing to explain)")
        lines.append(f"  fit: rmse(log) {m['rmse_log']:.4g}, R2(log) {r2}, mean |rel err| {m['mape']:.3g}%")
        if f.ranges:
            lines.append("  fitted range: " + ", ".join(f"{k} {lo:.4g} to {hi:.4g}" for k, (lo, hi) in f.ranges.items())
                         + " (predictions beyond it are flagged)")
        lines += [f"  {line}" for line in fit_cautions(f.n, f.params, f.ci95)]
        if f.n_missing:
            lines.append(f"  {count(f.n_missing, 'point')} with {f.target} empty (NaN): dropped")
        if f.n_nonpositive:
            lines.append(f"  {count(f.n_nonpositive, 'point')} with {f.target} <= 0: policy '{f.nonpositive_policy}'")
        if f.dropped_highest:
            lines.append(f"  dropped the {f.dropped_highest} highest-{f.target} "
                         + ("point" if f.dropped_highest == 1 else "points"))
        for h in f.holdout:
            lines.append(f"  held out largest {h['held_out']} ({_value(h['held_out'], h['value'])}, "
                         f"{count(h['n_test'], 'point')}): "
                         f"mean |rel err| {h['mape']:.3g}%, max {h['max_ape']:.3g}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
def _predict(sub):
    p = sub.add_parser("predict", help="predict QiD (and loss) or loss for given inputs")
    _common(p)
    p.set_defaults(run=run_predict)


def run_predict(args):
    values = _values(args)
    law, src, inputs = _source(args, values)
    y = predict_point(law, src.params, inputs)
    reps = predict_many(src, inputs)[:, 0] if src.no_interval is None else None
    u = uncertainty(src, reps, inputs)
    doc: dict[str, Any] = {"law": law.name, "inputs": inputs, law.quantity: y, "params": src.params,
                           "source": src.source, **u}
    text = _with_uncertainty(f"{law.quantity} = {y:.6g}   ({law.name}; {src.source})", u)
    loss = quantized_loss(law, y, values)
    if loss:
        doc.update(loss)
        text += (f"\nloss16 = {loss['loss16']:.6g} ({loss['loss16_source']}); "
                 f"loss = loss16 + qid = {loss['loss']:.6g}")
        if u["interval"] is not None:
            doc["loss_interval"] = [loss["loss16"] + u["interval"][0], loss["loss16"] + u["interval"][1]]
            text += f" (95% interval of loss16 + qid [{doc['loss_interval'][0]:.6g}, {doc['loss_interval'][1]:.6g}])"
    emit(args, doc, text)


def _solve(sub):
    p = sub.add_parser("solve", help="solve a law for one variable given a target qid or loss")
    _common(p)
    p.add_argument("--for", dest="var", required=True, help="the variable to solve for (e.g. tokens)")
    p.add_argument("--target", required=True, metavar="QUANTITY=VALUE", help="e.g. qid=0.2")
    p.set_defaults(run=run_solve)


def _target(law, text: str) -> float:
    target = assignments([text], "--target")
    ((name, value),) = target.items()
    if name != law.quantity:
        raise QidlabError(f"law {law.name!r} predicts {law.quantity}; use --target {law.quantity}=VALUE")
    return number(value)


def run_solve(args):
    law, src, known = _source(args, _values(args))
    target = _target(law, args.target)
    value = solve(law, src.params, known, target, args.var)
    reps = solve_many(src, known, target, args.var) if src.no_interval is None else None
    u = uncertainty(src, reps, {**known, args.var: value})
    doc = {"law": law.name, args.var: value, "target": {law.quantity: target}, "inputs": known, "source": src.source,
           **u}
    emit(args, doc, _with_uncertainty(f"{args.var} = {value:.6g} for {law.quantity} = {target:g}   "
                                      f"({law.name}; {src.source})", u))


# ---------------------------------------------------------------------------
def _table1(sub):
    p = sub.add_parser("table1", help="Ouyang Table 1 for any law: tokens to reach each QiD")
    _common(p)
    p.add_argument("--sizes", default="1B,7B,70B,405B", help="model sizes N (comma-separated)")
    p.add_argument("--bits", default="2,3,4", help="bit widths P (comma-separated; default: %(default)s)")
    p.add_argument("--qid", default="0.2,0.3,0.4,0.5",
                   help="QiD targets, nats/token (comma-separated; default: %(default)s)")
    p.set_defaults(run=run_table1)


def _picker(args, fixed_values):
    """Parameters per row: from the fit group matching the row when a fit file is given."""
    return params_for(args.law, constants=args.constants, fit=args.fit, values=fixed_values)


def run_table1(args):
    values = _values(args)
    fixed = {k: v for k, v in values.items() if k not in ("n_params", "bits")}
    numeric = {k: v for k, v in fixed.items() if isinstance(v, float)}
    grid = token_grid(args.law, _picker(args, values), numbers(args.sizes, "--sizes"), numbers(args.bits, "--bits"),
                      numbers(args.qid, "--qid"), **numeric)
    grid, warnings = token_grid_intervals(_sources(args, values), grid, **numeric)
    wide = grid.pivot_table(index="n_params", columns=["qid", "bits"], values="tokens_trillion")
    wide.index = [size(n) for n in wide.index]  # 7B as the user wrote it, not 7.000000e+09
    wide.index.name = "n_params"
    text = ("tokens (trillions) to reach each QiD, by model size (rows) and (QiD, bits) (columns)\n"
            + wide.to_string(float_format=lambda v: f"{v:.4f}"))
    if grid.interval.notna().any():
        spans = grid.assign(span=[_span(i, 1e12) for i in grid.interval])
        text += ("\n\n95% intervals (trillions; percentile over the fit's bootstrap replicates)\n"
                 + spans.pivot(index="n_params", columns=["qid", "bits"], values="span").to_string())
    else:
        text += "\n" + grid.interval_note.iloc[0]
    text += "".join("\n" + w for w in warnings)
    emit(args, {"law": args.law, "rows": grid.to_dict(orient="records"), "warnings": warnings}, text)


def _span(interval, unit: float = 1.0) -> str:
    return "—" if interval is None else f"[{interval[0] / unit:.4g}, {interval[1] / unit:.4g}]"


def _sources(args, fixed_values):
    """``uncertainty.Source`` per row: the fit group matching the row when a fit file is given."""
    return sources_for(args.law, constants=args.constants, fit=args.fit, values=fixed_values)


def _project(sub):
    p = sub.add_parser("project", help="Ouyang Fig. 1 as data: QiD and loss up to 100T tokens")
    _common(p)
    p.add_argument("--sizes", default="7B,70B,405B",
                   help="model sizes N, non-embedding parameters (comma-separated, K/M/B/T; default: %(default)s)")
    p.add_argument("--bits", default="2,3,4", help="bit widths P (comma-separated; default: %(default)s)")
    p.add_argument("--max-tokens", default="100T", help="training tokens D the curves reach (default: %(default)s)")
    p.add_argument("--points", type=int, default=41, help="points per curve, log-spaced in D (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=50277, help="ln of it is the worse-than-random loss")
    p.add_argument("--csv", help="write the curves here")
    p.set_defaults(run=run_project)


def run_project(args):
    if args.csv:
        check_writable(args.csv)
    values = _values(args)
    if args.points < 2:
        raise QidlabError("--points must be at least 2")
    if args.vocab_size < 2:
        raise QidlabError("--vocab-size must be at least 2")
    max_tokens = number(args.max_tokens)
    curves, crossings = projection(args.law, _picker(args, values), numbers(args.sizes, "--sizes"),
                                   numbers(args.bits, "--bits"),
                                   max_tokens=max_tokens, points=args.points,
                                   vocab_size=args.vocab_size)
    kaplan = get_law("kaplan")
    curves, crossings, warnings = projection_intervals(_sources(args, values), curves, crossings,
                                                       loss16_params=kaplan.default_constants(), max_tokens=max_tokens)
    vocab_note = random_level_note(args.vocab_size)
    if vocab_note:
        warnings.append("note: " + vocab_note)
    if args.csv:
        with open_atomic(args.csv) as fh:
            curves.to_csv(fh, index=False)
    end = curves[curves.tokens == curves.tokens.max()]
    text = [f"at {size(max_tokens)} tokens (worse than random above loss {crossings.random_loss.iloc[0]:.3f}):"]
    for _, r in end.iterrows():
        c = crossings[(crossings.n_params == r.n_params) & (crossings.bits == r.bits)].iloc[0]
        cross = c.tokens_worse_than_random
        note = f"; worse than random from {size(cross, 3)} tokens" if cross == cross and cross is not None else ""
        if c.interval is not None:
            note += f" (95% interval {_span(c.interval)})"
        qid_span = f" [{r.qid_lo:.4g}, {r.qid_hi:.4g}]" if r.qid_lo == r.qid_lo else ""
        text.append(f"  N={size(r.n_params)} P={r.bits:g}: qid {r.qid:.4g}{qid_span}, loss {r.loss:.4g}{note}")
    if crossings.interval.isna().all():
        text.append(crossings.interval_note.iloc[0])
    text += warnings
    emit(args, {"law": args.law, "curves": curves.to_dict(orient="records"),
                "crossings": crossings.to_dict(orient="records"), "warnings": warnings,
                "random_level_note": vocab_note}, "\n".join(text))


def _training_level(sub):
    p = sub.add_parser("training-level", help="Ouyang Sec. 4.2: tokens a model behaves as if trained on, from its QiD")
    _common(p)
    p.add_argument("--qid", required=True, type=number, help="measured QiD (nats)")
    p.set_defaults(run=run_training_level)


def run_training_level(args):
    law, src, known = _source(args, _values(args))
    for need in ("n_params", "bits"):
        if need not in known:
            raise QidlabError(f"training-level needs --set {need}=...")
    other = {k: v for k, v in known.items() if k not in ("n_params", "bits", "tokens")}
    out = training_level(law, src.params, known["n_params"], known["bits"], args.qid, **other)
    given = {k: v for k, v in known.items() if k != "tokens"}
    reps = solve_many(src, given, args.qid, "tokens") if src.no_interval is None else None
    u = uncertainty(src, reps, {**given, "tokens": out["tokens"]})
    emit(args, {"law": law.name, **out, "qid": args.qid, "inputs": known, "source": src.source, **u},
         _with_uncertainty(f"behaves as if trained on {size(out['tokens'])} tokens = {out['tokens_per_param']:.3g} "
                           f"tokens/parameter ({out['chinchilla_multiple']:.3g}x Chinchilla-optimal)", u))


def _min_bits(sub):
    p = sub.add_parser("min-bits", help="the lowest bit width whose predicted QiD stays within a budget")
    _common(p)
    p.add_argument("--budget", required=True, type=number, help="largest acceptable QiD (nats)")
    p.set_defaults(run=run_min_bits)


def run_min_bits(args):
    law, src, known = _source(args, _values(args))
    out = min_bits(law, src.params, known, args.budget)
    reps = min_bits_many(src, known, args.budget) if src.no_interval is None else None
    u = uncertainty(src, reps, {**known, "bits": out["bits"]})
    if u["interval"] is not None:  # integer bit widths: the interval's ends are too
        u["interval"] = [float(math.floor(u["interval"][0])), float(math.ceil(u["interval"][1]))]
    exact = f" (exact crossing {out['bits_exact']:.3f})" if out["bits_exact"] else ""
    emit(args, {"law": law.name, **out, "budget": args.budget, "inputs": known, "source": src.source, **u},
         _with_uncertainty(f"bits = {out['bits']:g}{exact} keeps qid <= {args.budget:g}", u))


def _critical(sub):
    p = sub.add_parser("critical-tokens", help="critical data size D_crit (kumar2024-ptq, sun2025)")
    _common(p)
    p.set_defaults(run=run_critical)


def run_critical(args):
    _, law, params, source, known = _setup(args)
    d = critical_tokens(law.name, params, known)
    emit(args, {"law": law.name, "tokens": d, "inputs": known, "source": source},
         f"critical tokens D_crit = {size(d)}")


def _optimal(sub):
    p = sub.add_parser("optimal-format", help="Sun 2025: best exponent/mantissa split for a bit width")
    _common(p)
    p.add_argument("--bits", required=True, type=int, help="total bits of the floating-point format (>= 3)")
    p.set_defaults(run=run_optimal)


def run_optimal(args):
    if args.law != "sun2025":
        raise QidlabError(f"optimal-format is defined for sun2025, not {args.law!r}")
    law, params, source = _law_and_params(args, {})
    out = optimal_format(params, args.bits)
    emit(args, {"law": law.name, **out, "source": source},
         f"{out['bits']} bits: {out['format']} (exp_bits={out['exp_bits']}, man_bits={out['man_bits']}; "
         f"continuous optimum man_bits={out['man_bits_continuous']:.3f})")
