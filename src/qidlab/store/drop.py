"""Dropping models from a store: ``drop_models(db, suite, models)`` deletes every checkpoint of
those models of one suite, with their measurements and per-document losses, in one transaction.

What it is for: a model trained again (its checkpoints have new content hashes) replaces the old
one's rows, e.g. a GPU campaign's model whose measurements were cut short and whose checkpoints
were lost with the machine: drop it, then merge the new run's store (``merge_stores``, which
refuses a checkpoint whose content differs from the stored one). Eval sets and fits stay. The
store's ``meta`` gets a ``dropped`` record (suite, models, rows deleted) for provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import QidlabError
from .db import check_store, close, connect, meta_json, read_only, set_meta

TABLES = ("doc_losses", "measurements", "checkpoints")


def drop_models(db: str | Path, suite: str, models: Sequence[str]) -> dict[str, int]:
    """Delete ``models`` of ``suite`` from the store ``db``; return the rows deleted per table.
    One ``QidlabError`` (nothing deleted, nothing written) for a missing, damaged or foreign file
    (``db.check_store``) or a suite/model the store does not hold."""
    path = Path(db)
    check_store(path)  # missing, damaged or not a qidlab store: refused before anything is opened for writing
    if not models:
        raise QidlabError("drop: name at least one model")
    with read_only(path) as conn:  # checked before the store is opened for writing
        present = {m for (m,) in conn.execute("SELECT DISTINCT model FROM checkpoints WHERE suite = ?", (suite,))}
    missing = sorted(set(models) - present)
    if missing:
        have = ", ".join(sorted(present)) or "none: the store has no suite of that name"
        raise QidlabError(f"{path}: suite {suite!r} has no model(s) {', '.join(missing)} (it has: {have})")
    conn = connect(path)
    try:
        return _delete(conn, suite, sorted(set(models)))
    finally:
        close(conn)


def _delete(conn, suite: str, models: list[str]) -> dict[str, int]:
    marks = ",".join("?" * len(models))
    ckpts = f"SELECT id FROM checkpoints WHERE suite = ? AND model IN ({marks})"
    where = {"doc_losses": f"measurement_id IN (SELECT id FROM measurements WHERE checkpoint_id IN ({ckpts}))",
             "measurements": f"checkpoint_id IN ({ckpts})",
             "checkpoints": f"id IN ({ckpts})"}
    deleted = {}
    with conn:  # one transaction: all of it or nothing
        for table in TABLES:
            deleted[table] = conn.execute(f"DELETE FROM {table} WHERE {where[table]}", (suite, *models)).rowcount
        record = meta_json(conn, "main", "dropped", []) + [{"suite": suite, "models": models, "deleted": deleted}]
        set_meta(conn, "dropped", record)
    return deleted
