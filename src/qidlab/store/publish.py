"""Publishing a store as a data set: ``publish_store(db, name, out_dir)`` writes ``out_dir/name/``,
the form ``qidlab.data`` loads by name (``qidlab fit NAME``, ``qidlab report NAME``):

* ``measurements.parquet``: the canonical table (the store's ``canonical`` view: every QiD
  measurement, the 16-bit references left out; N non-embedding parameters, D tokens, losses
  and QiD in the unit the measurements were scored in: nats per token unless their config's
  ``[scoring] unit`` says otherwise, e.g. bits per byte; the manifest's ``units`` say which) plus
  ``config_hash``, sorted by suite, model, step, eval set, method, bits, config; and, when
  ``columns=`` is given, its extra per-checkpoint columns joined on (suite, model, step) (e.g.
  ``qidlab.train.trajectories``' kind, lr reached, decay), each described in the manifest.
  Parquet, not CSV: typed columns (integers stay integers, empty cells stay NULL), floats stored
  exactly, a few times smaller, and pyarrow is already a dependency.
* ``doc_losses.parquet``: per-document losses (suite, model, step, eval_set, config_hash,
  doc_index, nll_sum in nats, n_tokens, n_bytes) of every measurement, the 16-bit references
  included (the other half of each paired bootstrap), *only if small*: with ``doc_losses="auto"``
  they are shipped when their file is at most ``DOC_LOSSES_MAX_BYTES`` (2 MiB), so that a
  shipped data set stays a few MB; ``"always"`` / ``"never"`` decide outright. The manifest
  says how many rows there were and why they are absent when they are.
* ``tasks.parquet``: the downstream-task results (the ``task_results`` table of a study's ``[[tasks]]``,
  lm-evaluation-harness) of the quantized models, one row per checkpoint x config x task x metric:
  N, D and the method's columns as in the measurements, ``task``, ``metric``, ``value``, ``stderr``,
  ``value16`` (the 16-bit model's), ``delta`` = value - value16, ``higher_is_better``, ``n_docs``,
  ``config_hash``; written when the store has such rows (the manifest's ``files.tasks`` says why not
  otherwise), and read by ``qidlab fit NAME --target task:TASK:METRIC``.
* ``manifest.json``: name, description, units (every column's meaning and unit, the extra
  columns' included; ``columns``: which were joined on, only with ``columns=``), files (rows,
  bytes, sha256), counts, suites (from
  the checkpoints table, with each suite's ``qidlab-suite.toml`` / ``.json`` manifest and vocabulary
  size where the suite folder is found: ``qidlab.checkpoints.suites``), checkpoints, eval sets (name, content hash, documents,
  source), methods and their configs (config JSON by hash), the library versions and code
  revisions the rows were measured with, the devices recorded, the store's ``merged_from``
  and ``dropped`` records (``qidlab.store.drop``: models whose rows were deleted before a retrained
  model's were merged), settings measured under several configs (``qidlab.store.merge``: each such point is
  in the table more than once), the code that published it, ``left_out`` (with
  ``keep_untrained=False``: the rows of D = 0 checkpoints left out), and the caller's own entries
  (``fields=``: e.g. a campaign's design and status; they may not replace the entries above). No
  timestamps: the same store published by the same code gives the same files.

Everything is written into a temporary folder next to the target and renamed into place; an
existing target is replaced only if it is a data set (has a manifest). ``publish_dataset`` returns
the folder and the manifest as written (``Published``); ``publish_store`` the folder alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import provenance
from ..checkpoints import suites as suite_folders
from ..dataset_format import BUNDLED, FORMAT, MANIFEST, split_condition
from ..errors import QidlabError
from ..files import building
from .db import canonical_query, check_store, read_only
from .merge import duplicate_settings
from .read import CONFIGS, QUERIES, frames
from .units import DEFAULT_LOSS_UNIT, LOSS_UNITS, loss_unit

MEASUREMENTS = "measurements.parquet"
DOC_LOSSES = "doc_losses.parquet"
TASKS = "tasks.parquet"
DOC_LOSSES_MAX_BYTES = 2 * 1024 * 1024
DOC_LOSSES_CHOICES = ("auto", "always", "never")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
UNITS = {"n_params": "non-embedding parameters (N)", "n_params_total": "all parameters",
         "tokens": "training tokens seen by the checkpoint (D)", "bits": "weight bit width (P)",
         "loss16": "nats per token (16-bit model)", "loss": "nats per token (quantized model)",
         "qid": "nats per token, loss - loss16", "nll_sum": "nats, summed over a document's tokens"}
#: The columns an extra per-checkpoint table (``columns=``) is joined on.
COLUMN_KEYS = ("suite", "model", "step")
SORT = ["suite", "model", "step", "eval_set", "method", "bits", "config_hash"]
TASK_SORT = ["suite", "model", "step", "task", "metric", "method", "bits", "config_hash"]

_DOC_LOSSES = (
    "SELECT c.suite, c.model, c.step, e.name AS eval_set, m.config_hash, d.doc_index, d.nll_sum, d.n_tokens, "
    "d.n_bytes FROM doc_losses d JOIN measurements m ON m.id = d.measurement_id "
    "JOIN checkpoints c ON c.id = m.checkpoint_id JOIN eval_sets e ON e.id = m.eval_set_id "
    "ORDER BY c.suite, c.model, c.step, e.name, m.config_hash, d.doc_index")

#: ``task_results`` of the quantized models (the 16-bit values are every row's ``value16``), N and D joined.
_TASKS = ("SELECT c.n_params, c.n_params_total, c.tokens, t.bits, t.group_size, t.exp_bits, t.man_bits, t.block_size, "
          "t.method, t.task, t.metric, t.value, t.stderr, t.value16, t.delta, t.higher_is_better, t.n_docs, "
          "c.suite, c.model, c.step, t.config_hash FROM task_results t "
          "JOIN checkpoints c ON c.id = t.checkpoint_id WHERE t.method != 'none'")
_TASK_CONFIGS = ("SELECT config_hash, method, task, MIN(config_json) AS config_json, COUNT(*) AS rows "
                 "FROM task_results WHERE method != 'none' GROUP BY config_hash, method, task "
                 "ORDER BY task, method, config_hash")


@dataclass(frozen=True)
class Published:
    """A data set just written: its folder, and its manifest as written to ``manifest.json``
    (JSON values, keys sorted; see the module docstring)."""

    folder: Path
    manifest: dict[str, Any]


def publish_store(db: str | Path, name: str, out_dir: str | Path, *, description: str = "",
                  suites: Sequence[str | Path] = (), doc_losses: str = "auto",
                  primary: Mapping[str, str] | None = None, columns=None,
                  column_meanings: Mapping[str, str] | None = None,
                  fields: Mapping[str, Any] | None = None, keep_untrained: bool = True) -> Path:
    """Write the store ``db`` as data set ``name`` into ``out_dir/name/``; return that folder
    (``publish_dataset`` says the arguments)."""
    return publish_dataset(db, name, out_dir, description=description, suites=suites, doc_losses=doc_losses,
                           primary=primary, columns=columns, column_meanings=column_meanings, fields=fields,
                           keep_untrained=keep_untrained).folder


def publish_dataset(db: str | Path, name: str, out_dir: str | Path, *, description: str = "",
                    suites: Sequence[str | Path] = (), doc_losses: str = "auto",
                    primary: Mapping[str, str] | None = None, columns=None,
                    column_meanings: Mapping[str, str] | None = None,
                    fields: Mapping[str, Any] | None = None, keep_untrained: bool = True) -> Published:
    """Write the store ``db`` as data set ``name`` into ``out_dir/name/``; return that folder and
    the manifest written. ``suites``: suite folders besides those found from the stored checkpoint
    paths. ``primary``: the slice (``suite``, ``eval_set``, ``method``) the figures and the report
    draw by default, recorded in the manifest; each value must occur in the measurements (of that
    suite); its ``where`` (a list of ``COLUMN=V1,V2`` / ``COLUMN>=X`` conditions on the table's
    columns, extra ones included) names the rows the laws and the paper's figures keep. ``columns``:
    a pandas frame of extra per-checkpoint columns keyed by ``COLUMN_KEYS``
    (suite, model, step), exactly one row per measured checkpoint, joined onto
    ``measurements.parquet``; ``column_meanings``: each extra column's meaning and unit (required
    for every one), recorded in the manifest's ``units``. ``fields``: more top-level manifest
    entries (JSON values), none of the names publishing writes itself. ``keep_untrained=False``
    leaves out the rows of checkpoints with D = 0 tokens (step 0: random initialisation), which a
    data set's table cannot hold (``qidlab.tables``: D > 0), recorded in the manifest's
    ``left_out``. With none of these the files are those of earlier versions, byte for byte."""
    _check_name(name)
    if doc_losses not in DOC_LOSSES_CHOICES:
        raise QidlabError(f"doc_losses must be one of {', '.join(DOC_LOSSES_CHOICES)}, not {doc_losses!r}")
    db, target = Path(db), Path(out_dir) / name
    check_store(db)
    if target.exists() and not (target / MANIFEST).is_file():
        raise QidlabError(f"{target}: exists and is not a qidlab data set (no {MANIFEST}); not replacing it")
    with read_only(db) as conn:
        tables = _read(conn)
    if not keep_untrained:
        tables["left_out"] = _leave_out_untrained(tables)
    if tables["measurements"].empty:
        raise QidlabError(f"{db}: the store has no QiD measurements to publish")
    suite_dirs = _suite_dirs(tables["checkpoints"], db.parent, suites)
    tables["units"] = units_of(tables["configs"], db)
    _check_fields(dict(fields or {}))
    if columns is not None:
        tables["measurements"], tables["columns"] = join_columns(tables["measurements"], columns,
                                                                 dict(column_meanings or {}))
        tables["units"] = {**tables["units"], **tables["columns"]["meanings"]}
    tables["primary"] = _check_primary(dict(primary or {}), tables["measurements"], db)  # where: on joined columns
    tables["published_with"] = provenance.record()  # before the temporary folder makes a checkout look modified
    with building(target) as tmp:  # an old data set there is replaced only once the new one is complete
        files = _write_tables(tmp, tables, doc_losses)
        manifest = {**build_manifest(name, description, db, tables, files, suite_dirs), **dict(fields or {})}
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        (tmp / MANIFEST).write_text(text)
    return Published(folder=target, manifest=json.loads(text))


def _check_name(name: str) -> None:
    if not NAME.match(name or ""):
        raise QidlabError(f"data set name {name!r}: use lower-case letters, digits, '.', '-' and '_' "
                          "(starting with a letter or digit)")
    if name in BUNDLED:
        raise QidlabError(f"data set name {name!r} is taken by a bundled table")


def _read(conn) -> dict[str, Any]:
    tables: dict[str, Any] = frames(conn, {
        "measurements": canonical_query("config_hash"), "doc_losses": _DOC_LOSSES,
        "checkpoints": QUERIES["checkpoints"], "eval_sets": QUERIES["eval_sets"], "runs": QUERIES["runs"],
        "configs": CONFIGS})
    tables["measurements"] = tables["measurements"].sort_values(SORT, kind="stable").reset_index(drop=True)
    tables.update(_read_tasks(conn))
    return {
        **tables,
        "meta": dict(conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()),
        "duplicates": duplicate_settings(conn),
        "references": int(conn.execute("SELECT COUNT(*) FROM measurements WHERE method = 'none'").fetchone()[0]),
    }


def _read_tasks(conn) -> dict[str, Any]:
    """``tasks`` and ``task_configs`` frames; empty for a store without ``task_results`` (before schema 3)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_results'").fetchone():
        out = frames(conn, {"tasks": _TASKS, "task_configs": _TASK_CONFIGS})
        out["tasks"] = out["tasks"].sort_values(TASK_SORT, kind="stable").reset_index(drop=True)
        return out
    import pandas as pd

    return {"tasks": pd.DataFrame(), "task_configs": pd.DataFrame(columns=["config_hash", "method", "task",
                                                                            "config_json", "rows"])}


# ---------------------------------------------------------------------------
# the data files


def _write_tables(folder: Path, tables: dict, doc_losses: str) -> dict[str, dict]:
    """Write the Parquet files; return their entries of the manifest's ``files``."""
    files = {"measurements": _parquet(tables["measurements"], folder / MEASUREMENTS)}
    docs = tables["doc_losses"]
    entry: dict[str, Any] = {"path": None, "rows": int(len(docs)), "rule": _rule(doc_losses)}
    if doc_losses != "never" and len(docs):
        written = _parquet(docs, folder / DOC_LOSSES)
        if doc_losses == "always" or written["bytes"] <= DOC_LOSSES_MAX_BYTES:
            entry = {**written, "rule": entry["rule"]}
        else:
            (folder / DOC_LOSSES).unlink()
            entry["reason"] = f"left out: {written['bytes']} bytes > {DOC_LOSSES_MAX_BYTES}"
    elif not len(docs):
        entry["reason"] = "the store has no per-document losses"
    else:
        entry["reason"] = "left out on request"
    files["doc_losses"] = entry
    tasks = tables["tasks"]
    files["tasks"] = (_parquet(tasks, folder / TASKS) if len(tasks) else
                      {"path": None, "rows": 0, "reason": "the store has no task results of quantized models"})
    return files


def _rule(choice: str) -> str:
    if choice == "auto":
        return f"shipped when the file is at most {DOC_LOSSES_MAX_BYTES} bytes"
    return {"always": "always shipped (on request)", "never": "never shipped (on request)"}[choice]


def _parquet(frame, path: Path) -> dict[str, Any]:
    frame.to_parquet(path, index=False, compression="zstd")
    return {"path": path.name, "rows": int(len(frame)), "bytes": path.stat().st_size,
            "sha256": provenance.file_sha256(path)}


# ---------------------------------------------------------------------------
# the manifest


def build_manifest(name: str, description: str, db: Path, tables: dict, files: dict,
                   suite_dirs: dict[str, list[Path]]) -> dict[str, Any]:
    """The ``manifest.json`` document of a data set (see the module docstring)."""
    m, ck = tables["measurements"], tables["checkpoints"]
    meta = tables["meta"]
    return {
        "format": FORMAT, "name": name, "description": description, "units": tables.get("units", UNITS),
        "files": files,
        "counts": {"measurements": int(len(m)), "references": tables["references"], "checkpoints": int(len(ck)),
                   "suites": int(ck.suite.nunique()), "models": int(len(ck.groupby(["suite", "model"]))),
                   "eval_sets": int(len(tables["eval_sets"])), "doc_losses": files["doc_losses"]["rows"],
                   "task_results": files["tasks"]["rows"]},
        "duplicate_settings": tables["duplicates"],
        "suites": [_suite_entry(s, rows, suite_dirs.get(s, [])) for s, rows in ck.groupby("suite", sort=True)],
        "checkpoints": _records(ck),
        "eval_sets": [{"name": r.name, "content_hash": r.content_hash, "n_docs": int(r.n_docs),
                       "source": _json(r.source_json)} for r in tables["eval_sets"].itertuples()],
        "methods": _methods(m, tables["configs"]),
        "configs": [{"config_hash": r.config_hash, "method": r.method, "measurements": int(r.measurements),
                     "config": _json(r.config_json)} for r in tables["configs"].itertuples()],
        "tasks": _tasks(tables["tasks"]),
        "task_configs": [{"config_hash": r.config_hash, "method": r.method, "task": r.task, "rows": int(r.rows),
                          "config": _json(r.config_json)} for r in tables["task_configs"].itertuples()],
        "runs": [{"code_revision": r.code_revision, "versions": _json(r.versions_json),
                  "measurements": int(r.measurements)} for r in tables["runs"].itertuples()],
        "code_revisions": sorted(set(tables["runs"].code_revision)),
        "devices": _json(meta.get("devices", "[]")),
        "store": {"file": db.name, "sha256": provenance.file_sha256(db), "schema_version": meta.get("schema_version"),
                  "merged_from": _json(meta.get("merged_from", "[]")), "dropped": _json(meta.get("dropped", "[]"))},
        "published_with": tables["published_with"],
        "primary": tables["primary"],
        **({"columns": {k: v for k, v in tables["columns"].items() if k != "meanings"}} if "columns" in tables else {}),
        **({"left_out": tables["left_out"]} if "left_out" in tables else {}),
    }


def _leave_out_untrained(tables: dict) -> dict[str, Any]:
    """Drop the rows of checkpoints with D = 0 from the measurements, per-document losses and task
    results (in place); return the manifest's ``left_out`` entry."""
    keys = ["suite", "model", "step"]
    ck = tables["checkpoints"]
    untrained = ck[ck.tokens <= 0][keys]
    counts = {}
    for name in ("measurements", "doc_losses", "tasks"):
        frame = tables[name]
        if frame.empty:
            counts[name] = 0
            continue
        hit = frame[keys].merge(untrained, on=keys, how="left", indicator=True)["_merge"].eq("both").to_numpy()
        counts[name] = int(hit.sum())
        tables[name] = frame[~hit].reset_index(drop=True)
    return {"rows": counts, "checkpoints": [f"{r.suite}/{r.model}/step{r.step}" for r in untrained.itertuples()],
            "why": "checkpoints with D = 0 tokens (random initialisation): a data set's table needs D > 0 "
                   "(qidlab.tables); the store keeps them"}


#: The top-level entries ``build_manifest`` writes (``columns`` only with ``columns=``).
WRITTEN = ("format", "name", "description", "units", "files", "counts", "duplicate_settings", "suites",
           "checkpoints", "eval_sets", "methods", "configs", "tasks", "task_configs", "runs", "code_revisions",
           "devices", "store", "published_with", "primary", "columns", "left_out")


def _check_fields(fields: dict) -> None:
    """A caller's ``fields`` may not replace an entry publishing writes."""
    taken = sorted(set(fields) & set(WRITTEN))
    if taken:
        raise QidlabError(f"fields: {taken[0]!r} is written by publishing itself (choose another name)")



def units_of(configs, db: Path) -> dict[str, str]:
    """``UNITS`` in the unit the measurements were scored in: every config's ``[scoring] unit``
    (``config_json``; absent = nats per token). Several units in one store are an error: their QiD
    would not be comparable in one table."""
    unit = loss_unit(configs.config_json, db)
    if unit == DEFAULT_LOSS_UNIT:
        return dict(UNITS)
    words = LOSS_UNITS.get(unit, unit.replace("_", " "))
    return {**UNITS, "loss16": f"{words} (16-bit model)", "loss": f"{words} (quantized model)",
            "qid": f"{words}, loss - loss16"}


def join_columns(measurements, columns, meanings: dict[str, str]):
    """``(measurements with the extra columns joined on COLUMN_KEYS, the manifest's columns entry)``.
    One ``QidlabError`` for: a frame without the keys or without extra columns, an extra column
    the table already has or without a meaning, a meaning of no column, a non-integer step,
    duplicate keys, a row of no measured checkpoint, a measured checkpoint without a row."""
    import pandas as pd

    if not isinstance(columns, pd.DataFrame):
        raise QidlabError(f"columns: a pandas DataFrame keyed by {', '.join(COLUMN_KEYS)}, "
                          f"not {type(columns).__name__}")
    keys = list(COLUMN_KEYS)
    missing = [k for k in keys if k not in columns.columns]
    extra = [str(c) for c in columns.columns if c not in keys]
    if missing or not extra:
        raise QidlabError(f"columns: needs the key columns {', '.join(keys)} and at least one more "
                          f"(have: {', '.join(map(str, columns.columns))})")
    _check_meanings(extra, meanings, measurements)
    frame = _keyed(columns, keys)
    frame = frame[keys + extra]
    have = measurements[keys].drop_duplicates()
    found = have.merge(frame[keys], on=keys, how="outer", indicator=True)
    unmatched = found[found["_merge"] == "right_only"]
    if len(unmatched):
        raise QidlabError(f"columns: {len(unmatched)} rows match no measured checkpoint, e.g. "
                          f"{_key_text(unmatched.iloc[0])}")
    lacking = found[found["_merge"] == "left_only"]
    if len(lacking):
        raise QidlabError(f"columns: no row for {len(lacking)} measured checkpoints, e.g. {_key_text(lacking.iloc[0])}")
    joined = measurements.merge(frame, on=keys, how="left", validate="many_to_one")
    entry = {"joined_on": keys, "extra": extra, "checkpoints": int(len(frame)),
             "meanings": {c: meanings[c] for c in extra}}
    return joined, entry


def _check_meanings(extra: list[str], meanings: dict[str, str], measurements) -> None:
    clash = [c for c in extra if c in measurements.columns]
    if clash:
        raise QidlabError(f"columns: {clash[0]!r} is already a column of the measurements (rename it)")
    undescribed = [c for c in extra if not str(meanings.get(c) or "").strip()]
    if undescribed:
        raise QidlabError(f"columns: no meaning given for {undescribed[0]!r} (column_meanings: "
                          "each extra column's meaning and unit)")
    unknown = sorted(set(meanings) - set(extra))
    if unknown:
        raise QidlabError(f"column_meanings: {unknown[0]!r} is not an extra column (have: {', '.join(extra)})")


def _keyed(columns, keys: list[str]):
    """``columns`` with an integer ``step``; duplicate keys are an error."""
    import pandas as pd

    frame = columns.reset_index(drop=True)
    steps = pd.to_numeric(frame["step"], errors="coerce")
    bad = steps.isna() | (steps != steps.round())
    if bad.any():
        raise QidlabError(f"columns: step {frame['step'][bad].iloc[0]!r} is not an integer")
    frame = frame.assign(step=steps.astype("int64"), suite=frame["suite"].astype(str), model=frame["model"].astype(str))
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        raise QidlabError(f"columns: {int(dup.sum())} rows share their keys, e.g. {_key_text(frame[dup].iloc[0])}")
    return frame


def _key_text(row) -> str:
    return f"suite {row['suite']!r}, model {row['model']!r}, step {int(row['step'])}"


PRIMARY_KEYS = ("suite", "eval_set", "method")
#: ``primary``'s list of row conditions (``dataset_format.CONDITION``) that the laws and the paper's
#: figures keep (e.g. ``["kind=run", "lr_factor=1"]``); what else the figures draw sees every row.
PRIMARY_WHERE = "where"


def _check_primary(primary: dict, measurements, db: Path) -> dict:
    """``primary`` if its keys are known, its values measured together and each of its ``where``
    conditions (``PRIMARY_WHERE``) a condition on a column of the table; one error otherwise."""
    unknown = sorted(set(primary) - {*PRIMARY_KEYS, PRIMARY_WHERE})
    if unknown:
        raise QidlabError(f"primary: unknown key {unknown[0]!r} (known: {', '.join((*PRIMARY_KEYS, PRIMARY_WHERE))})")
    where = _check_where(primary.get(PRIMARY_WHERE), measurements)
    rows = measurements
    for key in PRIMARY_KEYS:  # in this order: the eval set and method must occur in the chosen suite
        if key in primary:
            if primary[key] not in set(rows[key]):
                raise QidlabError(f"primary {key}={primary[key]!r}: not in {db}'s measurements"
                                  + (f" of suite {primary['suite']!r}" if key != "suite" and "suite" in primary else "")
                                  + f" (have: {', '.join(sorted(map(str, set(rows[key]))))})")
            rows = rows[rows[key] == primary[key]]
    return {**{k: primary[k] for k in PRIMARY_KEYS if k in primary}, **({PRIMARY_WHERE: where} if where else {})}


def _check_where(where, measurements) -> list[str]:
    """``primary``'s ``where``: a list of row conditions, each on a column of ``measurements``
    (what they select is checked where they are applied, ``qidlab.tables.select_rows``)."""
    if where is None:
        return []
    if isinstance(where, str) or not all(isinstance(w, str) for w in where):
        raise QidlabError(f"primary {PRIMARY_WHERE}: a list of conditions COLUMN=V1,V2 or COLUMN>=X, not {where!r}")
    for item in where:
        parts = split_condition(item)
        if parts is None:
            raise QidlabError(f"primary {PRIMARY_WHERE}: expects COLUMN=V1,V2 or COLUMN>=X, got {item!r}")
        if parts[0] not in measurements.columns:
            raise QidlabError(f"primary {PRIMARY_WHERE} {item!r}: no column {parts[0]!r} in the table "
                              f"(have: {', '.join(map(str, measurements.columns))})")
    return list(where)


def _methods(m, configs) -> list[dict]:
    out = []
    for method, rows in m.groupby("method", sort=True):
        out.append({"method": method, "measurements": int(len(rows)),
                    "configs": int((configs.method == method).sum()),
                    "bits": sorted(float(b) for b in rows.bits.unique())})
    return out


def _tasks(rows) -> list[dict]:
    """Per task and metric: rows, methods, whether higher is better (None: lm_eval does not say)."""
    out = []
    if rows.empty:
        return out
    for (task, metric), r in rows.groupby(["task", "metric"], sort=True):
        hib = r.higher_is_better.dropna().unique()
        out.append({"task": task, "metric": metric, "rows": int(len(r)), "methods": sorted(set(r.method)),
                    "higher_is_better": bool(hib[0]) if len(hib) == 1 else None})
    return out


def _suite_entry(suite: str, rows, folders: list[Path]) -> dict[str, Any]:
    models = [{"model": model, "n_params": int(r.n_params.iloc[0]), "n_params_total": int(r.n_params_total.iloc[0]),
               "steps": [int(s) for s in r.step], "tokens": [int(t) for t in r.tokens]}
              for model, r in rows.groupby("model", sort=True)]
    return {"suite": suite, "models": models, "vocab_size": suite_folders.vocab_size(rows.path, folders),
            "manifests": [found for found in map(suite_folders.suite_manifest, folders) if found]}


def _suite_dirs(checkpoints, store_dir: Path, extra: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Suite folders by suite name: those of the stored checkpoints that exist (relative paths
    also tried from the store's folder), and the ``extra`` ones, matched by their manifest's suite
    name or their folder name."""
    out = {suite: suite_folders.stored_suite_folders(rows.path, store_dir)
           for suite, rows in checkpoints.groupby("suite", sort=False)}
    for folder in suite_folders.given_suite_folders(extra):
        out.setdefault(suite_folders.suite_name(folder), []).append(folder)
    return out


def _records(frame) -> list[dict]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _json(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
