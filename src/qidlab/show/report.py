"""``build_report(db, out_dir)``: the study of a store as one self-contained HTML page.

``<out_dir>/report.html`` holds, with every image embedded as a base64 PNG (no external
resource, no script): the study's provenance (store, suites, eval sets, methods, library
versions and code revisions of the measurements and of the report), every law of QiD and of
the 16-bit loss the study can fit, side by side (parameters with 95% bootstrap intervals,
fit quality, leave-largest-N / leave-latest-D error, the published constants), the out-of-sample
choice between QiD law families (``qidlab fit --compare``: every size and each size's latest D
held out), the paper's Table 1 from the fitted law (95% intervals over the bootstrap replicates,
extrapolated cells marked) beside the published one, Fig. 1's crossings with their intervals, and
the figures (``qidlab.show.figures``), with the ones the study lacks data for listed with the
reason. Next to it: each fit's ``qidlab fit --json`` document (``fit-<law>.json``) and
``report.json`` (what the page holds, with Table 1's cells, Fig. 1's crossings and the model
choice as data).

Bad input (no such store, no measurements, an unknown eval set or method) fails before any
file is written; each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import data, provenance
from ..errors import QidlabError
from ..files import write_text
from ..laws import get_law
from ..laws.analysis import token_grid
from ..laws.compare import compare_laws
from ..laws.uncertainty import grid_warnings, sources_for, token_grid_intervals
from ..output import count, dump_json
from . import html as h
from .diagnostics import OVER_GROUPS, holdout_errors
from .figures import NOT_REDRAWN, list_figures, make_figure
from .fits import fit_all
from .fitted import projection_data
from .settings import hold_settings
from .study import ShowOptions, Study, load_study
from .style import size_text

REPORT = "report.html"
SUMMARY = "report.json"


@dataclass(frozen=True)
class Report:
    """A report just written: the path of ``report.html``, and the document of ``report.json``
    (store, suite, eval set, method, figures drawn, figures skipped and why, fit documents, laws
    not fitted and why, the report's provenance)."""

    path: Path
    summary: dict[str, Any]


def build_report(db: str | Path, out_dir: str | Path, *, suites: Sequence[str | Path] = (),
                 options: ShowOptions | None = None) -> Report:
    """Write the report of the store ``db`` into ``out_dir`` (created if needed); return the
    path of ``report.html`` and what ``report.json`` holds. ``suites``: suite folders besides
    those of the store's checkpoints."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise QidlabError(f"{out_dir}: exists and is not a folder")
    study = load_study(db, suites=suites, options=options)
    files = render(study)
    _write(out_dir, files)
    return Report(path=out_dir / REPORT, summary=json.loads(files[SUMMARY]))


def render(study: Study) -> dict[str, str]:
    """The report's files by name: report.html, report.json, fit-<law>.json."""
    fits, problems = fit_all(study)
    drawn, skipped = _figures(study)
    predictions: dict[str, Any] = {}
    parts = [_summary(study), _provenance(study), _laws(study, fits, problems), _model_choice(study, predictions),
             _table1(study, fits, predictions), _fig1_table(study, predictions), _published(fits),
             _figure_section(drawn, skipped)]
    nav = [("summary", "Summary"), ("provenance", "Provenance"), ("laws", "Fitted laws"),
           ("model-choice", "Model choice"), ("table1", "Table 1"), ("fig1", "Fig. 1 crossings"),
           ("published", "Published constants"), ("figures", "Figures")]
    files = {f"fit-{name}.json": dump_json(fit.document) + "\n" for name, fit in fits.items()}
    summary = {"store": study.source, "suite": study.suite, "eval_set": study.eval_set, "method": study.method,
               "figures": [spec.name for spec, _ in drawn],
               "skipped": {spec.name: why for spec, why in skipped},
               "fits": sorted(files), "laws_not_fitted": problems, **predictions,
               "provenance": _report_provenance()}
    files[SUMMARY] = dump_json(summary) + "\n"
    files[REPORT] = h.page(f"qidlab report: {Path(study.source['path']).name}", parts, nav)
    return files


def _write(out_dir: Path, files: dict[str, str]) -> None:
    """Each file through a temporary name and a rename; report.html last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == REPORT):
        write_text(out_dir / name, files[name])


def _report_provenance() -> dict[str, Any]:
    record = provenance.record()
    record["versions"] = {**record["versions"], **_matplotlib_version()}
    return record


def _matplotlib_version() -> dict[str, str]:
    import matplotlib

    return {"matplotlib": matplotlib.__version__}


# ---------------------------------------------------------------------------
# figures


def _figures(study: Study):
    """[(spec, png bytes)] drawn and [(spec, reason)] skipped."""
    drawn, skipped = [], []
    for spec in list_figures():
        try:
            fig = make_figure(spec.name, study)
        except QidlabError as exc:
            skipped.append((spec, str(exc)))
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=study.options.dpi)
        drawn.append((spec, buffer.getvalue()))
    return drawn, skipped


def _figure_section(drawn, skipped) -> h.Raw:
    parts = []
    for spec, png in drawn:
        paper = f" (the paper's {spec.paper})" if spec.paper else " (not in the paper)"
        parts.append(h.Raw(f'<figure id="{h.esc(spec.name)}">{h.image(png, spec.caption)}<figcaption>'
                           f"<b>{h.esc(spec.name)}</b>{h.esc(paper)}: {h.esc(spec.caption)}. "
                           f"<code>qidlab plot {h.esc(spec.name)} DB --out FILE.png</code></figcaption></figure>"))
    parts += [h.paragraph(f"The paper's {name} is not redrawn: {why}.", "note") for name, why in NOT_REDRAWN.items()]
    if skipped:
        items = "".join(f"<li><b>{h.esc(s.name)}</b> ({h.esc(s.paper or 'new')}): {h.esc(why)}</li>"
                        for s, why in skipped)
        parts.append(h.Raw(f'<h3 id="skipped">Figures skipped ({len(skipped)})</h3><ul>{items}</ul>'))
    return h.section("figures", f"Figures ({len(drawn)} drawn)", *parts)


# ---------------------------------------------------------------------------
# summary and provenance


def _summary(study: Study) -> h.Raw:
    f = study.frame
    text = (f"{len(f)} QiD measurements of {f.n_params.nunique()} model sizes (N = {size_text(f.n_params.min())} to "
            f"{size_text(f.n_params.max())} non-embedding parameters) at {f.tokens.nunique()} training lengths "
            f"(D = {size_text(f.tokens.min())} to {size_text(f.tokens.max())} tokens), bit widths "
            f"{', '.join(f'{b:g}' for b in sorted(f.bits.unique()))}; "
            f"eval sets {', '.join(sorted(f.eval_set.unique()))}; "
            f"methods {', '.join(sorted(f.method.unique()))}. Laws are fitted to eval set {study.eval_set!r} and "
            f"method {study.method!r}; losses and QiD in {study.unit_words}.{_where_text(study)}")
    dropped = study.source.get("rows_without_tokens")
    note = (f" {count(dropped, 'measurement')} of checkpoints with D = 0 {'is' if dropped == 1 else 'are'} left out."
            if dropped else "")
    others = study.source.get("rows_other_suites")
    if others:
        note += (f" Suite {study.suite!r} only; left out: " + ", ".join(f"{k} ({v} measurements)" for k, v in others.items())
                 + " (choose with --only-suite).")
    return h.section("summary", "Summary", h.paragraph(text + note))


def _where_text(study: Study) -> str:
    """What the study's ``where`` kept: the rows of the laws and the paper's figures."""
    if not study.where:
        return ""
    left = study.source.get("rows_not_selected", 0)
    return (f" Rows: only those with {' and '.join(study.where)} (the data set's primary.where, or --where): the laws, "
            f"Table 1 and the paper's figures use these {len(study.frame)}; {count(left, 'row')} of the suite "
            f"{'is' if left == 1 else 'are'} left out of them, and the figures of runs, cooldowns and averages "
            "(cooldown, peak-lr, averaging: the contiguous-batch runs where a data set has both batch orders; "
            "batch-order) draw from every row.")


def _provenance(study: Study) -> h.Raw:
    info, src = study.store_info, study.source
    rows = [["store", src["path"]], ["store sha256", src.get("sha256", "—")],
            ["suite folders", h.lines(str(p) for p in study.suite_dirs) if study.suite_dirs else "—"]]
    ck = study.checkpoints
    if len(ck):
        per_suite = ck.groupby("suite").agg(models=("model", "nunique"), checkpoints=("step", "size"))
        rows.append(["suites", h.lines(f"{s}: {r.models} models, {r.checkpoints} checkpoints"
                                       for s, r in per_suite.iterrows())])
    if "eval_sets" in info:
        rows.append(["eval sets", h.lines(f"{r['name']}: {r['n_docs']} documents, sha256 {r['content_hash'][:12]}, "
                                          f"source {_source(r['source_json'])}"
                                          for _, r in info["eval_sets"].iterrows())])
    if "methods" in info:
        rows.append(["methods", h.lines(f"{r['method']}: {r['measurements']} measurements, {r['configs']} configs"
                                        for _, r in info["methods"].iterrows())])
    if "runs" in info:
        rows.append(["measured with", h.lines(f"code {r['code_revision']}: {_versions(r['versions_json'])} "
                                              f"({r['measurements']} measurements)"
                                              for _, r in info["runs"].iterrows())])
    record = _report_provenance()
    rows.append(["report built with", f"code {record['code_revision']}: {_versions(record['versions'])}"])
    o = study.options
    where = f", rows where {' and '.join(study.where)}" if study.where else ""
    rows.append(["report options", f"eval set {study.eval_set}, method {study.method}{where}, bootstrap "
                                   f"{o.bootstrap} replicates, seed {o.seed}; losses and QiD in {study.unit_words}"])
    return h.section("provenance", "Provenance", h.table(["what", "value"], rows))


def _source(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    return str(doc.get("path", doc)) if isinstance(doc, dict) else str(doc)


def _versions(versions) -> str:
    if isinstance(versions, str):
        try:
            versions = json.loads(versions)
        except ValueError:
            return versions
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


# ---------------------------------------------------------------------------
# laws


def _laws(study: Study, fits: dict, problems: dict) -> h.Raw:
    header = ["law", "fitted to", "parameters: estimate [95% bootstrap CI] · published", "fit (log space)",
              "extrapolation: mean |rel. error|"]
    groups = [("QiD laws", [n for n, f in fits.items() if f.law.quantity == "qid"]),
              ("16-bit loss laws", [n for n, f in fits.items() if f.law.quantity != "qid"])]
    parts = [h.paragraph("Each law is refitted without the largest N and without the latest D; the error is the mean "
                         "|relative error| of its prediction on the points left out (qidlab.laws.fit, hold-out). A "
                         f"law fitted per group shows the {OVER_GROUPS} ('median'), here and in the holdout "
                         "figure.", "note")]
    if not study.nats_per_token:
        parts.append(h.paragraph(f"Losses and QiD are in {study.unit_words}; the published constants are in nats per "
                                 "token: exponents compare, constants and loss levels do not.", "note"))
    for title, names in groups:
        if names:
            parts += [h.Raw(f"<h3>{h.esc(title)}</h3>"), h.table(header, [_law_row(fits[n]) for n in names])]
    if problems:
        parts += [h.Raw("<h3>Laws not fitted</h3>"),
                  h.table(["law", "why"], [[n, why] for n, why in sorted(problems.items())])]
    return h.section("laws", "Fitted laws", *parts)


def _law_row(fit) -> list:
    return [h.lines([fit.law.name, fit.law.formula]), _fitted_to(fit), _param_lines(fit), _quality(fit),
            _extrapolation(fit)]


def _fitted_to(fit) -> h.Raw:
    d = fit.document["data"]
    what = [f"{fit.results[0].target}, {d['rows']} rows"]
    if "method" in d:
        what.append(f"method {d['method']}, eval set {d['eval_set']}")
    else:
        what.append(f"eval set {d['eval_set']}, {d.get('points', '')}")
    if d["held"]:
        what.append("held at " + ", ".join(f"{k} = {v:g}" for k, v in d["held"].items()))
    if fit.by:
        what.append(f"{len(fit.results)} fits, one per ({', '.join(fit.by)})")
    if d.get("groups_left_out"):
        what.append(f"{count(len(d['groups_left_out']), 'group')} left out (too few points with QiD > 0)")
    return h.lines(what)


def _param_lines(fit) -> h.Raw:
    published = fit.law.default_constants() if fit.law.published else {}
    out = []
    for p in fit.law.param_names:
        values = [r.params[p] for r in fit.results if r.params.get(p) is not None]
        pub = f" · published {h.number(published[p])}" if p in published else ""
        if not values:
            out.append(f"{p}: folded ({fit.results[0].folded.get(p, 'fixed')})")
        elif len(fit.results) == 1:
            ci = (fit.results[0].ci95 or {}).get(p)
            interval = f" [{h.number(ci[0])}, {h.number(ci[1])}]" if ci else ""
            out.append(f"{p} = {h.number(values[0])}{interval}{pub}{_bound_note(fit, p)}")
        else:
            out.append(f"{p}: median {h.number(_median(values))}, range {h.number(min(values))} to "
                       f"{h.number(max(values))} over {len(values)} fits{pub}{_bound_note(fit, p)}")
    out += _resampling_notes(fit)
    return h.lines(out)


def _bound_note(fit, p: str) -> str:
    """" · AT A BOUND" when the fit (or how many of its groups) ended on ``p``'s declared bound."""
    hits = sum(p in getattr(r, "at_bound", []) for r in fit.results)
    if not hits:
        return ""
    lo, hi = fit.law.param(p).bounds
    where = "" if len(fit.results) == 1 else f" in {hits} of {len(fit.results)} fits"
    return f" · AT A DECLARED BOUND ({h.number(lo)} or {h.number(hi)}){where}: not an estimate"


def _resampling_notes(fit) -> list[str]:
    """What the bootstrap resampled (once per distinct description), and its warnings."""
    out: list[str] = []
    for r in fit.results:
        b = r.bootstrap or {}
        if not b:
            continue
        what = ("points" if b.get("resample") == "points" else
                f"{b.get('clusters')} clusters ({b['resample']}) whole, BCa widened")
        for line in (f"CIs: {b['replicates']} replicates resampling {what}",
                     *([f"warning: {b['warning']}"] if b.get("warning") else [])):
            if line not in out:
                out.append(line)
    return out


def _median(values) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _quality(fit) -> h.Raw:
    r2 = [r.metrics["r2_log"] for r in fit.results]
    mape = [r.metrics["mape"] for r in fit.results]
    prefix = "median " if len(fit.results) > 1 else ""
    dropped = sum(r.n_nonpositive for r in fit.results if r.nonpositive_policy == "drop")
    note = f" ({dropped} with {fit.results[0].target} <= 0 left out)" if dropped else ""
    return h.lines([f"{prefix}R² {h.number(_median(r2))}", f"{prefix}mean |rel. err| {_median(mape):.3g}%",
                    f"n = {sum(r.n for r in fit.results)} points{note}"])


def _extrapolation(fit) -> h.Raw:
    """The hold-out errors of the holdout figure: one fit's, or the median over a grouped law's fits."""
    errors = holdout_errors(fit)
    names = {"n_params": "largest N left out", "tokens": "latest D left out"}
    prefix = "median " if len(fit.results) > 1 else ""
    out = [f"{names[k]}: {prefix}{v:.3g}%" for k, v in errors.items() if k in names]
    return h.lines(out or ["— (fewer than three values of N and of D)"])


# ---------------------------------------------------------------------------
# Table 1 and published constants


def _table1(study: Study, fits: dict, predictions: dict) -> h.Raw:
    if "ouyang2024" not in fits:
        return h.section("table1", "Table 1", h.paragraph("Not computed: ouyang2024 could not be fitted."))
    o = study.options
    bits = tuple(o.bits or sorted(fits["ouyang2024"].data.bits.unique()))
    fitted, rows, warnings = _fitted_token_table(fits["ouyang2024"], o.table_sizes, bits, o.table_qids)
    predictions["table1"] = {"rows": rows, "warnings": warnings}
    published = _token_table(get_law("ouyang2024").default_constants(), o.table_sizes, bits, o.table_qids)
    note = (f"Training tokens, in trillions, at which the law predicts each QiD ({study.unit_words}) for each model "
            "size N and bit width P, as the paper's Table 1. '—': not reached for D up to 1e20 tokens. Below each "
            "fitted value: its 95% interval over the fit's bootstrap replicates; '⚠': the cell extrapolates (N or D "
            "more than 2x outside the fitted range, or P outside the fitted bit widths). The published constants have "
            "no interval; they and the paper's table are in nats per (Llama-3) token.")
    if not study.nats_per_token:
        note += (f" This study's QiD is in {study.unit_words}, so its QiD levels are not the paper's: compare the "
                 "fitted exponents, not the cells.")
    return h.section("table1", "Table 1: tokens to reach a QiD", h.paragraph(note, "note"),
                     h.Raw("<h3>From the fitted ouyang2024 law</h3>"), fitted,
                     *(h.paragraph(w, "note") for w in warnings),
                     h.Raw("<h3>From the published unified constants (Eq. 8)</h3>"), published,
                     h.Raw("<h3>The paper's Table 1 as printed</h3>"), _paper_table1(),
                     h.paragraph(get_law("ouyang2024").note, "note"))


def _token_table(params: dict, sizes, bits, qids) -> h.Raw:
    """Rows N, columns (QiD, P); each cell ``analysis.token_grid`` alone, '—' where unreachable."""
    rows = []
    for n in sizes:
        row = [size_text(n)]
        for q in qids:
            for b in bits:
                try:
                    row.append(h.number(float(token_grid("ouyang2024", params, [n], [b], [q]).tokens_trillion[0])))
                except QidlabError:
                    row.append("—")
        rows.append(row)
    return _wide_table(rows, bits, qids)


def _fitted_token_table(fit, sizes, bits, qids) -> tuple[h.Raw, list[dict], list[str]]:
    """Table 1 from a fitted ouyang2024 law: each cell the tokens (trillions), its 95% interval
    (``uncertainty.token_grid_intervals``) and a mark where it extrapolates; the cells as rows
    (report.json) and the grid's warnings."""
    pick = sources_for("ouyang2024", fit=fit.document)
    params = fit.params({})
    table_rows, records, items = [], [], []
    for n in sizes:
        row = [size_text(n)]
        for q in qids:
            for b in bits:
                try:
                    grid = token_grid("ouyang2024", params, [n], [b], [q])
                except QidlabError:
                    row.append("—")
                    continue
                grid, _ = token_grid_intervals(pick, grid)
                cell = grid.iloc[0]
                items.append((pick({"n_params": float(n), "bits": float(b)}), cell.extrapolation))
                mark = " ⚠" if cell.extrapolation else ""
                span = (f"[{h.number(cell.interval[0] / 1e12, 3)}, {h.number(cell.interval[1] / 1e12, 3)}]"
                        if cell.interval is not None else "")
                row.append(h.lines([h.number(float(cell.tokens_trillion)) + mark] + ([span] if span else [])))
                records.append({"n_params": float(n), "bits": float(b), "qid": float(q), "tokens": float(cell.tokens),
                                "interval": cell.interval, "interval_note": cell.interval_note,
                                "extrapolation": cell.extrapolation})
        table_rows.append(row)
    return _wide_table(table_rows, bits, qids), records, grid_warnings(items)


def _wide_table(rows, bits, qids) -> h.Raw:
    top = "<tr><th></th>" + "".join(f'<th colspan="{len(bits)}">QiD = {q:g}</th>' for q in qids) + "</tr>"
    header = ["N"] + [f"{b:g} bits" for _ in qids for b in bits]
    return h.table(header, rows, numeric=range(1, len(header)), extra_header=top)


def _paper_table1() -> h.Raw:
    paper = data.load("ouyang2024-table1")
    bits, qids = sorted(paper.bits.unique()), sorted(paper.qid.unique())
    cells = paper.set_index(["n_params", "qid", "bits"]).tokens_trillion
    rows = [[size_text(n)] + [h.number(cells[(n, q, b)]) for q in qids for b in bits]
            for n in sorted(paper.n_params.unique())]
    return _wide_table(rows, bits, qids)


def _fig1_table(study: Study, predictions: dict) -> h.Raw:
    """Fig. 1's crossings: where loss16 + QiD of the fitted law passes ln(V), with the 95%
    interval and the extrapolation of each, and the vocabulary note."""
    try:
        data = projection_data(study)
    except QidlabError as exc:
        return h.section("fig1", "Fig. 1: tokens to worse than random", h.paragraph(f"Not computed: {exc}"))
    if data["random"] is None:
        predictions["fig1"] = {"crossings": [], "not_computed": data["random_missing"]}
        return h.section("fig1", "Fig. 1: tokens to worse than random",
                         h.paragraph(f"Not computed: {data['random_missing']}."))
    rows, records = [], []
    for _, c in data["crossings"].iterrows():
        t = c.tokens_worse_than_random
        cross = "not within the projection" if t is None or t != t else h.number(t)
        span = _crossing_span(c.interval) if c.interval is not None else c.interval_note
        flagged = ", ".join(e["variable"] for e in c.extrapolation) if c.extrapolation else (
            "range unknown" if c.extrapolation is None else "no")
        rows.append([size_text(c.n_params), f"{c.bits:g}", cross, span, flagged])
        records.append({"n_params": float(c.n_params), "bits": float(c.bits), "tokens_worse_than_random": t,
                        "interval": c.interval, "extrapolation": c.extrapolation})
    predictions["fig1"] = {"crossings": records, "warnings": data["warnings"], "random_level_note": data["vocab_note"]}
    note = (f"Tokens D at which the fitted ouyang2024 QiD plus loss16 ({data['loss16_source']}) exceeds "
            f"ln({data['vocab']}) = {data['random']:.2f} nats, the loss of a uniform guess (Fig. 1's grey area), "
            "with its 95% interval over the bootstrap replicates ('beyond': some replicates never cross within the "
            "projection) and the variables that extrapolate at the crossing.")
    extra = [h.paragraph(w, "note") for w in data["warnings"]]
    if data["vocab_note"]:
        extra.append(h.paragraph("Note: " + data["vocab_note"], "note"))
    return h.section("fig1", "Fig. 1: tokens to worse than random", h.paragraph(note, "note"),
                     h.table(["N", "bits", "worse than random from D", "95% interval", "extrapolated"], rows,
                             numeric=(2,)), *extra)


def _crossing_span(interval) -> str:
    lo, hi = interval
    if not math.isfinite(lo):
        return "every replicate beyond the projection"
    return f"[{h.number(lo)}, {h.number(hi) if math.isfinite(hi) else 'beyond'}]"


def _model_choice(study: Study, predictions: dict) -> h.Raw:
    """``laws.compare.compare_laws`` on the primary slice: one row per held-out slice, one column
    per QiD law family, the out-of-sample rmse of ln(predicted / measured QiD); then the summary."""
    data, held = hold_settings(study.primary, keep=("n_params", "tokens", "bits"))
    try:
        doc = compare_laws(data)
    except QidlabError as exc:
        return h.section("model-choice", "Model choice (out of sample)", h.paragraph(f"Not computed: {exc}"))
    predictions["model_choice"] = doc
    names = [f["name"] for f in doc["families"]]
    rows = []
    for s in doc["slices"]:
        scored = {n: e["rmse_log"] for n, e in s["errors"].items() if "rmse_log" in e}
        best = min(scored, key=scored.get) if scored else None
        cells = [h.Raw(f"<b>{h.number(scored[n])}</b>") if n == best
                 else (h.number(scored[n]) if n in scored else "n/a") for n in names]
        rows.append([s["label"], s["n_test"], *cells])
    by_name = {r["family"]: r for r in doc["summary"]}
    rows.append([h.Raw("<b>mean over slices</b>"), ""] + [h.number(by_name[n]["mean_rmse_log"]) for n in names])
    rows.append(["slices won", ""] + [by_name[n]["wins"] for n in names])
    rows.append(["fitted parameters", ""] + [by_name[n]["n_params"] for n in names])
    held_text = (", settings held at " + ", ".join(f"{k} = {v:g}" for k, v in held.items())) if held else ""
    note = (f"Each QiD law family refitted without one slice and scored on it: every model size N in turn, then the "
            f"latest D of every size. Error: {h.esc(doc['metric'])} (bold: the best of the row). Method "
            f"{h.esc(study.method)}, eval set {h.esc(study.eval_set)}{h.esc(held_text)}. "
            "<code>qidlab fit DATA --compare</code> prints the same.")
    families = h.lines(f"{f['name']}: {f['formula']}" + (" (fitted per bit width)" if f["by"] else "")
                       for f in doc["families"])
    verdict = (f"Lowest mean error: {doc['best']}; chosen: {doc['chosen']} (the family with the fewest parameters "
               f"within {doc['parsimony']:.0%} of the lowest mean error).")
    return h.section("model-choice", "Model choice (out of sample)", h.paragraph(h.Raw(note), "note"),
                     h.paragraph(families, "note"),
                     h.table(["held out", "points", *names], rows, numeric=range(1, len(names) + 2)),
                     h.paragraph(verdict))


def _published(fits: dict) -> h.Raw:
    rows = []
    for name, fit in fits.items():
        for key, pub in fit.law.published.items():
            values = ", ".join(f"{k} = {h.number(v)}" for k, v in pub.values.items())
            flag = "" if pub.verified else " (unverified)"
            rows.append([name, key + flag, values, h.lines([pub.source] + ([pub.note] if pub.note else []))])
    if not rows:
        return h.section("published", "Published constants", h.paragraph("No fitted law has published constants."))
    return h.section("published", "Published constants of the fitted laws",
                     h.table(["law", "set", "values", "source"], rows))

