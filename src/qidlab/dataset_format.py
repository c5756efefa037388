"""A published data set on disk, as its writer (``qidlab.store.publish``) and its reader
(``qidlab.data``) agree on it: the format tag, the manifest's file name, and the names taken by
the tables bundled with qidlab (a data set of such a name could never be loaded).

Ground level: nothing of qidlab imported, so the store can name these without importing the
reader (``qidlab.data`` reads tables through ``qidlab.tables``, which reads stores).
"""

from __future__ import annotations

import re

FORMAT = "qidlab-dataset/1"
MANIFEST = "manifest.json"
#: The bundled tables: name -> CSV file in the ``qidlab.data`` package folder.
BUNDLED = {
    "ouyang2024-table1": "ouyang2024_table1.csv",
    "chinchilla-epoch": "chinchilla_epoch.csv",
}
#: A row condition, as ``qidlab.tables.select_rows`` reads it and a manifest's ``primary.where``
#: lists it: ``COLUMN=V1,V2`` (one of the values) or ``COLUMN>=X`` (also ``<=``, ``>``, ``<``).
CONDITION = re.compile(r"\s*([A-Za-z_]\w*)\s*(>=|<=|>|<|=)(.*)")


def split_condition(item: str) -> tuple[str, str, str] | None:
    """``(column, operator, value text)`` of a row condition (``CONDITION``); None when ``item``
    is not one (no column, no operator, or nothing after it)."""
    match = CONDITION.fullmatch(item) if isinstance(item, str) else None
    if not match or not match.group(3).strip():
        return None
    return match.group(1), match.group(2), match.group(3).strip()
