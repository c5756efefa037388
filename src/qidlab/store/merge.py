"""Merging stores: ``merge_stores(sources, dest)`` copies each source store's checkpoints, eval
sets, measurements (with their per-document losses) and fits into ``dest``.

Many short jobs (a GPU campaign) each fill their own store; the merged store is what the laws
and the report read. Rows are identified as in one store, by the schema's UNIQUE keys and
content hashes, never by their integer ids (which are renumbered):

* a checkpoint by (suite, model, step); its content hash, N, total parameters and D must agree;
* an eval set by its content hash and its name (the canonical table names eval sets, so one
  name must mean one content, and one content one name);
* a measurement by (checkpoint, eval set, config hash); its values (method, bits and the other
  data-contract settings, config JSON, loss16, loss, QiD and its CI, tokens scored) must agree.
  Per-document losses come with a new measurement; they are not compared (their sum is the
  loss that is). Provenance (versions_json, code_revision) is copied per row as it is.
* a fit by its whole content.

A row already present with the same values is left as it is, so merging a store twice adds
nothing. A row present with *different* values is a conflict. ``on_conflict="error"`` (the
default) stops at the first source with conflicts: one ``QidlabError`` naming both stores and
the first disagreements. It is the default because a conflict means two runs disagree about
the same checkpoint or the same measurement (a retrained checkpoint under an old name, an eval
set rebuilt under the same name, a non-deterministic method); keeping either row silently
would bias every fit made from the merged store, and only the user knows which one is right.
``on_conflict="skip"`` keeps the destination's row, skips the source's (with the measurements
of a skipped checkpoint or eval set), and reports each conflict in the summary.

Each source is merged in one transaction: a failing source leaves the destination as it was
before that source (sources merged before it stay merged, each whole; rerunning is
idempotent). Every source is checked first (a SQLite file, the qidlab schema, the same schema
version, passes ``PRAGMA quick_check``), so a corrupt or foreign file stops the merge before
anything is written. The destination's ``meta`` table gets a ``merged_from`` record: one entry
per source file merged (path, sha256, its meta, rows added), and ``devices`` the union of the
sources' devices.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import provenance
from ..errors import QidlabError
from .db import check_store, close, columns, connect, meta_json, set_meta

ON_CONFLICT = ("error", "skip")
TABLES = ("checkpoints", "eval_sets", "measurements", "doc_losses", "fits", "task_results")
#: Measurement columns that must agree between two rows of the same key.
VALUES = ("method", "bits", "group_size", "exp_bits", "man_bits", "block_size", "config_json", "loss16", "loss",
          "qid", "qid_ci_low", "qid_ci_high", "n_tokens")
#: Measurement columns a merge does not copy as they are (ids renumbered in the destination).
IDS = ("id", "checkpoint_id", "eval_set_id")
SHOWN = 3  # conflicts named in an error message


@dataclass
class SourceSummary:
    """What merging one source did: rows added per table, rows already present, conflicts."""

    path: str
    sha256: str
    added: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    skipped_measurements: int = 0  # of conflicting checkpoints/eval sets, or conflicting themselves


@dataclass
class MergeSummary:
    dest: str
    on_conflict: str
    sources: list[SourceSummary] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # in the destination afterwards: see ``duplicate_settings``

    def total(self, what: str = "added") -> dict[str, int]:
        return {t: sum(getattr(s, what).get(t, 0) for s in self.sources) for t in TABLES}

    def to_dict(self) -> dict:
        return {"dest": self.dest, "on_conflict": self.on_conflict, "added": self.total("added"),
                "present": self.total("present"), "duplicates": self.duplicates,
                "sources": [vars(s) for s in self.sources]}


def merge_stores(sources: Sequence[str | Path], dest: str | Path, *, on_conflict: str = "error") -> MergeSummary:
    """Merge the stores ``sources`` into ``dest`` (created if missing); see the module docstring."""
    if on_conflict not in ON_CONFLICT:
        raise QidlabError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    if not sources:
        raise QidlabError("merge needs at least one source store")
    dest = Path(dest)
    paths = [Path(s) for s in sources]
    for path in paths:
        check_store(path)
        if dest.exists() and path.resolve() == dest.resolve():
            raise QidlabError(f"{path}: is the destination store; a store cannot be merged into itself")
    created = not dest.exists()
    if not created:
        check_store(dest)
    summary = MergeSummary(dest=str(dest), on_conflict=on_conflict)
    origins: dict = {}  # identity -> the source that added it in this merge (for conflict messages)
    conn = _open_dest(dest)
    try:
        for path in paths:
            summary.sources.append(_merge_one(conn, _Names(str(path), str(dest), origins), path, on_conflict, summary))
        summary.duplicates = duplicate_settings(conn)
    except BaseException:
        conn.close()
        if created and not summary.sources:
            _remove_store(dest)
        raise
    conn.close()
    return summary


# ---------------------------------------------------------------------------
# opening


def _open_dest(dest: Path) -> sqlite3.Connection:
    close(connect(dest))  # creates the schema on first use
    conn = sqlite3.connect(dest.resolve().as_uri(), uri=True, timeout=60, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _remove_store(dest: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# one source, one transaction


@dataclass
class _Names:
    """How conflict messages name the stores: the source, and where a destination row came from."""

    src: str
    dest: str
    origins: dict  # identity -> the source that added it earlier in this merge

    def of(self, key) -> str:
        return self.origins.get(key, self.dest)


def _merge_one(conn, names: _Names, path: Path, on_conflict: str, summary: MergeSummary) -> SourceSummary:
    result = SourceSummary(path=str(path), sha256=provenance.file_sha256(path))
    conn.execute("ATTACH DATABASE ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _merge_rows(conn, result, on_conflict, names)
            _record(conn, result)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except QidlabError as exc:
        done = ", ".join(s.path for s in summary.sources) or "none"
        raise QidlabError(f"{exc}; nothing of {path} was merged (sources merged before it: {done})") from None
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.ck_map")
        conn.execute("DROP TABLE IF EXISTS temp.es_map")
        conn.execute("DROP TABLE IF EXISTS temp.m_new")
        conn.execute("DETACH DATABASE src")
    return result


def _merge_rows(conn, result: SourceSummary, on_conflict: str, names: _Names) -> None:
    _stop_or_note(_checkpoint_conflicts(conn, names) + _eval_set_conflicts(conn, names), result, on_conflict)
    result.added["checkpoints"], result.present["checkpoints"] = _merge_checkpoints(conn, names)
    result.added["eval_sets"], result.present["eval_sets"] = _merge_eval_sets(conn, names)
    _stop_or_note(_measurement_conflicts(conn, names), result, on_conflict)
    _merge_measurements(conn, result, names)
    result.added["fits"], result.present["fits"] = _merge_fits(conn)
    _stop_or_note(_task_conflicts(conn, names), result, on_conflict)
    result.added["task_results"], result.present["task_results"] = _merge_tasks(conn)


def _stop_or_note(conflicts: list[str], result: SourceSummary, on_conflict: str) -> None:
    if conflicts and on_conflict == "error":
        more = f" (and {len(conflicts) - SHOWN} more)" if len(conflicts) > SHOWN else ""
        raise QidlabError(f"{len(conflicts)} conflict(s): " + "; ".join(conflicts[:SHOWN]) + more +
                          " (--on-conflict skip keeps the destination's rows and skips these)")
    result.conflicts += conflicts


# -- checkpoints --------------------------------------------------------------


def _checkpoint_conflicts(conn, names: _Names) -> list[str]:
    rows = conn.execute(
        "SELECT s.suite, s.model, s.step, s.content_hash, c.content_hash, s.n_params, c.n_params, "
        "s.n_params_total, c.n_params_total, s.tokens, c.tokens FROM src.checkpoints s "
        "JOIN main.checkpoints c ON c.suite = s.suite AND c.model = s.model AND c.step = s.step "
        "WHERE s.content_hash != c.content_hash OR s.n_params != c.n_params "
        "OR s.n_params_total != c.n_params_total OR s.tokens != c.tokens ORDER BY s.id").fetchall()
    src = names.src
    out = []
    for suite, model, step, *pairs in rows:
        there = names.of(("ck", suite, model, step))
        what = ("content hash", "N", "total parameters", "D")
        diff = [f"{n} {a} in {src}, {b} in {there}" for n, a, b in zip(what, pairs[0::2], pairs[1::2]) if a != b]
        out.append(f"checkpoint {suite}/{model}/step{step}: " + ", ".join(diff))
    return out


def _merge_checkpoints(conn, names: _Names) -> tuple[int, int]:
    same = ("c.suite = s.suite AND c.model = s.model AND c.step = s.step AND c.content_hash = s.content_hash "
            "AND c.n_params = s.n_params AND c.n_params_total = s.n_params_total AND c.tokens = s.tokens")
    present = _count(conn, f"SELECT COUNT(*) FROM src.checkpoints s JOIN main.checkpoints c ON {same}")
    new = conn.execute(
        "SELECT s.suite, s.model, s.step FROM src.checkpoints s WHERE NOT EXISTS (SELECT 1 FROM main.checkpoints c "
        "WHERE c.suite = s.suite AND c.model = s.model AND c.step = s.step)").fetchall()
    run = "s.run" if "run" in {r[1] for r in conn.execute("PRAGMA src.table_info(checkpoints)")} else "NULL"
    conn.execute(
        "INSERT INTO main.checkpoints(suite, model, step, path, n_params, n_params_total, tokens, content_hash, run) "
        f"SELECT s.suite, s.model, s.step, s.path, s.n_params, s.n_params_total, s.tokens, s.content_hash, {run} "
        "FROM src.checkpoints s WHERE NOT EXISTS (SELECT 1 FROM main.checkpoints c WHERE c.suite = s.suite "
        "AND c.model = s.model AND c.step = s.step) ORDER BY s.id")
    conn.execute("CREATE TEMP TABLE ck_map(src_id INTEGER PRIMARY KEY, dst_id INTEGER NOT NULL)")
    conn.execute(f"INSERT INTO temp.ck_map SELECT s.id, c.id FROM src.checkpoints s JOIN main.checkpoints c ON {same}")
    names.origins.update({("ck", *key): names.src for key in new})
    return len(new), present


# -- eval sets ------------------------------------------------------------------


def _eval_set_conflicts(conn, names: _Names) -> list[str]:
    rows = conn.execute(
        "SELECT s.name, s.content_hash, e.name, e.content_hash FROM src.eval_sets s JOIN main.eval_sets e "
        "ON (e.name = s.name) != (e.content_hash = s.content_hash) ORDER BY s.id").fetchall()
    src = names.src
    out = []
    for name, chash, other_name, other_hash in rows:
        there = names.of(("es", other_hash))
        if name == other_name:
            out.append(f"eval set {name!r}: content hash {chash[:12]} in {src}, {other_hash[:12]} in {there}")
        else:
            out.append(f"eval set content {chash[:12]}: named {name!r} in {src}, {other_name!r} in {there}")
    return out


def _merge_eval_sets(conn, names: _Names) -> tuple[int, int]:
    same = "e.name = s.name AND e.content_hash = s.content_hash"
    present = _count(conn, f"SELECT COUNT(*) FROM src.eval_sets s JOIN main.eval_sets e ON {same}")
    new = conn.execute("SELECT s.content_hash FROM src.eval_sets s WHERE NOT EXISTS (SELECT 1 FROM main.eval_sets e "
                       "WHERE e.name = s.name OR e.content_hash = s.content_hash)").fetchall()
    conn.execute(
        "INSERT INTO main.eval_sets(name, content_hash, n_docs, source_json) SELECT s.name, s.content_hash, "
        "s.n_docs, s.source_json FROM src.eval_sets s WHERE NOT EXISTS (SELECT 1 FROM main.eval_sets e "
        "WHERE e.name = s.name OR e.content_hash = s.content_hash) ORDER BY s.id")
    conn.execute("CREATE TEMP TABLE es_map(src_id INTEGER PRIMARY KEY, dst_id INTEGER NOT NULL)")
    conn.execute(f"INSERT INTO temp.es_map SELECT s.id, e.id FROM src.eval_sets s JOIN main.eval_sets e ON {same}")
    names.origins.update({("es", h): names.src for (h,) in new})
    return len(new), present


# -- measurements and their per-document losses -------------------------------------

_MAPPED = ("FROM src.measurements s JOIN temp.ck_map k ON k.src_id = s.checkpoint_id "
           "JOIN temp.es_map e ON e.src_id = s.eval_set_id")
_SAME_KEY = "m.checkpoint_id = k.dst_id AND m.eval_set_id = e.dst_id AND m.config_hash = s.config_hash"


def _measurement_conflicts(conn, names: _Names) -> list[str]:
    differs = " OR ".join(f"m.{c} IS NOT s.{c}" for c in VALUES)
    rows = conn.execute(
        f"SELECT c.suite, c.model, c.step, es.name, s.config_hash, s.method, s.bits, s.qid, m.qid {_MAPPED} "
        f"JOIN main.measurements m ON {_SAME_KEY} JOIN main.checkpoints c ON c.id = k.dst_id "
        f"JOIN main.eval_sets es ON es.id = e.dst_id WHERE {differs} ORDER BY s.id").fetchall()
    src = names.src
    out = []
    for suite, model, step, eval_set, chash, method, bits, qid, other in rows:
        there = names.of(("m", suite, model, step, eval_set, chash))
        out.append(f"measurement {suite}/{model}/step{step} {method} {bits:g} bits on {eval_set!r} "
                   f"(config {chash}): QiD {qid!r} in {src}, {other!r} in {there}"
                   + ("" if qid != other else " (other values differ)"))
    return out


def _merge_measurements(conn, result: SourceSummary, names: _Names) -> None:
    total = _count(conn, "SELECT COUNT(*) FROM src.measurements")
    result.present["measurements"] = _count(conn, f"SELECT COUNT(*) {_MAPPED} JOIN main.measurements m ON "
                                                  f"{_SAME_KEY} AND " + " AND ".join(f"m.{c} IS s.{c}" for c in VALUES))
    conn.execute("CREATE TEMP TABLE m_new(src_id INTEGER PRIMARY KEY, ck INTEGER, es INTEGER, config_hash TEXT)")
    conn.execute(f"INSERT INTO temp.m_new SELECT s.id, k.dst_id, e.dst_id, s.config_hash {_MAPPED} "
                 f"WHERE NOT EXISTS (SELECT 1 FROM main.measurements m WHERE {_SAME_KEY})")
    copied = [c for c in columns()["measurements"] if c not in IDS]
    have = {r[1] for r in conn.execute("PRAGMA src.table_info(measurements)")}  # an older store lacks some
    selected = ", ".join(f"s.{c}" if c in have else "NULL" for c in copied)
    conn.execute(f"INSERT INTO main.measurements(checkpoint_id, eval_set_id, {', '.join(copied)}) "
                 f"SELECT n.ck, n.es, {selected} FROM temp.m_new n "
                 "JOIN src.measurements s ON s.id = n.src_id ORDER BY n.src_id")
    before = _count(conn, "SELECT COUNT(*) FROM main.doc_losses")
    conn.execute(
        "INSERT INTO main.doc_losses(measurement_id, doc_index, nll_sum, n_tokens, n_bytes) "
        "SELECT m.id, d.doc_index, d.nll_sum, d.n_tokens, d.n_bytes FROM temp.m_new n "
        "JOIN main.measurements m ON m.checkpoint_id = n.ck AND m.eval_set_id = n.es AND m.config_hash = n.config_hash "
        "JOIN src.doc_losses d ON d.measurement_id = n.src_id ORDER BY m.id, d.doc_index")
    result.added["measurements"] = _count(conn, "SELECT COUNT(*) FROM temp.m_new")
    result.added["doc_losses"] = _count(conn, "SELECT COUNT(*) FROM main.doc_losses") - before
    result.skipped_measurements = total - result.added["measurements"] - result.present["measurements"]
    keys = conn.execute("SELECT c.suite, c.model, c.step, e.name, n.config_hash FROM temp.m_new n "
                        "JOIN main.checkpoints c ON c.id = n.ck JOIN main.eval_sets e ON e.id = n.es").fetchall()
    names.origins.update({("m", *key): names.src for key in keys})


def duplicate_settings(conn) -> list[str]:
    """Settings (checkpoint, eval set, method, bits, G, E, M, B) of the destination measured under
    several config hashes: not a conflict (the configs differ, e.g. a calibration file at another
    path), but the canonical table then holds the same point more than once; each with the
    config keys that differ."""
    settings = "checkpoint_id, eval_set_id, method, bits, group_size, exp_bits, man_bits, block_size"
    rows = conn.execute(
        f"SELECT c.suite, c.model, c.step, e.name, m.method, m.bits, GROUP_CONCAT(m.config_json, char(30)) "
        f"FROM main.measurements m JOIN main.checkpoints c ON c.id = m.checkpoint_id "
        f"JOIN main.eval_sets e ON e.id = m.eval_set_id GROUP BY {', '.join('m.' + x for x in settings.split(', '))} "
        f"HAVING COUNT(*) > 1 ORDER BY c.suite, c.model, c.step, e.name, m.method, m.bits").fetchall()
    out = []
    for suite, model, step, eval_set, method, bits, configs in rows:
        differ = _differing_keys([json.loads(c) for c in configs.split(chr(30))])
        out.append(f"{suite}/{model}/step{step} {method} {bits:g} bits on {eval_set!r}: "
                   f"{len(configs.split(chr(30)))} configs differing in {', '.join(differ) or 'nothing'}")
    return out


def _differing_keys(configs: list, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between the (nested dict) configs."""
    if not all(isinstance(c, dict) for c in configs):
        return [prefix.rstrip(".")] if any(c != configs[0] for c in configs) else []
    keys = sorted(set().union(*configs))
    out = []
    for key in keys:
        out += _differing_keys([c.get(key) for c in configs], f"{prefix}{key}.")
    return out


# -- downstream task results (schema 3) -------------------------------------------

#: task_results columns that must agree between two rows of the same key.
TASK_VALUES = ("method", "bits", "group_size", "exp_bits", "man_bits", "block_size", "config_json", "value",
               "stderr", "value16", "delta", "higher_is_better", "n_docs")
_TASK_MAPPED = "FROM src.task_results s JOIN temp.ck_map k ON k.src_id = s.checkpoint_id"
_TASK_KEY = ("t.checkpoint_id = k.dst_id AND t.task = s.task AND t.metric = s.metric "
             "AND t.config_hash = s.config_hash")


def _source_has_tasks(conn) -> bool:
    """Whether the source has a task_results table (a store of schema 1 or 2 has none)."""
    return conn.execute("SELECT 1 FROM src.sqlite_master WHERE name = 'task_results'").fetchone() is not None


def _task_conflicts(conn, names: _Names) -> list[str]:
    if not _source_has_tasks(conn):
        return []
    differs = " OR ".join(f"t.{c} IS NOT s.{c}" for c in TASK_VALUES)
    rows = conn.execute(
        f"SELECT c.suite, c.model, c.step, s.task, s.metric, s.config_hash, s.value, t.value {_TASK_MAPPED} "
        f"JOIN main.task_results t ON {_TASK_KEY} JOIN main.checkpoints c ON c.id = k.dst_id "
        f"WHERE {differs} ORDER BY s.id").fetchall()
    return [f"task result {suite}/{model}/step{step} {task} {metric} (config {chash}): {value!r} in {names.src}, "
            f"{other!r} in {names.of(('t', suite, model, step, task, metric, chash))}"
            for suite, model, step, task, metric, chash, value, other in rows]


def _merge_tasks(conn) -> tuple[int, int]:
    """Copy the source's task results whose (checkpoint, task, metric, config) the destination lacks;
    (added, already present)."""
    if not _source_has_tasks(conn):
        return 0, 0
    present = _count(conn, f"SELECT COUNT(*) {_TASK_MAPPED} JOIN main.task_results t ON {_TASK_KEY} AND "
                           + " AND ".join(f"t.{c} IS s.{c}" for c in TASK_VALUES))
    copied = [c for c in columns()["task_results"] if c not in ("id", "checkpoint_id")]
    cur = conn.execute(f"INSERT INTO main.task_results(checkpoint_id, {', '.join(copied)}) "
                       f"SELECT k.dst_id, {', '.join('s.' + c for c in copied)} {_TASK_MAPPED} "
                       f"WHERE NOT EXISTS (SELECT 1 FROM main.task_results t WHERE {_TASK_KEY}) ORDER BY s.id")
    return cur.rowcount, present


# -- fits and meta ----------------------------------------------------------------


def _merge_fits(conn) -> tuple[int, int]:
    same = " AND ".join(f"f.{c} = s.{c}" for c in ("law", "query_json", "result_json", "versions_json",
                                                    "code_revision"))
    present = _count(conn, f"SELECT COUNT(*) FROM src.fits s WHERE EXISTS (SELECT 1 FROM main.fits f WHERE {same})")
    cur = conn.execute("INSERT INTO main.fits(law, query_json, result_json, versions_json, code_revision) "
                       "SELECT s.law, s.query_json, s.result_json, s.versions_json, s.code_revision FROM src.fits s "
                       f"WHERE NOT EXISTS (SELECT 1 FROM main.fits f WHERE {same}) ORDER BY s.id")
    return cur.rowcount, present


def _record(conn, result: SourceSummary) -> None:
    """``merged_from`` (an entry per source file that added rows or was not recorded before, by
    sha256: a store still in WAL mode can change without its main file changing) and ``devices``
    (union) in meta."""
    meta = dict(conn.execute("SELECT key, value FROM src.meta").fetchall())
    merged = meta_json(conn, "main", "merged_from", [])
    if any(result.added.values()) or all(entry.get("sha256") != result.sha256 for entry in merged):
        merged.append({"store": result.path, "sha256": result.sha256, "added": result.added,
                       "conflicts_skipped": len(result.conflicts), "meta": _parsed(meta)})
        set_meta(conn, "merged_from", merged)
    devices = meta_json(conn, "main", "devices", [])
    new = [d for d in meta_json(conn, "src", "devices", []) if d not in devices]
    if new:
        set_meta(conn, "devices", devices + new)


def _parsed(meta: dict) -> dict:
    out = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value) if key in ("merged_from", "devices", "dropped") else value
        except ValueError:
            out[key] = value
    return out


def _count(conn, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])
