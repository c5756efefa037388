"""The Ray executor: one Ray task per checkpoint; results return to the driver, which writes
them to the store (workers never touch the SQLite file).

On a cluster with GPUs each task asks Ray for one GPU (``task_gpus``), so a node with k GPUs
measures k checkpoints at once and Ray gives each task's process its own GPU through
``CUDA_VISIBLE_DEVICES``; on a CPU-only cluster tasks ask for none, as before."""

from __future__ import annotations

from ..errors import QidlabError


def _collect(measure, path, eval_sets, todo, study):
    return list(measure(path, eval_sets, todo, study))


def task_gpus(device: str, cluster_gpus: float) -> int:
    """GPUs one checkpoint task asks of Ray: 1 when the study's ``device`` resolves to CUDA on a
    cluster holding ``cluster_gpus`` GPUs (``ray.cluster_resources()["GPU"]``, all nodes), else 0.

    Decided from the cluster, not from the driver's torch: the driver may run where no GPU is.
    "auto" means CUDA when the cluster has a GPU; "cuda" (or "cuda:0": a task sees the GPU Ray
    gave it as cuda:0) on a cluster without one is an error, and so is "cuda:N" for N > 0."""
    if device == "cpu":
        return 0
    if device == "auto":
        return 1 if cluster_gpus >= 1 else 0
    if device not in ("cuda", "cuda:0"):
        raise QidlabError(f"study device {device!r} names one GPU; on Ray each checkpoint task is given a GPU "
                          "of its own: use device 'cuda' or 'auto'")
    if cluster_gpus < 1:
        raise QidlabError(f"study device is {device!r} but the Ray cluster has no GPU")
    return 1


def run_on_ray(measure, plan, eval_sets, study, address=None):
    """Yield (ref, results) per checkpoint as Ray tasks finish; a task runs ``measure(path,
    eval_sets, todo, study)`` (``run.measure_checkpoint``, sent by reference) with one GPU of
    its own when the study measures on CUDA (``task_gpus``). ``address``: an existing cluster
    ("auto" or "ray://host:port"); None starts a local Ray."""
    try:
        import ray
    except ImportError:
        raise QidlabError("`executor` ray needs Ray: pip install -c constraints.txt 'ray[default]'",
                          params=("executor",)) from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    gpus = task_gpus(study.device, ray.cluster_resources().get("GPU", 0))
    task = ray.remote(num_gpus=gpus)(_collect)
    futures = {task.remote(measure, _location(ref), eval_sets, todo, study): ref for ref, todo in plan}
    pending = list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for future in done:
            yield futures[future], _results(ray, future)


def _results(ray, future):
    items = ray.get(future)  # a task that raised re-raises here, inside the driver's per-checkpoint guard
    yield from items


def _location(ref) -> str:
    """What ``measure`` is given: a ``CheckpointRef``'s location (a folder or ``hf://REPO@REVISION``);
    anything else with a ``path``, that path."""
    return getattr(ref, "location", None) or str(ref.path)
