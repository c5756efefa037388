"""The Slurm executor, through submitit: one job per checkpoint (or per model), each measuring into
a store of its own, merged into the study's store by the driver.

A job runs the ordinary sweep (``run_study``, sent by reference) on the study narrowed to its
checkpoint and the configurations the study's store lacks, into its part store
``STORE.parts/<suite>/<model>-step<N>.db`` (per model: ``<model>.db``), and returns what it
measured. Jobs never open the study's store. As each job ends, the driver writes the results it
returned into the study's store (counted and shown like those of the other executors; the rows
carry the driver's versions, as with Ray) and then merges the job's part store into it with
``qidlab.store.merge_stores``, which records the part (``merged_from``, the device that
measured) and adds whatever the part holds that the driver did not receive: what a failed job
measured before it failed, or what the jobs of an earlier, stopped driver measured. Merging is
idempotent, so a part merged twice adds nothing, and ``qidlab store merge STORE.parts/*/*.db
--out STORE`` by hand does the same. A job that fails (an exception, a crash, a time limit) is
reported under its checkpoints' names and the other jobs still merge; a job submitted again for
a checkpoint resumes from its part store instead of measuring again. A driver that stops early
cancels the jobs still queued or running.

Tested (tests/test_executors.py) with submitit's local executor, which runs each job as a
subprocess of the test machine through the same submitit code path (the job pickled to a
folder, run, its result or failure read back from there). Untested here: a real Slurm cluster
(sbatch job arrays, partitions, GPUs requested with ``--gpus-per-node``, time limits enforced
by Slurm, preemption, a file system shared by the driver and the nodes).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import QidlabError
from ..store import merge_stores

PER = ("checkpoint", "model")
CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class SlurmExecutor:
    """Its options say how jobs are submitted; ``run_study(study, executor=SlurmExecutor(...))``
    calls it with the sweep's plan.

    ``partition``: the Slurm partition (None: the cluster's default). ``time_min``: wall-clock
    limit of one job, minutes. ``gpus``: GPUs per job (``--gpus-per-node``; 0 for CPU jobs).
    ``folder``: submitit's job files and logs (None: ``STORE.parts/logs``). ``per``: one job per
    "checkpoint" or per "model" (its checkpoints one after the other, into one part store).
    ``cluster``: "slurm", or "local" (each job a subprocess of this machine, all at once) or
    "debug" (in this process; a failing job opens the debugger) to try a study out. ``cpus``,
    ``mem_gb``: per job, GiB (None: the cluster's default). ``params``: other submitit Slurm
    parameters, without the ``slurm_`` prefix (account, qos, constraint, array_parallelism, ...).
    ``poll_s``: seconds between looks at the jobs' states (None: 30 on Slurm, 0.5 otherwise)."""

    partition: str | None = None
    time_min: int = 120
    gpus: int = 1
    folder: str | Path | None = None
    per: str = "checkpoint"
    cluster: str = "slurm"
    cpus: int | None = None
    mem_gb: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    poll_s: float | None = None

    def __post_init__(self):
        if self.per not in PER:
            raise QidlabError(f"slurm jobs are one per {' or per '.join(PER)}, not per {self.per!r}")
        if self.cluster not in CLUSTERS:
            raise QidlabError(f"slurm cluster must be one of {', '.join(CLUSTERS)}, not {self.cluster!r}")
        if not (isinstance(self.time_min, int) and self.time_min > 0):
            raise QidlabError(f"a slurm job's time limit must be a positive number of minutes, not {self.time_min!r}")
        if not (isinstance(self.gpus, int) and self.gpus >= 0):
            raise QidlabError(f"GPUs per slurm job must be a whole number >= 0, not {self.gpus!r}")

    def __call__(self, plan: list, eval_sets: list, study, *, measure: Callable, sweep: Callable) -> Iterator:
        """(ref, stream of results) per checkpoint of ``plan`` as its job ends; ``sweep`` is
        ``run_study``, which the jobs run (``measure``, ``measure_checkpoint``, they find there)."""
        return run_on_slurm(self, plan, study, sweep)


def parts_folder(store: str | Path) -> Path:
    """Where the jobs of a sweep into ``store`` keep their own stores: ``STORE.parts/``."""
    return Path(f"{Path(store).absolute()}.parts")


def part_path(parts: Path, ref, per: str = "checkpoint") -> Path:
    """The store a job measuring checkpoint ``ref`` writes: ``parts/<suite>/<model>-step<N>.db``,
    or ``parts/<suite>/<model>.db`` with one job per model."""
    name = ref.model if per == "model" else f"{ref.model}-step{ref.step}"
    return parts / _safe(ref.suite) / f"{_safe(name)}.db"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) or "_"


def narrowed(study, ref, todo: list, part: Path):
    """``study`` narrowed to checkpoint ``ref`` and the configurations ``todo``, into ``part``.
    (The sweep adds the 16-bit reference itself.)"""
    methods = tuple(c for c in todo if c.rounds_weights)
    root = None if getattr(ref, "repo", None) else ref.path.parent.parent  # a Hub checkpoint: the study's repos
    return dataclasses.replace(study, store=part, checkpoint_root=root, models=(ref.model,),
                               steps=(ref.step,), methods=methods)


# -- in the job ---------------------------------------------------------------------------------


@dataclass
class Failure:
    """What stopped a checkpoint in a job (the text the driver reports under its name)."""

    text: str


def _key(ref) -> tuple:
    return (ref.suite, ref.model, ref.step)


class Recorder:
    """The executor of the sweep inside a job: measures in the job's process, as "local" does,
    and keeps what each checkpoint yields (and what stopped it) to return to the driver."""

    def __init__(self):
        self.kept: dict[tuple, list] = {}

    def __call__(self, plan: list, eval_sets: list, study, *, measure: Callable, sweep: Callable) -> list:
        return [(ref, self._tee(ref, measure(ref.location, eval_sets, todo, study))) for ref, todo in plan]

    def _tee(self, ref, stream) -> Iterator:
        kept = self.kept.setdefault(_key(ref), [])
        try:
            for item in stream:
                kept.append(item)
                yield item
        except Exception as exc:  # the sweep reports it in the part's run; the driver, under the name
            kept.append(Failure(str(exc) if isinstance(exc, QidlabError) else f"{type(exc).__name__}: {exc}"))
            raise


def measure_part(sweep: Callable, jobs: list[tuple[tuple, Any]]) -> dict[tuple, list]:
    """The job: sweep each narrowed study into its part store (``sweep`` is ``run_study``);
    return each checkpoint's results, keyed by (suite, model, step) as ``jobs`` pairs them."""
    recorder = Recorder()
    for key, study in jobs:
        try:
            sweep(study, executor=recorder, progress=True)  # progress lines go to the job's log
        except QidlabError as exc:  # e.g. the checkpoint is gone: report it, go on with the model's others
            recorder.kept.setdefault(key, []).append(Failure(str(exc)))
    return recorder.kept


# -- in the driver ------------------------------------------------------------------------------


def run_on_slurm(options: SlurmExecutor, plan: list, study, sweep: Callable) -> Iterator:
    """Submit one job per checkpoint of ``plan`` (or per model); yield (ref, stream) per
    checkpoint as its job ends: the job's results for the configurations of ``plan``, then,
    after the job's last checkpoint, its part store merged into ``study.store``. A failed job's
    streams raise its error when read, so the driver reports each of its checkpoints by name."""
    if not plan:
        return
    submitit = _import_submitit()
    parts = parts_folder(study.store)
    groups = _groups(plan, study, options, parts)
    executor = _executor(submitit, options, parts)
    with executor.batch():
        jobs = [executor.submit(measure_part, sweep, studies) for _, _, studies in groups]
    pending = {id(job): group for job, group in zip(jobs, groups)}
    poll = options.poll_s if options.poll_s is not None else (30.0 if options.cluster == "slurm" else 0.5)
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
            part, items, _ = pending.pop(id(job))
            yield from _job_streams(job, part, items, study.store)
    finally:
        for job in jobs:  # the driver stopped early: its jobs would measure for nobody
            if id(job) in pending and not job.done():
                job.cancel(check=False)


def _import_submitit():
    try:
        import submitit
        import submitit.helpers
    except ImportError:
        raise QidlabError("`executor` slurm needs submitit: pip install -c constraints.txt submitit",
                          params=("executor",)) from None
    return submitit


def _groups(plan: list, study, options: SlurmExecutor, parts: Path) -> list[tuple[Path, list, list]]:
    """(part store, its (ref, todo) pairs, (key, narrowed study) pairs) per job, in the plan's order."""
    groups: dict[Path, tuple[Path, list, list]] = {}
    for ref, todo in plan:
        part = part_path(parts, ref, options.per)
        _, items, studies = groups.setdefault(part, (part, [], []))
        items.append((ref, todo))
        studies.append((_key(ref), narrowed(study, ref, todo, part)))
    for part in groups:
        part.parent.mkdir(parents=True, exist_ok=True)
    return list(groups.values())


def _executor(submitit, options: SlurmExecutor, parts: Path):
    folder = Path(options.folder) if options.folder is not None else parts / "logs"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    except RuntimeError as exc:  # no srun on this machine
        raise QidlabError(f"no Slurm cluster here ({exc}); cluster 'local' runs the jobs on this machine") from None
    params = {"timeout_min": options.time_min, "gpus_per_node": options.gpus, "cpus_per_task": options.cpus,
              "mem_gb": options.mem_gb, "name": "qidlab-sweep", "slurm_partition": options.partition,
              **{f"slurm_{k}": v for k, v in options.params.items()}}
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError) as exc:  # submitit's words for an unknown or mistyped parameter
        raise QidlabError(f"slurm parameters: {str(exc).splitlines()[0]}") from None
    return executor


def _job_streams(job, part: Path, items: list, dest: Path) -> Iterator:
    """(ref, stream) per checkpoint of a finished job; the last one merges the part."""
    try:
        kept, error = job.result(), None
    except Exception as exc:  # a failed job is reported under its checkpoints; the others go on
        kept, error = {}, _job_error(exc, job)
    for i, (ref, todo) in enumerate(items):
        results = kept.get(_key(ref), [])
        merge = (part, dest) if i == len(items) - 1 else None
        yield ref, _stream(results, todo, error, merge)


def _stream(results: list, todo: list, error: str | None, merge: tuple | None) -> Iterator:
    """A checkpoint's results for the driver to write (those of ``todo``: the job also measured
    the 16-bit reference when only its part lacked it), then the part merged when ``merge`` is
    (part, store); raises what went wrong, after merging what did not."""
    problems = [error] if error else []
    for item in results:
        if isinstance(item, Failure):
            problems.append(item.text)
            break
        if not hasattr(item, "config") or item.config in todo:
            yield item
    if merge is not None:
        problems += _merge(*merge)
    if problems:
        raise QidlabError("; ".join(problems))


def _merge(part: Path, dest: Path) -> list[str]:
    """Merge a job's part store into ``dest``; the problems met (conflicting rows keep the store's)."""
    if not part.exists():
        return []
    try:
        merged = merge_stores([part], dest, on_conflict="skip").sources[0]
    except QidlabError as exc:
        return [str(exc)]
    return [f"{part}: kept the store's row, not the job's: {c}" for c in merged.conflicts]


def _job_error(exc: Exception, job) -> str:
    """One line: what ended the job (the exception it raised, or the state it ended in without a
    result: killed, out of memory, over its time limit) and where its log is."""
    if isinstance(exc, QidlabError):
        return str(exc)
    text = str(exc)
    raised = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$", text, re.MULTILINE)
    state = re.search(r"\(state: ([^)]+)\)", text)
    lines = text.strip().splitlines()
    what = (raised[-1] if raised else f"ended without a result (state: {state.group(1)})" if state
            else lines[0] if lines else type(exc).__name__)
    log = getattr(getattr(job, "paths", None), "stderr", None)
    return f"slurm job {job.job_id} failed: {what}" + (f" (log: {log})" if log else "")
