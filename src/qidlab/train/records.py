"""What training writes beside the checkpoints, kept consistent across an interruption and resume.

``<model>/train-log.csv`` (``TrainLog``)::

    step,tokens,loss,lr
    1,512,5.98...,0.00075

One row per ``log_every`` updates, and one at every saved checkpoint step and at the last step:
``step`` is the number of updates done (the row's model is ``step<step>``), ``tokens`` =
``step * tokens_per_step`` (D), ``loss`` the mean training cross-entropy (nats/token) of the
updates since the previous row (each measured on its batch before the update), ``lr`` the learning
rate of the row's last update. Rows restart at every checkpoint step, so a run resumed from a
checkpoint writes exactly the rows an uninterrupted run writes: on resume, rows after the resumed
step (written after the last checkpoint of the interrupted run) are dropped first.

``<model>/weight-dynamics.json`` (``DynamicsLog``)::

    {"model": str, "checkpoints": [{"step": int, "tokens": int, "prev_step": int, "log10_edges": [...],
     "counts": [...], "quantiles": {"0.5": q, "0.9": q, "0.99": q}, "rms": float, "mean_abs": float}]}

one entry per saved checkpoint after step 0: the change of the blocks' linear weights since the
previous saved checkpoint (``qidlab.train.dynamics``). Rewritten whole at each checkpoint; on resume,
entries after the resumed step are dropped and the previous weights are those of the resumed step
(read from its folder), so the file is what an uninterrupted run writes.

Files are replaced atomically (``qidlab.files``: a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from qidlab.errors import QidlabError
from qidlab.files import write_json, write_text

LOG_FILE = "train-log.csv"
LOG_HEADER = "step,tokens,loss,lr"
DYNAMICS_FILE = "weight-dynamics.json"


def _rows_upto(path: Path, step: int) -> list[str]:
    """The complete data rows of an existing log whose step is <= ``step``."""
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().split("\n")[1:]:
        fields = line.split(",")
        if len(fields) != 4 or not fields[0].isdigit():
            break  # a partly written last line
        if int(fields[0]) > step:
            break
        keep.append(line)
    return keep


class TrainLog:
    """``train-log.csv`` of one model (module docstring): opened at the step training starts from."""

    def __init__(self, path: Path, start_step: int):
        self.path = Path(path)
        rows = _rows_upto(self.path, start_step) if start_step > 0 else []
        write_text(self.path, "\n".join([LOG_HEADER, *rows]) + "\n")
        self._fh = open(self.path, "a")

    def append(self, step: int, tokens: int, loss: float, lr: float) -> None:
        """One row; ``loss`` in nats/token."""
        self._fh.write(f"{step},{tokens},{loss!r},{lr!r}\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DynamicsLog:
    """``weight-dynamics.json`` of one model (module docstring): opened at the step training starts from."""

    def __init__(self, path: Path, model: str, start_step: int):
        self.path = Path(path)
        self.doc = {"model": model, "checkpoints": []}
        if start_step > 0 and self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
                self.doc["checkpoints"] = [c for c in old["checkpoints"] if c["step"] <= start_step]
            except (ValueError, KeyError, TypeError) as exc:
                raise QidlabError(f"{self.path}: cannot read the weight dynamics to resume ({exc}); "
                                  "delete the model's folder to train it again") from None
        write_json(self.path, self.doc)

    def add(self, entry: dict) -> None:
        """Append one checkpoint's entry and rewrite the file."""
        self.doc["checkpoints"].append(entry)
        write_json(self.path, self.doc)
