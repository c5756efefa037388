"""Executors on several GPUs and on Slurm, tested on a CPU machine.

Ray: a local Ray that declares fake GPUs gives each checkpoint task one GPU id of its own
(CUDA_VISIBLE_DEVICES), at most as many at once as it has GPUs, from one long-lived process per
GPU; a CPU-only Ray gives none; a process that dies fails only its checkpoint.
Slurm: submitit's local executor runs each job as a subprocess of this machine through the same
submitit code path as on a cluster; each job measures into its own store, merged by the driver.
Untested here: a real Slurm cluster and real GPUs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_sweep import STUDY, _copy_study, suite  # noqa: F401  (the tiny suite fixture)

import qidlab.sweep.run as sweep_run
from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.store import Store, merge_stores, read_canonical
from qidlab.sweep import load_study, run_study
from qidlab.sweep.ray_executor import pool_size, run_on_ray, task_gpus
from qidlab.sweep.slurm_executor import SlurmExecutor, part_path, parts_folder

# -- Ray: one GPU per checkpoint task -----------------------------------------------------------


def test_a_task_asks_one_gpu_when_the_study_measures_on_cuda():
    assert task_gpus("auto", 2) == 1 and task_gpus("cuda", 8) == 1 and task_gpus("cuda:0", 1) == 1
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
               "resources": ray.get_runtime_context().get_assigned_resources(), "pid": os.getpid()}

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
    # one long-lived process per GPU measures its checkpoints in turn (its start paid once)
    assert len({s["pid"] for s in seen}) == 2 and {len({s["cuda"] for s in seen if s["pid"] == p})
                                                   for p in {s["pid"] for s in seen}} == {1}
    assert summary.measured == 10 and not summary.failed


def test_a_ray_worker_that_dies_fails_only_its_checkpoint():
    """A process killed mid-checkpoint (as for memory) fails that checkpoint; Ray starts the actor
    again and the checkpoints after it are measured."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)

    def measure(path, eval_sets, todo, study):
        if path == "ckpt1":
            os._exit(1)
        yield {"path": path, "pid": os.getpid()}

    plan = [(SimpleNamespace(path=Path(f"ckpt{i}")), []) for i in range(4)]
    got, failed = [], []
    try:
        for ref, stream in run_on_ray(measure, plan, [], SimpleNamespace(device="cpu")):
            try:
                got += list(stream)
            except ray.exceptions.RayActorError:
                failed.append(str(ref.path))
    finally:
        ray.shutdown()
    assert failed == ["ckpt1"] and [g["path"] for g in got] == ["ckpt0", "ckpt2", "ckpt3"]
    assert got[0]["pid"] != got[1]["pid"] == got[2]["pid"]  # one actor, restarted once


def test_the_pool_has_one_actor_per_gpu_or_cpu_and_no_more_than_checkpoints():
    assert pool_size(10, 1, {"GPU": 8.0, "CPU": 128.0}) == 8
    assert pool_size(3, 1, {"GPU": 8.0, "CPU": 128.0}) == 3
    assert pool_size(10, 0, {"CPU": 4.0}) == 4 and pool_size(10, 0, {}) == 1


def test_ray_asks_no_gpu_on_a_cpu_only_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        seen = _seen_by_tasks(2)
    finally:
        ray.shutdown()
    assert all("GPU" not in s["resources"] for s in seen)


# -- Slurm through submitit -----------------------------------------------------------------------

LOCAL = SlurmExecutor(cluster="local", gpus=0, poll_s=0.2)  # each job a subprocess of this machine


def test_slurm_jobs_measure_into_their_own_stores_merged_once(suite, tmp_path):  # noqa: F811
    pytest.importorskip("submitit")
    path = _copy_study(suite, tmp_path)
    summary = run_study(load_study(path), executor=LOCAL, progress=False)
    assert (summary.measured, summary.skipped, summary.failed) == (10, 0, [])
    store = tmp_path / "tiny.db"
    parts = sorted(parts_folder(store).glob("*/*.db"))
    assert [p.name for p in parts] == ["m64-step150.db", "m64-step50.db"]  # one store per job
    assert [len(read_canonical(p)) for p in parts] == [4, 4]
    with Store(store) as s:
        assert (s.count(), s.count("doc_losses"), s.count("checkpoints")) == (10, 120, 2)
        merged = json.loads(s.conn.execute("SELECT value FROM meta WHERE key = 'merged_from'").fetchone()[0])
    assert sorted(Path(m["store"]) for m in merged) == parts  # each part merged once, recorded
    # the same table as measured in this process
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    run_study(load_study(_copy_study(suite, local_dir)), progress=False)
    cols = ["tokens", "method", "bits", "qid"]
    a = read_canonical(store)[cols].sort_values(cols[:3]).reset_index(drop=True)
    b = read_canonical(local_dir / "tiny.db")[cols].sort_values(cols[:3]).reset_index(drop=True)
    assert (a.drop(columns="qid") == b.drop(columns="qid")).all().all()
    assert (a.qid - b.qid).abs().max() < 1e-3  # GPTQ's rounding depends on the thread count
    # rerun: nothing submitted, nothing added; merging the parts again adds nothing either
    logs = sorted((parts_folder(store) / "logs").iterdir())
    again = run_study(load_study(path), executor=LOCAL, progress=False)
    assert (again.measured, again.skipped, again.failed) == (0, 10, [])
    assert sorted((parts_folder(store) / "logs").iterdir()) == logs
    assert merge_stores(parts, store).total()["measurements"] == 0
    with Store(store) as s:
        assert s.count() == 10


def _crash_at_step_50(study, **kwargs):
    """run_study, except that the job of step 50 dies (as a killed or crashed job does)."""
    if study.steps == (50,):
        os._exit(3)
    return run_study(study, **kwargs)


def test_a_failed_slurm_job_is_reported_by_name_and_the_others_merge(suite, tmp_path, monkeypatch):  # noqa: F811
    pytest.importorskip("submitit")
    tests = str(Path(__file__).parent)  # the job unpickles _crash_at_step_50 from this module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(sweep_run, "run_study", _crash_at_step_50)  # what the driver sends to the jobs
    summary = run_study(load_study(_copy_study(suite, tmp_path)), executor=LOCAL, progress=False)
    assert summary.measured == 5 and len(summary.failed) == 1
    failure = summary.failed[0]
    assert failure.startswith("m64/step50: slurm job") and "ended without a result" in failure
    assert "_log.err)" in failure and "\n" not in failure
    assert set(read_canonical(tmp_path / "tiny.db").tokens) == {150 * 16 * 64}


def test_per_model_jobs_report_the_failures_inside_them(suite, tmp_path):  # noqa: F811
    """One job for the model's two checkpoints (submitit's debug executor: in this process);
    configurations that fail inside it are reported as a local sweep reports them."""
    pytest.importorskip("submitit")
    text = STUDY.replace("group_size = 32\n\n[[methods]]\nmethod = \"gptq\"",
                         "group_size = 48\n\n[[methods]]\nmethod = \"gptq\"")
    study = load_study(_copy_study(suite, tmp_path, text))
    summary = run_study(study, executor=SlurmExecutor(cluster="debug", gpus=0, per="model"), progress=False)
    assert summary.measured == 6 and len(summary.failed) == 4
    assert all(f.startswith("m64/step") and "48" in f for f in summary.failed)
    ref = SimpleNamespace(suite="suite", model="m64", step=50)
    assert [p.name for p in parts_folder(study.store).glob("*/*.db")] == ["m64.db"]
    assert part_path(parts_folder(study.store), ref, "model").exists()


def test_a_part_left_by_an_earlier_driver_is_merged_not_measured_again(suite, tmp_path):  # noqa: F811
    """The jobs of a stopped driver measured step 50 into its part; the next sweep's job for it
    finds its part done (measures nothing) and the merge brings its rows into the store."""
    pytest.importorskip("submitit")
    from qidlab.sweep.slurm_executor import narrowed

    study = load_study(_copy_study(suite, tmp_path))
    ref = next(r for r in sweep_run.discover(study.checkpoint_root) if r.step == 50)
    part = part_path(parts_folder(study.store), ref)
    part.parent.mkdir(parents=True)
    run_study(narrowed(study, ref, list(study.methods), part), progress=False)  # what that job did
    summary = run_study(study, executor=SlurmExecutor(cluster="debug", gpus=0), progress=False)
    assert (summary.measured, summary.failed) == (5, [])  # step 150's, as its job returned them
    with Store(study.store) as s:
        assert (s.count(), s.count("checkpoints")) == (10, 2)


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from qidlab.sweep.slurm_executor import _executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake), os.environ["PATH"]]))
    options = SlurmExecutor(partition="gpu", time_min=30, gpus=2, params={"account": "abc"})
    script = _executor(submitit, options, tmp_path / "s.db.parts")._executor._make_submission_file_text("cmd", "u")
    for line in ("--partition=gpu", "--time=30", "--gpus-per-node=2", "--account=abc",
                 f"--output={tmp_path}/s.db.parts/logs/"):
        assert f"#SBATCH {line}" in script
    with pytest.raises(QidlabError, match="Unknown argument 'acount'"):
        _executor(submitit, SlurmExecutor(params={"acount": "abc"}), tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(QidlabError, match="no Slurm cluster here"):
        _executor(submitit, SlurmExecutor(), tmp_path)


def test_a_job_error_is_one_line_naming_what_ended_it():
    from qidlab.sweep.slurm_executor import _job_error

    job = SimpleNamespace(job_id="7", paths=SimpleNamespace(stderr=Path("logs/7_0_log.err")))
    raised = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent "
              "call last):\n  File \"x.py\", line 2, in f\ntorch.OutOfMemoryError: CUDA out of memory\n\n---"
              "-------------------\nYou can check full logs with 'job.stderr(0)'")  # submitit's words
    assert _job_error(RuntimeError(raised), job) == \
        "slurm job 7 failed: torch.OutOfMemoryError: CUDA out of memory (log: logs/7_0_log.err)"
    timeout = "Job 7 (task: 0) with path logs/7_0_result.pkl\nhas not produced any output (state: TIMEOUT)\n"
    assert _job_error(RuntimeError(timeout), job) == \
        "slurm job 7 failed: ended without a result (state: TIMEOUT) (log: logs/7_0_log.err)"


def test_slurm_options_are_checked():
    with pytest.raises(QidlabError, match="per checkpoint or per model"):
        SlurmExecutor(per="node")
    with pytest.raises(QidlabError, match="time limit"):
        SlurmExecutor(time_min=0)
    with pytest.raises(QidlabError, match="GPUs per slurm job"):
        SlurmExecutor(gpus=-1)


def test_sweep_command_runs_slurm_jobs(suite, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("submitit")
    path = _copy_study(suite, tmp_path)
    argv = ["sweep", str(path), "--executor", "slurm", "--slurm-cluster", "debug", "--slurm-gpus", "0",
            "--slurm-per", "model", "--slurm-time", "5", "--slurm-folder", str(tmp_path / "logs"), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["measured"], doc["skipped"], doc["failed"]) == (10, 0, [])
    assert "[10/10] m64/step" in captured.err  # progress lines, as with the other executors
    assert [p.name for p in parts_folder(tmp_path / "tiny.db").glob("*/*.db")] == ["m64.db"]
    assert any((tmp_path / "logs").iterdir())


@pytest.mark.parametrize("executor, module, words", [("slurm", "submitit", "--executor slurm needs submitit"),
                                                     ("ray", "ray", "--executor ray needs Ray")])
def test_a_missing_executor_library_is_one_error_line(suite, tmp_path, monkeypatch, capsys,  # noqa: F811
                                                      executor, module, words):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when it is not installed
    path = _copy_study(suite, tmp_path)
    assert main(["sweep", str(path), "--executor", executor, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qidlab: error: {words}") and err.count("\n") == 1


def test_slurm_flags_need_the_slurm_executor(suite, tmp_path, capsys):  # noqa: F811
    path = _copy_study(suite, tmp_path)
    assert main(["sweep", str(path), "--slurm-partition", "gpu", "--quiet"]) == 2
    assert "--slurm-partition: only with --executor slurm" in capsys.readouterr().err
    assert main(["sweep", str(path), "--executor", "slurm", "--slurm-param", "account"]) == 2
    assert "expects KEY=VALUE" in capsys.readouterr().err
