"""The store's schema and its connections; every other module of ``qidlab.store`` builds on this one.

* ``schema.sql`` defines the tables and the ``canonical`` view, once: ``columns()`` reads each
  table's columns from it and ``canonical_query()`` the view's SELECT, so no column list is
  written twice;
* ``connect(path)`` opens a store for writing (creating the schema), ``read_only(path)`` opens
  one for reading, ``check_store(path)`` refuses a file that is not an intact store of this
  schema version;
* ``insert(conn, table, row)`` adds one row given as column -> value;
* ``meta_json`` / ``set_meta`` read and write the JSON records of the ``meta`` table
  (``devices``, ``merged_from``, ``dropped``).
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import QidlabError

SCHEMA_VERSION = "3"
_VIEW = "CREATE VIEW IF NOT EXISTS canonical AS\n"


@cache
def schema() -> str:
    """The text of ``schema.sql``."""
    return resources.files(__package__).joinpath("schema.sql").read_text()


def table_statement(table: str) -> str:
    """The ``CREATE TABLE IF NOT EXISTS table (...)`` statement of ``schema.sql`` (for a migration
    that adds a whole table, so its columns are written once)."""
    text = schema()
    start = text.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    return text[start:text.index("\n);", start) + 3]


#: How a store of an older schema version becomes this one: statements per version, run in order
#: by ``connect``. A column added this way is NULL in the rows measured before it existed.
MIGRATIONS: dict[str, tuple[str, ...]] = {
    "1": ("ALTER TABLE measurements ADD COLUMN quantization_json TEXT",),  # 1 -> 2: issue 14
    # 2 -> 3: the training run (seed) of a checkpoint, so that repeated trainings of one model are
    # clusters of their own in a fit's bootstrap (issue 16; the canonical view is dropped and made
    # again with it), and lm-evaluation-harness task results (issue 15)
    "2": ("ALTER TABLE checkpoints ADD COLUMN run TEXT", "DROP VIEW IF EXISTS canonical",
          table_statement("task_results")),
}


@cache
def columns() -> dict[str, tuple[str, ...]]:
    """Each table's columns in schema order, table by table as ``schema.sql`` creates them."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(schema())
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                   "ORDER BY rowid")]
        return {t: tuple(row[1] for row in conn.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        conn.close()


def canonical_query(*extra: str, absent: tuple[str, ...] = ()) -> str:
    """The SELECT of the ``canonical`` view (``schema.sql``), with the measurement columns
    ``extra`` after the view's own; the checkpoint columns ``absent`` (a store of an older version,
    read as it is) come out as NULL."""
    text = schema()
    body = text[text.index(_VIEW) + len(_VIEW):].rstrip().rstrip(";")
    selected, sep, rest = body.partition("\nFROM ")
    for column in absent:
        selected = re.sub(rf"\bc\.{column}\b", f"NULL AS {column}", selected)
    return selected + "".join(f", m.{c}" for c in extra) + sep + rest


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the store at ``path``, creating its tables on first use; a ``QidlabError`` for a file
    that is not an SQLite database, an SQLite database of something else (tables, none of them
    qidlab's), or a store that cannot be opened for writing. A store this call created and could not
    finish (disk full) is removed with its ``-wal`` and ``-shm``: no store without tables is left."""
    if Path(path).is_dir():
        raise QidlabError(f"{path}: a folder, not a store file")
    new = not Path(path).exists()
    conn = None
    try:
        conn = sqlite3.connect(str(path), timeout=60)
        conn.execute("PRAGMA foreign_keys = ON")
        version = _version(conn)
        if version is None:
            _refuse_foreign(conn, path)
        elif version != SCHEMA_VERSION:
            _migrate(conn, path, version)
        conn.executescript(schema())
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        conn.commit()
    except (sqlite3.DatabaseError, QidlabError) as exc:
        if conn is not None:
            conn.close()
        if new:
            _remove(path)
        if isinstance(exc, QidlabError):
            raise
        if isinstance(exc, sqlite3.OperationalError):  # unwritable folder or file, locked, disk full
            raise QidlabError(f"{path}: cannot open the store for writing ({exc})") from None
        raise QidlabError(f"{path}: not a readable SQLite store ({exc})") from None
    return conn


def close(conn: sqlite3.Connection) -> None:
    """Close a writing connection and leave no ``-wal``/``-shm`` beside the store: its WAL is
    checkpointed and the file put back in rollback mode, so that readers (``read_only``) create
    none either; the next ``connect`` turns WAL on again. While another connection holds the
    store, the switch is left to the last one (no waiting)."""
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.DatabaseError:
        pass
    conn.close()


def _remove(path) -> None:
    """Remove the store file ``path`` and its ``-wal``/``-shm`` (a store this process just created)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _refuse_foreign(conn: sqlite3.Connection, path) -> None:
    """``QidlabError`` for an SQLite file whose tables are not a qidlab store's (no ``meta`` table)."""
    tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if tables:
        shown = ", ".join(tables[:5]) + (" ..." if len(tables) > 5 else "")
        raise QidlabError(f"{path}: not a qidlab store (an SQLite file with other tables: {shown})")


def _version(conn: sqlite3.Connection) -> str | None:
    """The store's schema version; None for a new (empty) file."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row[0] if row else None


def refuse_newer(conn: sqlite3.Connection, path) -> None:
    """``QidlabError`` when the store was written by a newer qidlab (a schema version above this
    one's): its measurements may mean what this version cannot tell. Older ones are read as they are."""
    version = _version(conn)
    if version is not None and version.isdigit() and int(version) > int(SCHEMA_VERSION):
        raise QidlabError(f"{path}: store schema version {version}, this qidlab reads {readable()} "
                          f"(a newer qidlab wrote it)")


def _migrate(conn: sqlite3.Connection, path, version: str) -> None:
    """Bring an older store to ``SCHEMA_VERSION`` in one transaction; refuse a newer or unknown one."""
    steps = []
    while version in MIGRATIONS:
        steps += MIGRATIONS[version]
        version = str(int(version) + 1)
    if version != SCHEMA_VERSION:
        conn.close()
        raise QidlabError(f"{path}: store schema version {version}, this qidlab reads {readable()}")
    with conn:
        for statement in steps:
            conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))


def readable() -> str:
    """The schema versions this qidlab reads, in words ("1 to 2")."""
    return f"{min(MIGRATIONS, key=int)} to {SCHEMA_VERSION}" if MIGRATIONS else SCHEMA_VERSION


def added_columns(version: str) -> dict[str, set[str]]:
    """Columns per table that a store of schema ``version`` lacks and its migration would add."""
    out: dict[str, set[str]] = {}
    while version in MIGRATIONS:
        for statement in MIGRATIONS[version]:
            words = statement.split()
            if words[:2] == ["ALTER", "TABLE"] and words[3:5] == ["ADD", "COLUMN"]:
                out.setdefault(words[2], set()).add(words[5])
        version = str(int(version) + 1)
    return out


def added_tables(version: str) -> set[str]:
    """Tables that a store of schema ``version`` lacks and its migration would create."""
    out: set[str] = set()
    while version in MIGRATIONS:
        out |= {s.split()[5] for s in MIGRATIONS[version] if s.startswith("CREATE TABLE IF NOT EXISTS ")}
        version = str(int(version) + 1)
    return out


@contextmanager
def read_only(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the SQLite file ``path`` (nothing is created), closed on exit."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> int:
    """Insert ``row`` (column -> value) into ``table``; return its rowid."""
    names = ", ".join(row)
    marks = ",".join("?" * len(row))
    return int(conn.execute(f"INSERT INTO {table}({names}) VALUES ({marks})", tuple(row.values())).lastrowid)


# ---------------------------------------------------------------------------
# checking a file


def check_store(path: Path) -> None:
    """``QidlabError`` unless ``path`` is a readable, intact qidlab store of this schema version."""
    if not path.is_file():
        raise QidlabError(f"{path}: no such store")
    try:
        with read_only(path) as conn:
            problem = _schema_problem(conn)
    except sqlite3.DatabaseError as exc:
        raise QidlabError(f"{path}: not a readable SQLite store ({exc})") from None
    if problem:
        raise QidlabError(f"{path}: {problem}")


def _schema_problem(conn: sqlite3.Connection) -> str | None:
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        return f"the SQLite file is damaged ({check})"
    have_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if have_meta else None
    version = row[0] if row else None
    if version is not None and version != SCHEMA_VERSION and version not in MIGRATIONS:
        return f"store schema version {version}, this qidlab reads {readable()}"
    later = added_columns(version) if version is not None else {}
    new_tables = added_tables(version) if version is not None else set()
    for table, names in columns().items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if not have and table in new_tables:
            continue
        if not have:
            return f"not a qidlab store (no table {table!r})"
        missing = [c for c in names if c not in have and c not in later.get(table, ())]
        if missing:
            return f"not a qidlab store of this version (table {table!r} lacks {', '.join(missing)})"
    if version is None:
        return f"store schema version missing, this qidlab reads {SCHEMA_VERSION}"
    return None


# ---------------------------------------------------------------------------
# the meta table's JSON records


def meta_json(conn: sqlite3.Connection, schema_name: str, key: str, default):
    """The JSON value of ``key`` in ``<schema_name>.meta`` ("main", or "src" for an attached
    source store), or ``default`` when the key is absent."""
    row = conn.execute(f"SELECT value FROM {schema_name}.meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return default
    try:
        return json.loads(row[0])
    except ValueError:
        which = "source" if schema_name == "src" else "destination"
        raise QidlabError(f"meta {key!r} of the {which} store is not JSON") from None


def set_meta(conn: sqlite3.Connection, key: str, value) -> None:
    """Write ``value`` as JSON (sorted keys) under ``key`` in the main store's meta."""
    conn.execute("INSERT INTO main.meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (key, json.dumps(value, sort_keys=True)))
