"""The measurement store: one SQLite file (schema in ``schema.sql``).

``connect(path)`` opens (creating the schema if needed); ``read_canonical(path)`` returns the
canonical table of the data contract from the ``canonical`` view.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from ..errors import QidlabError

SCHEMA_VERSION = "1"


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the store at ``path``, creating its tables on first use."""
    conn = sqlite3.connect(str(path))
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
