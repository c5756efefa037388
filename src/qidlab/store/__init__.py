"""The measurement store: one SQLite file (schema in ``schema.sql``), WAL mode, one
transaction per measurement so that a crash leaves either a whole measurement or none.

``connect(path)`` opens it (creating the schema); ``Store`` adds and queries rows;
``read_canonical(path)`` returns the canonical table of the data contract;
``merge_stores(sources, dest)`` merges stores (``merge.py``); ``drop_models(db, suite, models)``
deletes models' rows (``drop.py``, before merging a retrained model); ``publish_store(db, name, out)``
writes a store as a data set loadable by name (``publish.py``, ``qidlab.data``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import QidlabError

SCHEMA_VERSION = "1"


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the store at ``path``, creating its tables on first use."""
    conn = sqlite3.connect(str(path), timeout=60)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(resources.files(__package__).joinpath("schema.sql").read_text())
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    conn.commit()
    return conn


def read_canonical(path: str | Path):
    """The store's measurements as a DataFrame of canonical columns."""
    import pandas as pd

    path = Path(path)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "canonical" not in names:
                raise QidlabError(f"{path}: not a qidlab store (no 'canonical' view)")
            return pd.read_sql_query("SELECT * FROM canonical", conn)
    except sqlite3.DatabaseError as exc:
        raise QidlabError(f"{path}: not a readable SQLite store ({exc})") from None


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


class Store:
    """Rows in and out of the store. Every ``add_measurement`` is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = connect(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checkpoints and eval sets (idempotent) ---------------------------------
    def checkpoint_id(self, *, suite: str, model: str, step: int, path: str, n_params: int,
                      n_params_total: int, tokens: int, content_hash: str) -> int:
        """The id of this checkpoint's row, inserting it on first sight. A checkpoint seen
        again with different content is an error (the suite changed under the study)."""
        row = self.conn.execute("SELECT id, content_hash FROM checkpoints WHERE suite=? AND model=? AND step=?",
                                (suite, model, step)).fetchone()
        if row:
            if row[1] != content_hash:
                raise QidlabError(f"checkpoint {suite}/{model}/step{step} changed since it was measured "
                                  f"(content hash {content_hash[:12]} != stored {row[1][:12]}); use a new store")
            return int(row[0])
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO checkpoints(suite, model, step, path, n_params, n_params_total, tokens, content_hash)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (suite, model, int(step), str(path), int(n_params), int(n_params_total), int(tokens), content_hash))
        return int(cur.lastrowid)

    def eval_set_id(self, *, name: str, content_hash: str, n_docs: int, source: Mapping[str, Any]) -> int:
        row = self.conn.execute("SELECT id FROM eval_sets WHERE content_hash=?", (content_hash,)).fetchone()
        if row:
            return int(row[0])
        with self.conn:
            cur = self.conn.execute("INSERT INTO eval_sets(name, content_hash, n_docs, source_json) VALUES (?,?,?,?)",
                                    (name, content_hash, int(n_docs), json.dumps(source, sort_keys=True, default=str)))
        return int(cur.lastrowid)

    # -- measurements ------------------------------------------------------------
    def has_measurement(self, checkpoint_id: int, eval_set_id: int, cfg_hash: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM measurements WHERE checkpoint_id=? AND eval_set_id=? AND config_hash=?",
            (checkpoint_id, eval_set_id, cfg_hash)).fetchone() is not None

    def done_hashes(self, checkpoint_id: int) -> set[tuple[int, str]]:
        """(eval_set_id, config_hash) pairs already measured for a checkpoint."""
        rows = self.conn.execute("SELECT eval_set_id, config_hash FROM measurements WHERE checkpoint_id=?",
                                 (checkpoint_id,))
        return {(int(a), b) for a, b in rows}

    def doc_losses(self, measurement_id: int):
        """Per-document (nll_sum, n_tokens, n_bytes) arrays of one measurement."""
        import numpy as np

        rows = self.conn.execute("SELECT nll_sum, n_tokens, n_bytes FROM doc_losses WHERE measurement_id=? "
                                 "ORDER BY doc_index", (measurement_id,)).fetchall()
        arr = np.array(rows, dtype=float).reshape(-1, 3)
        return arr[:, 0], arr[:, 1], arr[:, 2]

    def add_measurement(self, m: Measurement) -> int | None:
        """Insert a measurement and its per-document losses in one transaction.

        Returns the new id, or None when the same (checkpoint, eval set, config) is already
        stored (a resumed sweep never duplicates a row)."""
        cfg_hash = config_hash(m.config)
        if not (len(m.doc_nll) == len(m.doc_tokens) == len(m.doc_bytes)) or not len(m.doc_nll):
            raise QidlabError("a measurement needs one nll/tokens/bytes triple per document")
        try:
            with self.conn:
                cur = self.conn.execute(
                    "INSERT INTO measurements(checkpoint_id, eval_set_id, method, bits, group_size, exp_bits, "
                    "man_bits, block_size, config_json, config_hash, loss16, loss, qid, qid_ci_low, qid_ci_high, "
                    "n_tokens, versions_json, code_revision) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (m.checkpoint_id, m.eval_set_id, m.method, float(m.bits), m.group_size, m.exp_bits, m.man_bits,
                     m.block_size, json.dumps(m.config, sort_keys=True, default=str), cfg_hash, float(m.loss16),
                     float(m.loss), float(m.qid), *(m.qid_ci or (None, None)), int(m.n_tokens),
                     json.dumps(dict(m.versions), sort_keys=True), m.code_revision))
                mid = int(cur.lastrowid)
                self.conn.executemany(
                    "INSERT INTO doc_losses(measurement_id, doc_index, nll_sum, n_tokens, n_bytes) VALUES (?,?,?,?,?)",
                    [(mid, i, float(a), int(b), int(c)) for i, (a, b, c) in
                     enumerate(zip(m.doc_nll, m.doc_tokens, m.doc_bytes))])
            return mid
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
        if table not in ("measurements", "checkpoints", "eval_sets", "doc_losses", "fits"):
            raise QidlabError(f"no table {table!r} in the store")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def canonical(self):
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM canonical", self.conn)


from .merge import MergeSummary, merge_stores  # noqa: E402  (merge.py uses connect and SCHEMA_VERSION)
from .publish import publish_store  # noqa: E402
from .drop import drop_models  # noqa: E402
