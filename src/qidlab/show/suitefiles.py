"""The trainer's files that Fig. 12 and Fig. 14 read, with one clear error per bad file.

``<suite>/<model>/train-log.csv``: columns ``step,tokens,loss,lr`` (training loss in nats per
token, D in tokens).

``<suite>/<model>/weight-dynamics.json``::

    {"model": str, "checkpoints": [{"step": int, "tokens": int, "prev_step": int,
      "log10_edges": [float, ...], "counts": [int, ...],
      "quantiles": {"0.5": float, "0.9": float, "0.99": float}, "rms": float, "mean_abs": float}]}

a histogram of log10|w_step - w_prev_step| over the transformer blocks' linear weights
(``len(counts) == len(log10_edges) - 1``, edges increasing) and summary numbers of |w_step -
w_prev_step| (rms, mean_abs; quantiles as written by the trainer).

``<suite>/qidlab-suite.toml``: ``[models."NAME"]`` tables; a model trained at low precision
has ``precision = "bitnet-b1.58"`` (or another low-bit name) and ``twin = "OTHER"``, its bf16
twin; a model without ``precision`` is bf16.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..checkpoints.discover import read_manifest
from ..errors import QidlabError

if TYPE_CHECKING:
    import pandas as pd

TRAIN_LOG = "train-log.csv"
WEIGHT_DYNAMICS = "weight-dynamics.json"
LOG_COLUMNS = ("step", "tokens", "loss", "lr")
ENTRY_KEYS = ("step", "tokens", "prev_step", "log10_edges", "counts", "quantiles", "rms", "mean_abs")
QUANTILES = ("0.5", "0.9", "0.99")
#: ``precision`` values that mean a 16- or 32-bit model (anything else is low-bit).
HIGH_PRECISION = {"bf16", "bfloat16", "fp16", "float16", "fp32", "float32"}


@dataclass(frozen=True)
class Twins:
    """A model trained at low precision and its bf16 twin, in one suite folder."""

    suite_dir: Path
    low_bit: str
    precision: str
    twin: str


def read_train_log(path: str | Path) -> "pd.DataFrame":
    """The training log at ``path``, sorted by step; ``QidlabError`` naming the file, column and
    row for a missing column, a non-numeric or non-finite cell, or an empty log."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise QidlabError(f"{path}: no such training log") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{path}: not a CSV training log ({exc})") from None
    missing = [c for c in LOG_COLUMNS if c not in frame.columns]
    if missing:
        raise QidlabError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(LOG_COLUMNS)})")
    if frame.empty:
        raise QidlabError(f"{path}: the training log has no rows")
    for column in LOG_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~values.map(math.isfinite)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise QidlabError(f"{path}: column {column!r}, row {row + 1}: {frame[column].iloc[row]!r} is not a "
                              "finite number")
        frame[column] = values.astype(float)
    return frame.sort_values("step").reset_index(drop=True)


def read_weight_dynamics(path: str | Path) -> dict[str, Any]:
    """The weight-dynamics file at ``path``, checked against the contract (module docstring)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise QidlabError(f"{path}: no such weight-dynamics file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        raise QidlabError(f"{path}: expected an object with a string 'model'")
    entries = doc.get("checkpoints")
    if not isinstance(entries, list) or not entries:
        raise QidlabError(f"{path}: 'checkpoints' must be a non-empty list")
    for i, entry in enumerate(entries):
        _check_entry(entry, f"{path}: checkpoints[{i}]")
    return doc


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_entry(entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise QidlabError(f"{where}: expected an object")
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise QidlabError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in ("step", "tokens", "prev_step"):
        if not isinstance(entry[key], int) or isinstance(entry[key], bool) or entry[key] < 0:
            raise QidlabError(f"{where}: {key!r} must be a non-negative integer, got {entry[key]!r}")
    edges, counts = entry["log10_edges"], entry["counts"]
    if not isinstance(edges, list) or len(edges) < 2 or not all(map(_number, edges)) \
            or any(b <= a for a, b in zip(edges, edges[1:])):
        raise QidlabError(f"{where}: 'log10_edges' must be at least two increasing numbers")
    if not isinstance(counts, list) or len(counts) != len(edges) - 1 \
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise QidlabError(f"{where}: 'counts' must be {len(edges) - 1} non-negative integers (one per bin)")
    quantiles = entry["quantiles"]
    if not isinstance(quantiles, dict) or not all(_number(quantiles.get(q)) for q in QUANTILES):
        raise QidlabError(f"{where}: 'quantiles' must give numbers for {', '.join(QUANTILES)}")
    for key in ("rms", "mean_abs"):
        if not _number(entry[key]) or entry[key] < 0:
            raise QidlabError(f"{where}: {key!r} must be a number >= 0, got {entry[key]!r}")


def weight_dynamics_files(suite_dirs: Sequence[Path]) -> list[Path]:
    """Every ``<suite>/<model>/weight-dynamics.json`` of the suites, in order."""
    return [p for suite in suite_dirs for p in sorted(Path(suite).glob(f"*/{WEIGHT_DYNAMICS}"))]


def twins(suite_dirs: Sequence[Path]) -> list[Twins]:
    """The low-bit models with a bf16 twin named in their suite's manifest. A twin the manifest
    does not list is an error."""
    out = []
    for suite in suite_dirs:
        manifest = read_manifest(suite)
        models = manifest["models"]
        for name, spec in models.items():
            precision = spec["info"].get("precision")
            if precision is None or str(precision).lower() in HIGH_PRECISION:
                continue
            twin = spec["info"].get("twin")
            if not isinstance(twin, str) or twin not in models:
                raise QidlabError(f"{manifest['file']}: models.{name} (precision {precision!r}) names twin {twin!r}, "
                                  f"which is not a model of the suite ({', '.join(sorted(models))})")
            out.append(Twins(Path(suite), name, str(precision), twin))
    return out
