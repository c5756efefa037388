"""A store's tables as DataFrames (pandas is imported by the functions that need it).

``read_canonical(path)`` is the canonical table of the data contract (the ``canonical`` view:
N in non-embedding parameters, D in tokens, losses and QiD in nats per token, and the checkpoint's
``path``: its folder, or ``hf://REPO@REVISION`` for a Hub checkpoint).
``read_doc_losses(path)`` gives every measurement (id, checkpoint, eval set, method, config, QiD and
its CI) and the per-document losses they were computed from (nats summed per document).
``describe_store(path)`` gives where the measurements come from: ``checkpoints`` (suite, model,
step, path, N, total parameters, D, content hash), ``eval_sets`` (name, content hash, documents,
source), ``methods`` (measurements and distinct configs per method, the 16-bit reference 'none'
included) and ``runs`` (measurements per library versions and code revision). The queries are
the ones ``publish.py`` writes into a data set's manifest.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from ..errors import QidlabError
from .db import canonical_query, columns, read_only, refuse_newer
from .units import loss_unit

if TYPE_CHECKING:
    import pandas as pd

QUERIES = {
    "checkpoints": "SELECT suite, model, step, path, n_params, n_params_total, tokens, content_hash "
                   "FROM checkpoints ORDER BY suite, model, step",
    "eval_sets": "SELECT name, content_hash, n_docs, source_json FROM eval_sets ORDER BY name, content_hash",
    "methods": "SELECT method, COUNT(*) AS measurements, COUNT(DISTINCT config_hash) AS configs "
               "FROM measurements GROUP BY method ORDER BY method",
    "runs": "SELECT versions_json, code_revision, COUNT(*) AS measurements FROM measurements "
            "GROUP BY versions_json, code_revision ORDER BY code_revision, versions_json",
}
#: One row per measurement config: its hash, method, JSON and how many measurements it has.
CONFIGS = ("SELECT config_hash, method, MIN(config_json) AS config_json, COUNT(*) AS measurements "
           "FROM measurements GROUP BY config_hash, method ORDER BY method, config_hash")


@contextmanager
def _reading(path: Path, needs: str, what: str) -> Iterator[tuple[sqlite3.Connection, set[str]]]:
    """A read-only connection to the store at ``path`` and the names of its tables and views; one
    ``QidlabError`` line for a newer schema, a store without ``needs`` (a ``what``: "view" or
    "table"), or a file SQLite cannot read."""
    try:
        with read_only(path) as conn:
            refuse_newer(conn, path)
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if needs not in names:
                raise QidlabError(f"{path}: not a qidlab store (no {needs!r} {what})")
            yield conn, names
    except sqlite3.DatabaseError as exc:
        raise QidlabError(f"{path}: not a readable SQLite store ({exc})") from None


def read_canonical(path: str | Path) -> "pd.DataFrame":
    """The store's measurements as a DataFrame of canonical columns."""
    with _reading(Path(path), "canonical", "view") as (conn, _):
        # the view's SELECT as this qidlab writes it: a store made before a column joined the view
        # (``run``, ``path``) is read with it too, the column NULL
        have = {row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")}
        absent = tuple(c for c in columns()["checkpoints"] if c not in have)
        return frames(conn, {"canonical": canonical_query(absent=absent)})["canonical"]


def read_loss_unit(path: str | Path) -> str:
    """The unit the store's losses and QiD are in (``units.loss_unit`` of its measurements'
    configs, as ``publish.units_of`` reads them: ``nats_per_token``, ``bits_per_byte``, ...)."""
    with _reading(Path(path), "measurements", "table") as (conn, _):
        texts = [row[0] for row in conn.execute("SELECT DISTINCT config_json FROM measurements")]
    return loss_unit(texts, path)


#: ``task_results`` with the checkpoint's N and D, for ``read_task_table``.
TASK_QUERY = ("SELECT c.n_params, c.n_params_total, c.tokens, t.bits, t.group_size, t.exp_bits, t.man_bits, "
              "t.block_size, t.method, t.task, t.metric, t.value, t.stderr, t.value16, t.delta, t.higher_is_better, "
              "t.n_docs, c.suite, c.model, c.step FROM task_results t JOIN checkpoints c ON c.id = t.checkpoint_id "
              "WHERE t.method != 'none'")


def read_task_table(path: str | Path) -> "pd.DataFrame":
    """The store's downstream-task results of quantized models (``task_results`` with N and D of
    each checkpoint): one row per checkpoint x config x task x metric; ``delta`` = value -
    value16. A store written before schema version 3 has none (an empty frame)."""
    with _reading(Path(path), "checkpoints", "table") as (conn, names):
        if "task_results" not in names:
            import pandas as pd

            return pd.DataFrame(columns=[c.strip().split()[-1].split(".")[-1]
                                         for c in TASK_QUERY[7:TASK_QUERY.index(" FROM ")].split(",")])
        return frames(conn, {"tasks": TASK_QUERY})["tasks"]


def describe_store(path: str | Path) -> dict[str, "pd.DataFrame"]:
    """The store's ``checkpoints``, ``eval_sets``, ``methods`` and ``runs`` (module docstring)."""
    import pandas as pd

    try:
        with read_only(path) as conn:
            refuse_newer(conn, path)
            return frames(conn, QUERIES)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise QidlabError(f"{path}: not a readable qidlab store ({exc})") from None


def frames(conn: sqlite3.Connection, queries: Mapping[str, str]) -> dict[str, "pd.DataFrame"]:
    """Each query's result as a DataFrame, by name."""
    import pandas as pd

    return {name: pd.read_sql_query(sql, conn) for name, sql in queries.items()}


#: Each measurement with what identifies it, for recomputing its QiD from ``doc_losses``.
MEASURED = ("SELECT id, checkpoint_id, eval_set_id, method, config_json, loss16, loss, qid, qid_ci_low, qid_ci_high "
            "FROM measurements ORDER BY id")
DOCS = "SELECT measurement_id, doc_index, nll_sum, n_tokens, n_bytes FROM doc_losses ORDER BY measurement_id, doc_index"


def read_doc_losses(path: str | Path) -> dict[str, "pd.DataFrame"]:
    """``{"measurements": ..., "doc_losses": ...}`` of the store (``MEASURED``, ``DOCS``): the 16-bit
    references (method 'none') included; ``nll_sum`` in nats summed over a document's tokens."""
    with _reading(Path(path), "doc_losses", "table") as (conn, _):
        return frames(conn, {"measurements": MEASURED, "doc_losses": DOCS})
