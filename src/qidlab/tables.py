"""The data contract: canonical measurement columns, and reading them from CSV,
Parquet or the SQLite store with one clear error for each kind of bad input.

Canonical columns (losses in nats per token):

  n_params        N, non-embedding parameters
  n_params_total  all parameters, embeddings and head included
  tokens          D, training tokens seen by the checkpoint
  bits            P, weight bit width of the quantized model (16 = not quantized)
  group_size      G, quantization group size (columns sharing one scale)
  exp_bits        E, exponent bits of a floating-point format
  man_bits        M, mantissa bits of a floating-point format
  block_size      B, elements sharing one scale in block-wise floating-point formats
  method          quantization method name (gptq, rtn, awq, nf4, fp4, fp, ternary, ...)
  loss16          cross-entropy of the 16-bit model
  loss            cross-entropy of the quantized model
  qid             loss - loss16 (quantization-induced degradation)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .dataset_format import split_condition
from .errors import QidlabError
from .store import read_canonical

if TYPE_CHECKING:
    import pandas as pd

NUMERIC = (
    "n_params", "n_params_total", "tokens", "bits", "group_size", "exp_bits", "man_bits",
    "block_size", "a_bits", "kv_bits", "eff", "loss16", "loss", "qid",
)
TEXT = ("method", "eval_set", "suite", "model")
CANONICAL = NUMERIC + TEXT
#: Columns that must be strictly positive wherever they are given.
POSITIVE = ("n_params", "n_params_total", "tokens", "bits", "group_size", "block_size", "eff")

SQLITE_SUFFIXES = {".db", ".sqlite", ".sqlite3"}


def read_table(path: str | Path, *, where: Iterable[str] = ()) -> "pd.DataFrame":
    """Read a measurement table (CSV, Parquet, or a qidlab SQLite store) and validate it.

    Numeric canonical columns are converted to float; ``qid`` is derived as
    ``loss - loss16`` when absent. Raises ``QidlabError`` naming the problem for a
    missing or empty file, an unknown format, a non-numeric cell, or N/D <= 0. ``where``
    (``select_rows``) selects rows before N/D are checked, so that ``tokens>0`` leaves out a
    store's step-0 checkpoints (D = 0).
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise QidlabError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            if path.stat().st_size == 0:
                raise QidlabError(f"{path}: the file is empty")
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in SQLITE_SUFFIXES:
            frame = read_canonical(path)
        else:
            raise QidlabError(f"{path}: unknown table format {suffix!r} (use .csv, .parquet or a .db store)")
    except QidlabError:
        raise
    except Exception as exc:  # pandas/pyarrow/sqlite parse errors
        raise QidlabError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    return validate(frame, source=str(path), where=where)


def validate(frame: "pd.DataFrame", source: str = "table", *, where: Iterable[str] = ()) -> "pd.DataFrame":
    """Check and normalise a measurement table in memory (see ``read_table``)."""
    import numpy as np
    import pandas as pd

    if frame.shape[0] == 0:
        raise QidlabError(f"{source}: the table has no rows")
    frame = frame.copy()
    frame.columns = [str(c).strip() for c in frame.columns]
    for col in NUMERIC:
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise QidlabError(
                f"{source}: column {col!r}, row {row + 1}: {frame[col].iloc[row]!r} is not a number"
            )
        frame[col] = values.astype(float)
        infinite = np.isinf(frame[col].to_numpy())
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise QidlabError(f"{source}: column {col!r}, row {row + 1}: {frame[col].iloc[row]} is not finite")
    frame = select_rows(frame, where)
    for col in POSITIVE:
        if col in frame.columns:
            bad = frame[col].notna() & ~(frame[col] > 0)
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise QidlabError(
                    f"{source}: column {col!r}, row {row + 1}: {frame[col].iloc[row]:g} must be > 0"
                )
    if "qid" not in frame.columns and {"loss", "loss16"} <= set(frame.columns):
        frame["qid"] = frame["loss"] - frame["loss16"]
    return frame


def require_columns(frame: "pd.DataFrame", columns: Iterable[str], what: str, params: Iterable[str] = ()) -> None:
    """A ``QidlabError`` "``what`` needs column(s) ..." unless ``frame`` has every column;
    ``params``: the library parameters ``what`` names (see ``QidlabError``)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise QidlabError(f"{what} needs column(s) {', '.join(missing)}; the table has: {have}", params=tuple(params))


# ---------------------------------------------------------------------------
# selecting rows

SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_number(text: str) -> float:
    """A float, also written with a size suffix: 7B, 405B, 100T, 1.5M."""
    text = text.strip()
    try:
        if text and text[-1].upper() in SUFFIXES and text[:-1]:
            return float(text[:-1]) * SUFFIXES[text[-1].upper()]
        return float(text)
    except ValueError:
        raise QidlabError(f"{text!r} is not a number") from None


def select_rows(frame: "pd.DataFrame", where: Iterable[str]) -> "pd.DataFrame":
    """The rows matching every condition of ``where``: ``COLUMN=V1,V2`` (one of the values;
    numbers compared as numbers, sizes may carry K/M/B/T) or ``COLUMN>=X`` (also ``<=``,
    ``>``, ``<``). One ``QidlabError`` naming a bad condition; an empty selection is an error
    too."""
    where = list(where)
    for item in where:
        frame = frame[_condition(frame, item)]
    if where and frame.empty:
        raise QidlabError(f"`where` {' '.join(where)}: no rows match", params=("where",))
    return frame


def _condition(frame: "pd.DataFrame", item: str) -> "pd.Series":
    """The boolean mask of one ``where`` condition."""
    import operator

    parts = split_condition(item)
    if parts is None:
        raise QidlabError(f"`where` expects COLUMN=V1,V2 or COLUMN>=X, got {item!r}", params=("where",))
    column, op, text = parts
    if column not in frame.columns:
        raise QidlabError(f"`where` {item!r}: no column {column!r} (have: {', '.join(map(str, frame.columns))})",
                          params=("where",))
    numeric = frame[column].dtype.kind in "iuf"
    if op == "=":
        return frame[column].isin([parse_number(v) if numeric else v.strip() for v in text.split(",") if v.strip()])
    if not numeric:
        raise QidlabError(f"`where` {item!r}: {column!r} is not numeric", params=("where",))
    compare = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
    return compare[op](frame[column], parse_number(text))
