"""The measurement store: one SQLite file (schema in ``schema.sql``), WAL mode, one
transaction per measurement so that a crash leaves either a whole measurement or none.

The store owns its schema and every SQL statement of qidlab:

* ``db.py``: the schema (``schema.sql``: tables and the ``canonical`` view, defined once; the
  column lists are read from it), ``connect(path)`` (creating the schema), read-only opening,
  ``check_store``, the ``meta`` records;
* here: ``Store`` adds rows and says what is measured already;
* ``read.py``: ``read_canonical(path)``, the canonical table of the data contract, and
  ``describe_store(path)``, its checkpoints, eval sets, methods and runs, as DataFrames;
  ``read_loss_unit(path)``, the unit of its losses and QiD (``units.py``: every config's
  ``[scoring] unit``, nats per token when absent);
* ``merge.py``: ``merge_stores(sources, dest)``; ``drop.py``: ``drop_models(db, suite, models)``
  deletes models' rows (before merging a retrained model); ``publish.py``:
  ``publish_store(db, name, out)`` writes a store as a data set loadable by name (``qidlab.data``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import QidlabError
from .db import SCHEMA_VERSION, close as close_connection, connect, insert, read_only
from .drop import drop_models
from .merge import MergeSummary, merge_stores
from .publish import Published, publish_dataset, publish_store
from .read import describe_store, read_canonical, read_doc_losses, read_loss_unit, read_task_table
from .units import DEFAULT_LOSS_UNIT, LOSS_UNITS, loss_unit

__all__ = ["DEFAULT_LOSS_UNIT", "LOSS_UNITS", "loss_unit", "read_loss_unit",
           "Measurement", "TaskMeasurement", "read_task_table", "MergeSummary", "Published", "SCHEMA_VERSION", "Store", "config_hash", "connect", "stored_jobs",
           "stored_task_jobs",
           "describe_store", "drop_models", "merge_stores", "publish_dataset", "publish_store", "read_canonical",
           "read_doc_losses"]


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable hash of a JSON-able configuration (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Measurement:
    """One row of ``measurements``: a quantized (or 16-bit, method 'none') checkpoint scored on
    one eval set. Losses in nats per model token; ``doc_*`` are per-document arrays."""

    checkpoint_id: int
    eval_set_id: int
    method: str
    bits: float
    config: Mapping[str, Any]
    loss16: float
    loss: float
    qid: float
    qid_ci: tuple[float, float] | None
    n_tokens: int
    versions: Mapping[str, str]
    code_revision: str
    doc_nll: Sequence[float]
    doc_tokens: Sequence[int]
    doc_bytes: Sequence[int]
    group_size: int | None = None
    exp_bits: int | None = None
    man_bits: int | None = None
    block_size: int | None = None
    quantization: Mapping[str, Any] | None = None  # what the quantizer reported (GPTQ: damping per layer)


@dataclass(frozen=True)
class TaskMeasurement:
    """One row of ``task_results``: an lm-evaluation-harness metric of a checkpoint, 16-bit
    (method 'none') or quantized; ``value16`` is the 16-bit model's value of the same metric and
    ``delta = value - value16`` is stored with it."""

    checkpoint_id: int
    task: str
    metric: str
    method: str
    bits: float
    config: Mapping[str, Any]
    value: float
    stderr: float | None
    value16: float
    higher_is_better: bool | None
    n_docs: int | None
    versions: Mapping[str, str]
    code_revision: str
    group_size: int | None = None
    exp_bits: int | None = None
    man_bits: int | None = None
    block_size: int | None = None


class Store:
    """Rows in and out of the store. Every ``add_measurement`` is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = connect(self.path)

    def close(self) -> None:
        close_connection(self.conn)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checkpoints and eval sets (idempotent) ---------------------------------
    def checkpoint_id(self, *, suite: str, model: str, step: int, path: str, n_params: int,
                      n_params_total: int, tokens: int, content_hash: str, run: str | None = None) -> int:
        """The id of this checkpoint's row, inserting it on first sight. A checkpoint seen
        again with different content is an error (the suite changed under the study). ``run``
        names the training run (seed) when a model was trained more than once (None: one run)."""
        row = self.conn.execute("SELECT id, content_hash FROM checkpoints WHERE suite=? AND model=? AND step=?",
                                (suite, model, step)).fetchone()
        if row:
            if row[1] != content_hash:
                raise QidlabError(f"checkpoint {suite}/{model}/step{step} changed since it was measured "
                                  f"(content hash {content_hash[:12]} != stored {row[1][:12]}); use a new store")
            return int(row[0])
        with self.conn:
            return insert(self.conn, "checkpoints", {
                "suite": suite, "model": model, "step": int(step), "path": str(path), "n_params": int(n_params),
                "n_params_total": int(n_params_total), "tokens": int(tokens), "content_hash": content_hash,
                "run": run})

    def eval_set_id(self, *, name: str, content_hash: str, n_docs: int, source: Mapping[str, Any]) -> int:
        row = self.conn.execute("SELECT id FROM eval_sets WHERE content_hash=?", (content_hash,)).fetchone()
        if row:
            return int(row[0])
        with self.conn:
            return insert(self.conn, "eval_sets", {"name": name, "content_hash": content_hash, "n_docs": int(n_docs),
                                                   "source_json": json.dumps(source, sort_keys=True, default=str)})

    # -- measurements ------------------------------------------------------------
    def measured(self, *, suite: str, model: str, step: int) -> set[tuple[int, str]]:
        """(eval_set_id, config_hash) pairs already measured for checkpoint ``suite/model/step``
        (none when the checkpoint is not stored)."""
        rows = self.conn.execute("SELECT m.eval_set_id, m.config_hash FROM measurements m "
                                 "JOIN checkpoints c ON c.id = m.checkpoint_id "
                                 "WHERE c.suite = ? AND c.model = ? AND c.step = ?", (suite, model, int(step)))
        return {(int(a), b) for a, b in rows}

    def add_measurement(self, m: Measurement) -> int | None:
        """Insert a measurement and its per-document losses in one transaction.

        Returns the new id, or None when the same (checkpoint, eval set, config) is already
        stored (a resumed sweep never duplicates a row)."""
        cfg_hash = config_hash(m.config)
        if not (len(m.doc_nll) == len(m.doc_tokens) == len(m.doc_bytes)) or not len(m.doc_nll):
            raise QidlabError("a measurement needs one nll/tokens/bytes triple per document")
        try:
            with self.conn:
                mid = insert(self.conn, "measurements", _measurement_row(m, cfg_hash))
                self.conn.executemany(
                    "INSERT INTO doc_losses(measurement_id, doc_index, nll_sum, n_tokens, n_bytes) VALUES (?,?,?,?,?)",
                    [(mid, i, float(a), int(b), int(c)) for i, (a, b, c) in
                     enumerate(zip(m.doc_nll, m.doc_tokens, m.doc_bytes))])
            return mid
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                return None
            raise

    # -- downstream tasks -------------------------------------------------------------
    def tasks_measured(self, *, suite: str, model: str, step: int) -> set[tuple[str, str]]:
        """(task, config_hash) pairs with a ``task_results`` row for checkpoint ``suite/model/step``."""
        rows = self.conn.execute("SELECT t.task, t.config_hash FROM task_results t "
                                 "JOIN checkpoints c ON c.id = t.checkpoint_id "
                                 "WHERE c.suite = ? AND c.model = ? AND c.step = ?", (suite, model, int(step)))
        return {(a, b) for a, b in rows}

    def add_task_result(self, t: TaskMeasurement) -> int | None:
        """Insert one task metric (one transaction); None when it is stored already."""
        row = {"checkpoint_id": t.checkpoint_id, "task": t.task, "metric": t.metric, "method": t.method,
               "bits": float(t.bits), "group_size": t.group_size, "exp_bits": t.exp_bits, "man_bits": t.man_bits,
               "block_size": t.block_size, "config_json": json.dumps(t.config, sort_keys=True, default=str),
               "config_hash": config_hash(t.config), "value": float(t.value), "stderr": t.stderr,
               "value16": float(t.value16), "delta": float(t.value) - float(t.value16),
               "higher_is_better": None if t.higher_is_better is None else int(bool(t.higher_is_better)),
               "n_docs": t.n_docs, "versions_json": json.dumps(dict(t.versions), sort_keys=True),
               "code_revision": t.code_revision}
        try:
            with self.conn:
                return insert(self.conn, "task_results", row)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                return None
            raise

    def record_device(self, device: str) -> None:
        """Add ``device`` (what measured, e.g. "cuda: NVIDIA H100 80GB HBM3") to meta ``devices``."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'devices'").fetchone()
        devices = json.loads(row[0]) if row else []
        if device not in devices:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('devices', ?)",
                                  (json.dumps(devices + [device], sort_keys=True),))

    def count(self, table: str = "measurements") -> int:
        if table not in ("measurements", "checkpoints", "eval_sets", "doc_losses", "fits", "task_results"):
            raise QidlabError(f"no table {table!r} in the store")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def stored_jobs(path: str | Path) -> dict[tuple[str, str, int], set[tuple[str, str]]]:
    """What a store holds, read without writing (nothing created when ``path`` does not exist):
    ``(suite, model, step)`` -> ``{(eval set content hash, config hash)}``."""
    if not Path(path).is_file():
        return {}
    out: dict[tuple[str, str, int], set[tuple[str, str]]] = {}
    with read_only(path) as conn:
        rows = conn.execute("SELECT c.suite, c.model, c.step, e.content_hash, m.config_hash FROM measurements m "
                            "JOIN checkpoints c ON c.id = m.checkpoint_id JOIN eval_sets e ON e.id = m.eval_set_id")
        for suite, model, step, eval_hash, cfg_hash in rows:
            out.setdefault((suite, model, int(step)), set()).add((eval_hash, cfg_hash))
    return out


def stored_task_jobs(path: str | Path) -> dict[tuple[str, str, int], set[str]]:
    """The ``task_results`` a store holds, read without writing: ``(suite, model, step)`` -> the
    config hashes (a config's identity with its task's) of its rows. Empty for a missing store or one
    written before schema version 3."""
    if not Path(path).is_file():
        return {}
    out: dict[tuple[str, str, int], set[str]] = {}
    with read_only(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_results'").fetchone():
            return {}
        rows = conn.execute("SELECT c.suite, c.model, c.step, t.config_hash FROM task_results t "
                            "JOIN checkpoints c ON c.id = t.checkpoint_id")
        for suite, model, step, cfg_hash in rows:
            out.setdefault((suite, model, int(step)), set()).add(cfg_hash)
    return out


def _measurement_row(m: Measurement, cfg_hash: str) -> dict[str, Any]:
    """The ``measurements`` row of ``m`` (column -> value)."""
    low, high = m.qid_ci or (None, None)
    return {"checkpoint_id": m.checkpoint_id, "eval_set_id": m.eval_set_id, "method": m.method, "bits": float(m.bits),
            "group_size": m.group_size, "exp_bits": m.exp_bits, "man_bits": m.man_bits, "block_size": m.block_size,
            "config_json": json.dumps(m.config, sort_keys=True, default=str), "config_hash": cfg_hash,
            "loss16": float(m.loss16), "loss": float(m.loss), "qid": float(m.qid), "qid_ci_low": low,
            "qid_ci_high": high, "n_tokens": int(m.n_tokens),
            "versions_json": json.dumps(dict(m.versions), sort_keys=True), "code_revision": m.code_revision,
            "quantization_json": None if m.quantization is None else json.dumps(m.quantization, sort_keys=True)}
