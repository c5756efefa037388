"""Downstream tasks through lm-evaluation-harness, on a model already in memory.

``run_tasks(model, tokenizer, specs)`` wraps the model object in lm_eval's ``HFLM`` (no reload, no
copy: a quantized model is evaluated as the sweep left it) and runs ``simple_evaluate`` on the
tasks of ``specs``; each result is a ``TaskScore`` per task and metric: the value, its standard
error as lm_eval reports it, whether higher is better, and the documents evaluated. Task
definitions come from lm_eval's own catalogue or from YAML files in a ``TaskSpec.include``
folder (lm_eval's ``TaskManager(include_path=...)``, e.g. a task whose ``dataset_path`` is
``json`` over a local file).

lm_eval (the ``tasks`` extra: ``pip install 'qidlab[tasks]'``, with ``accelerate`` for ``HFLM``) is
imported inside the functions: importing this module loads nothing heavy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from qidlab.errors import QidlabError

__all__ = ["TaskSpec", "TaskScore", "check_tasks", "run_tasks", "metric_name", "require_lm_eval"]

#: Bootstrap replicates lm_eval uses for the standard error of metrics with no closed form.
BOOTSTRAP_ITERS = 1000


@dataclass(frozen=True)
class TaskSpec:
    """One ``[[tasks]]`` table: an lm_eval task (or group) ``name``; ``include``: a folder of task
    YAML files (None: lm_eval's catalogue only); ``num_fewshot`` (None: the task's default);
    ``limit``: the first documents only; ``metrics``: the metrics to keep (None: all);
    ``batch_size``: HFLM's."""

    name: str
    include: Path | None = None
    num_fewshot: int | None = None
    limit: int | None = None
    metrics: tuple[str, ...] | None = None
    batch_size: int = 8

    def identity(self) -> dict[str, Any]:
        """What defines the task's numbers (hashed into a task measurement's config): the name,
        the task files' contents, and the options given (defaults add nothing)."""
        out: dict[str, Any] = {"name": self.name}
        if self.include is not None:
            out["include"] = _folder_hash(self.include)
        for key in ("num_fewshot", "limit", "metrics"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class TaskScore:
    """One metric of one task: ``value`` (as lm_eval computes it, e.g. accuracy in [0, 1]),
    ``stderr`` (None where lm_eval gives none), ``higher_is_better`` (None: unknown), ``n_docs``."""

    value: float
    stderr: float | None
    higher_is_better: bool | None
    n_docs: int | None


def _folder_hash(folder: Path) -> str:
    """sha256 over the YAML files of ``folder`` (names and contents, sorted)."""
    if not folder.is_dir():
        raise QidlabError(f"task folder {folder} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def require_lm_eval() -> None:
    """One line when lm-evaluation-harness (and the accelerate its HFLM needs) is not installed."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as exc:
        raise QidlabError(f"[[tasks]] need lm-evaluation-harness with its Hugging Face backend: pip install "
                          f"'qidlab[tasks]' ({exc})") from None


def metric_name(key: str) -> str:
    """lm_eval's result key ``"acc,none"`` as stored: ``acc`` (``"exact_match,strict"`` stays as it is)."""
    metric, _, filt = key.partition(",")
    return metric if filt in ("", "none") else key


_MANAGERS: dict = {}  # TaskManager per include folders: indexing lm_eval's catalogue takes seconds


def _task_manager(includes: tuple[str, ...]):
    from lm_eval.tasks import TaskManager

    if includes not in _MANAGERS:
        _MANAGERS[includes] = TaskManager(include_path=list(includes) or None)
    return _MANAGERS[includes]


def check_tasks(specs: Sequence[TaskSpec]) -> None:
    """Before anything is measured: lm_eval installed and every task known (one line otherwise)."""
    if not specs:
        return
    require_lm_eval()
    for spec in specs:
        _task_manager_of(spec)


def _task_manager_of(spec: TaskSpec):
    """The TaskManager that knows ``spec``'s task; one line when none does."""
    manager = _task_manager((str(spec.include),) if spec.include is not None else ())
    if not manager.match_tasks([spec.name]):
        where = f"lm_eval's catalogue or {spec.include}" if spec.include else "lm_eval's catalogue (give include = a folder of task YAML)"
        raise QidlabError(f"[[tasks]] {spec.name!r}: no such lm-evaluation-harness task in {where}")
    return manager


def run_tasks(model, tokenizer, specs: Sequence[TaskSpec]) -> dict[str, dict[str, TaskScore]]:
    """Evaluate ``model`` (a transformers causal LM in memory, on its own device) on every task of
    ``specs``: ``{task: {metric: TaskScore}}``, subtasks of a group included. The model is put in
    eval mode and not changed otherwise."""
    require_lm_eval()
    out: dict[str, dict[str, TaskScore]] = {}
    for spec in specs:
        out.update(_run_one(model, tokenizer, spec))
    return out


def _run_one(model, tokenizer, spec: TaskSpec) -> dict[str, dict[str, TaskScore]]:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    model.eval()
    manager = _task_manager_of(spec)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size, device=device)
    with torch.no_grad():
        res = simple_evaluate(model=lm, tasks=[spec.name], task_manager=manager, num_fewshot=spec.num_fewshot,
                              limit=spec.limit, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False)
    return _scores(res, spec)


def _scores(res: dict, spec: TaskSpec) -> dict[str, dict[str, TaskScore]]:
    """``simple_evaluate``'s results as ``{task: {metric: TaskScore}}`` (stderr keys folded in)."""
    out: dict[str, dict[str, TaskScore]] = {}
    for task, row in res["results"].items():
        better = res.get("higher_is_better", {}).get(task, {})
        n_docs = res.get("n-samples", {}).get(task, {}).get("effective")
        scores = {}
        for key, value in row.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            if spec.metrics is not None and metric not in spec.metrics:
                continue
            err = row.get(f"{metric}_stderr,{filt}")
            scores[metric_name(key)] = TaskScore(float(value), float(err) if isinstance(err, (int, float)) else None,
                                                 better.get(metric), int(n_docs) if n_docs is not None else None)
        if scores:
            out[task] = scores
    if not out:
        raise QidlabError(f"task {spec.name!r} gave no metric" + (f" among {', '.join(spec.metrics)}"
                                                                   if spec.metrics else ""))
    return out
