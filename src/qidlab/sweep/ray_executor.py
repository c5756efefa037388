"""The Ray executor: checkpoints measured by a pool of long-lived Ray actors, one per GPU (or per
CPU on a cluster without GPUs); results return to the driver, which writes them to the store
(workers never touch the SQLite file).

On a cluster with GPUs each actor asks Ray for one GPU (``task_gpus``), so a node with k GPUs
measures k checkpoints at once and Ray gives each actor's process its own GPU through
``CUDA_VISIBLE_DEVICES`` for its whole life. An actor measures one checkpoint after another, so
a process's start (importing torch and transformers, starting CUDA) is paid once per GPU, not
once per checkpoint: with a fresh process per checkpoint that cost ~16 s of a 1B checkpoint's
63 s on an H200 (docs/performance.md). An actor whose process dies (killed for memory, say)
fails the checkpoint it held; Ray starts it again for the next one."""

from __future__ import annotations

from ..errors import QidlabError


class _Measurer:
    """A Ray actor: ``measure`` (``run.measure_checkpoint``) run on one checkpoint per call, in the
    same process each time."""

    def measure(self, measure, path, eval_sets, todo, study):
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
    """Yield (ref, results) per checkpoint as Ray actors finish them; an actor runs ``measure(path,
    eval_sets, todo, study)`` (``run.measure_checkpoint``, sent by reference) with one GPU of its own
    when the study measures on CUDA (``task_gpus``); ``pool_size`` actors, each taking the next
    checkpoint as soon as it hands one back. ``address``: an existing cluster ("auto" or
    "ray://host:port"); None starts a local Ray."""
    try:
        import ray
    except ImportError:
        raise QidlabError("`executor` ray needs Ray: pip install -c constraints.txt 'ray[default]'",
                          params=("executor",)) from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = task_gpus(study.device, resources.get("GPU", 0))
    actor = ray.remote(num_gpus=gpus, num_cpus=1, max_restarts=-1, max_task_retries=0)(_Measurer)
    queue = list(reversed(plan))  # popped from the end: the plan's order
    eval_ref, study_ref = ray.put(eval_sets), ray.put(study)  # in the object store once, not sent per call
    running = {}

    def give(worker) -> None:
        ref, todo = queue.pop()
        running[worker.measure.remote(measure, _location(ref), eval_ref, todo, study_ref)] = (ref, worker)

    workers = [actor.remote() for _ in range(pool_size(len(plan), gpus, resources))]
    try:
        for worker in workers:
            give(worker)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            ref, worker = running.pop(done[0])
            if queue:  # before the driver writes this one's results: the GPU does not wait for the store
                give(worker)
            yield ref, _results(ray, done[0])
    finally:  # the GPUs go back to the cluster when the sweep ends or stops
        for worker in workers:
            ray.kill(worker)


def pool_size(n_checkpoints: int, gpus: int, resources: dict) -> int:
    """Actors to start: one per GPU of the cluster when each asks one (``gpus``), else one per CPU;
    never more than the checkpoints, never fewer than 1."""
    slots = resources.get("GPU", 0) if gpus else resources.get("CPU", 1)
    return max(1, min(n_checkpoints, int(slots)))


def _results(ray, future):
    items = ray.get(future)  # a task that raised re-raises here, inside the driver's per-checkpoint guard
    yield from items


def _location(ref) -> str:
    """What ``measure`` is given: a ``CheckpointRef``'s location (a folder or ``hf://REPO@REVISION``);
    anything else with a ``path``, that path."""
    return getattr(ref, "location", None) or str(ref.path)
