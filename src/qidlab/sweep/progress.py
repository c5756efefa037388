"""The sweep's progress on stderr: one updating line on a terminal, one line per checkpoint in a
log (stderr not a terminal), failures always on a line of their own; and an ETA weighted by what
remains, not by how many measurements remain.

Weights: a measurement (one config x one eval set of one checkpoint) costs the checkpoint's size
(bytes of its weight files, a stand-in for N; 1 for a Hub checkpoint not yet downloaded) times
its method's cost, ``METHOD_COST``: scoring the 16-bit model is 1; a rounding method (rtn, nf4,
fp4, fp, ternary) rounds the weights, then scores: 1.2; GPTQ and AWQ run the calibration set
through the model and solve per layer first: 3. The ETA is the elapsed time per unit of weight
done so far times the weight left. Rough ratios from the demo's CPU sweep; only ratios matter.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

#: Relative cost of one measurement by method (module docstring); others: ``DEFAULT_COST``.
METHOD_COST = {"none": 1.0, "gptq": 3.0, "awq": 3.0}
DEFAULT_COST = 1.2


def method_cost(method: str) -> float:
    return METHOD_COST.get(method, DEFAULT_COST)


def checkpoint_weight(location) -> float:
    """Bytes of a local checkpoint's weight files (safetensors, else pickled), 1.0 when unknown."""
    folder = Path(str(location))
    if not folder.is_dir():
        return 1.0
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return float(sum(f.stat().st_size for f in files)) or 1.0


def _duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress of a sweep's plan: ``[(ref, configs to measure)]`` x ``n_eval_sets``."""

    def __init__(self, plan: list, n_eval_sets: int, *, enabled: bool = True, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.size = {self._key(ref): checkpoint_weight(ref.location) for ref, _ in plan}
        self.total = sum(len(todo) for _, todo in plan) * n_eval_sets
        self.total_weight = sum(self.size[self._key(ref)] * method_cost(c.method) * n_eval_sets
                                for ref, todo in plan for c in todo)
        self.done = 0
        self.done_weight = 0.0
        self.t0 = time.monotonic()
        self.losses: list[str] = []  # this checkpoint's 16-bit losses, as shown
        self.qids: list[tuple[float, str]] = []  # this checkpoint's (qid, label)

    @staticmethod
    def _key(ref) -> tuple:
        return (ref.suite, ref.model, ref.step)

    def _eta(self) -> str:
        elapsed = time.monotonic() - self.t0
        if not self.done_weight:
            return f"elapsed {_duration(elapsed)}"
        left = elapsed / self.done_weight * max(self.total_weight - self.done_weight, 0.0)
        return f"elapsed {_duration(elapsed)}, ETA {_duration(left)}"

    def _head(self) -> str:
        return f"[{self.done}/{self.total}]"

    def measured(self, ref, method: str, text: str, *, failed: bool = False, jobs: int = 1,
                 qid: float | None = None, label: str = "") -> None:
        """``jobs`` measurements of ``ref`` by ``method`` are done (or failed); ``text`` says what came
        out, ``qid`` and ``label`` feed the checkpoint's line in a log."""
        self.done += jobs
        self.done_weight += self.size.get(self._key(ref), 1.0) * method_cost(method) * jobs
        if not self.enabled:
            return
        where = f"{ref.model}/step{ref.step}"
        if failed:
            self._clear()
            print(f"{self._head()} {where} {text}", file=self.stream, flush=True)
            return
        if qid is None:
            self.losses.append(text)
        else:
            self.qids.append((qid, label))
        if self.tty:
            line = f"{self._head()} {where} {text}  ({self._eta()})"
            width = 160
            print(f"\r\033[K{line[:width]}", end="", file=self.stream, flush=True)

    def checkpoint_done(self, ref) -> None:
        """The end of ``ref``: in a log, its one line: the 16-bit loss, how many quantized configs, the
        range of QiD and the config with the largest; the progress and the ETA."""
        if self.enabled and not self.tty and (self.losses or self.qids):
            parts = self.losses[:1] + ([f"+{len(self.losses) - 1} more eval sets"] if len(self.losses) > 1 else [])
            if self.qids:
                top = max(self.qids, key=lambda q: q[0] if q[0] == q[0] else float("-inf"))
                low = min(q for q, _ in self.qids)
                parts.append(f"{len(self.qids)} quantized, qid {low:.4f} to {top[0]:.4f} (largest: {top[1]})")
            print(f"{self._head()} {ref.model}/step{ref.step}: {'; '.join(parts)}  ({self._eta()})",
                  file=self.stream, flush=True)
        self.losses, self.qids = [], []

    def close(self) -> None:
        """End the terminal's updating line."""
        if self.tty and self.done:
            print(file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.stream, flush=True)
