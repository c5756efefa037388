"""Downstream tasks in a sweep: a study's ``[[tasks]]`` (lm-evaluation-harness) run on the
16-bit model and on each quantized model, in memory, right after its losses are scored.

``measure_checkpoint`` (run.py) calls ``reference_scores`` once per checkpoint and
``task_results`` per config; the driver writes each ``TaskResult`` as one ``task_results`` row
(``task_measurement``) whose identity is the config's measurement identity without the loss
scoring, plus the task's (``task_identity``). The 16-bit values travel with every result, so a
row stores value, stderr, value16 and delta = value - value16 (the task analogue of QiD).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ..errors import QidlabError
from ..evaluate.tasks import TaskScore, TaskSpec, run_tasks
from ..quantize.config import QuantConfig
from ..store import TaskMeasurement

#: {spec name: {task: {metric: TaskScore}}}: one model's scores on a study's tasks.
Scores = Mapping[str, Mapping[str, Mapping[str, TaskScore]]]


@dataclass
class TaskResult:
    """One metric of one task of a config (``spec``: the ``[[tasks]]`` name it came from), with
    the 16-bit model's value of the same metric; or the error that stopped the config's tasks."""

    config: QuantConfig
    spec: str
    task: str = ""
    metric: str = ""
    score: TaskScore | None = None
    value16: float = float("nan")
    error: str | None = None


def task_identity(base: Mapping[str, Any], spec: TaskSpec) -> dict[str, Any]:
    """A task row's identity: the measurement identity ``base`` (``run.measurement_config``) less
    its loss scoring, plus the task's ``TaskSpec.identity()``."""
    out = {k: v for k, v in base.items() if k != "scoring"}
    out["task"] = spec.identity()
    return out


def reference_scores(model, tokenizer, specs: tuple[TaskSpec, ...]) -> dict:
    """The 16-bit model's scores on every task (``Scores``)."""
    return {spec.name: run_tasks(model, tokenizer, [spec]) for spec in specs}


def task_results(cfg: QuantConfig, model, tokenizer, specs: tuple[TaskSpec, ...], ref: Scores) -> Iterator[TaskResult]:
    """``TaskResult``s of ``cfg`` (its quantized weights in ``model``; the 16-bit reference reuses
    ``ref``); a failing task yields one result with ``error`` and the others go on."""
    for spec in specs:
        try:
            scores = ref[spec.name] if not cfg.rounds_weights else run_tasks(model, tokenizer, [spec])
        except Exception as exc:  # one failing task must not stop the sweep
            detail = str(exc) if isinstance(exc, QidlabError) else traceback.format_exc(limit=3)
            yield TaskResult(cfg, spec.name, error=f"{type(exc).__name__}: {detail}")
            continue
        for task, metrics in scores.items():
            for metric, score in metrics.items():
                value16 = ref[spec.name].get(task, {}).get(metric)
                yield TaskResult(cfg, spec.name, task, metric, score,
                                 value16.value if value16 is not None else float("nan"))


def task_measurement(item: TaskResult, checkpoint_id: int, identity: Mapping[str, Any], versions, revision
                     ) -> TaskMeasurement:
    """The ``task_results`` row of ``item``."""
    cols = item.config.columns()
    s = item.score
    return TaskMeasurement(
        checkpoint_id=checkpoint_id, task=item.task, metric=item.metric, method=cols["method"], bits=cols["bits"],
        config=identity, value=s.value, stderr=s.stderr, value16=item.value16, higher_is_better=s.higher_is_better,
        n_docs=s.n_docs, versions=versions, code_revision=revision, group_size=cols.get("group_size"),
        exp_bits=cols.get("exp_bits"), man_bits=cols.get("man_bits"), block_size=cols.get("block_size"))
