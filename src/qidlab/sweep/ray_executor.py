"""The Ray executor: one Ray task per checkpoint; results return to the driver, which writes
them to the store (workers never touch the SQLite file)."""

from __future__ import annotations

from ..errors import QidlabError


def _collect(measure, path, eval_sets, todo, study):
    return list(measure(path, eval_sets, todo, study))


def run_on_ray(measure, plan, eval_sets, study, address=None):
    """Yield (ref, results) per checkpoint as Ray tasks finish; a task runs ``measure(path,
    eval_sets, todo, study)`` (``run.measure_checkpoint``, sent by reference). ``address``: an
    existing cluster ("auto" or "ray://host:port"); None starts a local Ray."""
    try:
        import ray
    except ImportError:
        raise QidlabError("`executor` ray needs Ray: pip install -c constraints.txt 'ray[default]'",
                          params=("executor",)) from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    task = ray.remote(_collect)
    futures = {task.remote(measure, str(ref.path), eval_sets, todo, study): ref for ref, todo in plan}
    pending = list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for future in done:
            yield futures[future], _results(ray, future)


def _results(ray, future):
    items = ray.get(future)  # a task that raised re-raises here, inside the driver's per-checkpoint guard
    yield from items
