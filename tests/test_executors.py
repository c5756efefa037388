"""Executors on several GPUs, tested on a CPU machine.

Ray: a local Ray that declares fake GPUs gives each checkpoint task one GPU id of its own
(CUDA_VISIBLE_DEVICES), at most as many at once as it has GPUs; a CPU-only Ray gives none.
Untested here: real GPUs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_sweep import _copy_study, suite  # noqa: F401  (the tiny suite fixture)

from qidlab.errors import QidlabError
from qidlab.sweep import load_study, run_study
from qidlab.sweep.ray_executor import run_on_ray, task_gpus

# -- Ray: one GPU per checkpoint task -----------------------------------------------------------


def test_a_task_asks_one_gpu_when_the_study_measures_on_cuda():
    assert task_gpus("auto", 2) == 1 and task_gpus("cuda", 8) == 1
    assert task_gpus("auto", 0) == 0 and task_gpus("cpu", 8) == 0
    with pytest.raises(QidlabError, match="no GPU"):
        task_gpus("cuda", 0)
    with pytest.raises(QidlabError, match="'cuda' or 'auto'"):
        task_gpus("cuda:1", 4)


def _seen_by_tasks(n: int, device: str = "auto") -> list[dict]:
    """Run ``n`` fake checkpoint tasks through ``run_on_ray``; what each task saw."""
    import ray

    def measure(path, eval_sets, todo, study):  # stands in for measure_checkpoint (pickled by value)
        start = time.time()
        time.sleep(1.0)
        yield {"path": path, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
               "resources": ray.get_runtime_context().get_assigned_resources()}

    plan = [(SimpleNamespace(path=Path(f"ckpt{i}")), []) for i in range(n)]
    return [item for _, stream in run_on_ray(measure, plan, [], SimpleNamespace(device=device)) for item in stream]


def _most_at_once(seen: list[dict]) -> int:
    return max(sum(s["start"] <= t["start"] < s["end"] for s in seen) for t in seen)


def test_ray_gives_each_checkpoint_task_one_gpu_of_its_own(suite, tmp_path):  # noqa: F811
    ray = pytest.importorskip("ray")
    ray.init(num_gpus=2, num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        seen = _seen_by_tasks(4)
        # and a real sweep under GPU scheduling (CPU torch: each task falls back to the CPU)
        summary = run_study(load_study(_copy_study(suite, tmp_path)), executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert sorted(s["path"] for s in seen) == [f"ckpt{i}" for i in range(4)]
    assert all(s["cuda"] in ("0", "1") for s in seen), [s["cuda"] for s in seen]  # exactly one id each
    assert {s["cuda"] for s in seen} == {"0", "1"}
    assert all(s["resources"].get("GPU") == 1 for s in seen)
    assert _most_at_once(seen) <= 2, "4 CPUs but 2 GPUs: at most 2 tasks at once"
    assert summary.measured == 10 and not summary.failed


def test_ray_asks_no_gpu_on_a_cpu_only_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        seen = _seen_by_tasks(2)
    finally:
        ray.shutdown()
    assert all("GPU" not in s["resources"] for s in seen)
