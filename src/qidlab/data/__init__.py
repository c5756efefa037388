"""Data sets shipped with qidlab, loadable by name (see README.md here for provenance).

Two kinds: *tables* (``BUNDLED``: one CSV file each, e.g. the paper's Table 1) and *measured
data sets* (a folder ``<name>/`` with ``manifest.json`` and ``measurements.parquet``, written by
``qidlab store publish``; ``qidlab.store.publish``). Data sets are looked up, in order, in this
package's folder (so they ship inside the wheel and work from an installed package) and in the
folders of the ``QIDLAB_DATA_PATH`` environment variable (``os.pathsep``-separated; for data not
shipped, e.g. a campaign's before it is committed). A shipped name cannot be shadowed.

``path(name)`` gives the table file of a name; ``resolve(name_or_path)`` accepts a name, a data
set folder or a file path, which is what the command line does with its DATA argument;
``load`` returns the validated canonical table; ``manifest`` a data set's manifest.
``DEFAULT`` is the data set ``qidlab fit`` and ``qidlab report`` read when given no input.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from .. import provenance
from ..dataset_format import BUNDLED, MANIFEST
from ..errors import QidlabError
from ..store import read_task_table
from ..tables import SQLITE_SUFFIXES, read_table, validate

#: The default input of ``qidlab fit`` / ``qidlab report`` / ``qidlab plot``: the measured data
#: set that ships with qidlab: Campaign 2's (issue 17; docs/findings.md, "Campaign 2").
DEFAULT = "qidlab-gpu-2027"
#: Shipped data sets kept for comparison but replaced: name -> ``{"by": name, "why": text}``. They
#: still load; the command line says so in one line on stderr (``superseded_note``).
SUPERSEDED = {
    "qidlab-gpu-2026": {
        "by": "qidlab-gpu-2027",
        "why": "scored after a <|bos|> token its models never saw in training (an untrained prefix); each model "
               "trained once (GPU nondeterminism alone moved QiD by a median 1.07-1.27x); tokens and "
               "learning-rate decay varied together along one cosine run per size",
    },
}
ENV = "QIDLAB_DATA_PATH"


def _package_dir() -> Path:
    return Path(str(resources.files(__package__)))


def search_path() -> list[Path]:
    """The folders searched for data sets: this package's, then those of $QIDLAB_DATA_PATH."""
    extra = [Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return [_package_dir(), *extra]


def datasets() -> dict[str, Path]:
    """Every measured data set found: name -> its folder (the first found of a name wins)."""
    found: dict[str, Path] = {}
    for root in search_path():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / MANIFEST).is_file() and not folder.name.startswith("."):
                    found.setdefault(folder.name, folder)
    return found


def names() -> list[str]:
    """Every name ``load`` accepts: the tables, then the data sets."""
    return [*BUNDLED, *datasets()]


def superseded_note(name_or_path: str | Path) -> str | None:
    """One line saying that a shipped data set is superseded, by what and why; None otherwise."""
    folder = dataset_dir(name_or_path)
    entry = SUPERSEDED.get(folder.name) if folder is not None else None
    if entry is None:
        return None
    return f"note: {folder.name} is superseded by {entry['by']} and still loads, for comparison. Why: {entry['why']}"


def dataset_dir(name_or_path: str | Path) -> Path | None:
    """The folder of a data set given by name or as a folder path; None if it is neither."""
    text = str(name_or_path)
    if text in BUNDLED:
        return None
    folder = datasets().get(text)
    if folder is None and Path(text).is_dir() and (Path(text) / MANIFEST).is_file():
        folder = Path(text)
    return folder


def manifest(name_or_path: str | Path) -> dict:
    """The manifest of a data set (by name or folder)."""
    folder = dataset_dir(name_or_path)
    if folder is None:
        raise QidlabError(f"no data set {str(name_or_path)!r} ({_have()})")
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise QidlabError(f"{folder / MANIFEST}: not a readable manifest ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files", {}).get("measurements"), dict):
        raise QidlabError(f"{folder / MANIFEST}: not a qidlab data set manifest (no files.measurements)")
    return doc


def path(name: str) -> Path:
    """The table file of bundled table or data set ``name``."""
    if name in BUNDLED:
        return Path(str(resources.files(__package__).joinpath(BUNDLED[name])))
    folder = datasets().get(name)
    if folder is None:
        raise QidlabError(f"no bundled data set {name!r} ({_have()})")
    return folder / manifest(folder)["files"]["measurements"]["path"]


def resolve(name_or_path: str) -> Path:
    """The table file of a bundled name or data set folder, else the path itself (a missing
    path that looks like a name, with no suffix, is an error listing the names)."""
    if name_or_path in BUNDLED:
        return path(name_or_path)
    folder = dataset_dir(name_or_path)
    if folder is not None:
        return folder / manifest(folder)["files"]["measurements"]["path"]
    given = Path(name_or_path)
    if not given.exists() and not given.suffix:
        raise QidlabError(f"{name_or_path!r}: no such file or bundled data set ({_have()})")
    return given


def load(name_or_path: str, *, where=()):
    """The validated canonical table (``qidlab.tables.read_table``; ``where`` selects rows before
    N and D are checked) of a bundled name, a data set (its file checked against the manifest's
    sha256) or a file."""
    file = resolve(name_or_path)
    folder = dataset_dir(name_or_path)
    if folder is not None:
        _check_hash(file, manifest(folder)["files"]["measurements"].get("sha256"))
    return read_table(file, where=where)


TASK_TARGET = "task:"


def load_task_target(name_or_path: str, target: str, *, where=()):
    """The downstream-task results of a store as a table to fit: ``target`` is
    ``task:NAME:METRIC`` (an lm_eval task and metric as stored, e.g. ``task:hellaswag:acc_norm``);
    one row per checkpoint x config, the canonical columns (N, D, bits, method, ...) plus a column
    named ``target`` holding the degradation from 16 bits, positive when the quantized model is
    worse (value16 - value for a metric where higher is better or lm_eval does not say, value -
    value16 for one where lower is better): the
    task analogue of QiD, so QiD laws fit it (``qidlab fit STORE --law ... --target task:NAME:METRIC``).
    A published data set's ``tasks.parquet`` (``qidlab store publish``) is read the same way."""
    parts = target.split(":", 2)
    if len(parts) != 3 or parts[0] + ":" != TASK_TARGET or not parts[1] or not parts[2]:
        raise QidlabError(f"a task target is task:NAME:METRIC (e.g. task:hellaswag:acc), not {target!r}",
                          params=("target",))
    _, task, metric = parts
    file, table = _task_table(name_or_path)
    rows = table[(table.task == task) & (table.metric == metric)].copy()
    if rows.empty:
        have = sorted({f"task:{t}:{m}" for t, m in zip(table.task, table.metric)})
        raise QidlabError(f"{file}: no task results for {target}" + (f" (stored: {', '.join(have)})" if have
                                                                      else " (the store has no task results)"))
    worse = rows["value16"] - rows["value"]
    rows[target] = worse.where(rows["higher_is_better"].fillna(1).astype(float) == 1, -worse)
    return validate(rows.drop(columns=["task", "metric"]), source=str(file), where=where)


def _task_table(name_or_path: str):
    """(file, the task results as ``read_task_table`` gives them) of a store or a published data set."""
    folder = dataset_dir(name_or_path)
    if folder is not None:
        entry = manifest(folder)["files"].get("tasks") or {}
        if not entry.get("path"):
            raise QidlabError(f"{folder}: the data set has no task results "
                              f"({entry.get('reason', 'published before task results were')})")
        file = folder / entry["path"]
        _check_hash(file, entry.get("sha256"))
        import pandas as pd

        return file, pd.read_parquet(file)
    file = resolve(name_or_path)
    if file.suffix.lower() not in SQLITE_SUFFIXES:
        raise QidlabError(f"{file}: task results are read from a qidlab store (.db) or a published data set, "
                          f"not a table file")
    return file, read_task_table(file)


def _check_hash(file: Path, expected: str | None) -> None:
    if not file.is_file():
        raise QidlabError(f"{file}: the data set's table is missing")
    if expected and provenance.file_sha256(file) != expected:
        raise QidlabError(f"{file}: sha256 differs from the manifest's (the file was changed or damaged)")


def _have() -> str:
    return "have: " + ", ".join(names())
