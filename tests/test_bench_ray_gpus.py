"""bench/ray_gpus.py (issue 20) in its --tiny mode: a real `qidlab sweep --executor ray` (Ray started
locally, CPU tasks) over hard-linked step folders, every measurement in the store once; the GPU-use
summary from nvidia-smi's process list and the scaling efficiency from the runs. Nothing is timed
against a limit. Untested here: real GPUs (docs/performance.md has the H200 runs)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ray")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ray_gpus  # noqa: E402


def test_tiny_ray_sweep_stores_each_measurement_once(tmp_path, capsys):
    out, work = tmp_path / "bench.json", tmp_path / "work"
    ray_gpus.main(["--tiny", "--work", str(work), "--out", str(out)])
    data = json.loads(out.read_text())
    [run] = data["runs"]
    assert run["returncode"] == 0 and run["executor"] == "ray" and run["gpus"] == 1 and run["checkpoints"] == 2
    assert run["sweep"]["measured"] == 2 * 4 and run["sweep"]["failed"] == []  # 16-bit + GPTQ 2/3/4 per checkpoint
    assert run["store"] == {"measurements": 8, "expected": 8, "checkpoints": 2, "each_once": True}
    assert run["checkpoints_per_hour"] == pytest.approx(2 / run["wall_s"] * 3600, rel=0.01)
    steps = sorted(work.glob("suite/pythia-tiny/step*"))
    assert [p.name for p in steps] == ["step1000", "step2000"]
    weights = [next(p.glob("*.safetensors")) for p in steps]
    assert os.path.samefile(*weights)  # hard links: one file on disk
    assert [json.loads((p / "qidlab.json").read_text())["tokens"] for p in steps] == [1000 * 2_097_152, 2000 * 2_097_152]
    if shutil.which("nvidia-smi") is None:
        assert run["gpu_use"]["one_gpu_per_process"] is None  # nothing seen, nothing claimed
    assert data["scaling"] == {} and "| 1 | 2 |" in capsys.readouterr().out


def _watch_with(samples: list[str], monkeypatch) -> ray_gpus.GpuWatch:
    """A GpuWatch fed ``samples`` as nvidia-smi's successive answers (pid, gpu uuid lines)."""
    answers = iter(samples)
    monkeypatch.setattr(ray_gpus.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=next(answers)))
    watch = ray_gpus.GpuWatch(0.1)
    watch.available = True
    for _ in samples:
        watch.sample()
    return watch


def test_gpu_watch_counts_processes_per_gpu_and_leaves_itself_out(monkeypatch):
    me = os.getpid()
    ok = _watch_with([f"{me}, GPU-a\n11, GPU-a\n12, GPU-b\n", "13, GPU-a\n12, GPU-b\n"], monkeypatch)
    assert ok.summary(2) == {"processes": 3, "one_gpu_per_process": True, "gpus_used": 2, "gpus_expected": 2,
                             "most_processes_on_a_gpu": 1}
    shared = _watch_with(["11, GPU-a\n12, GPU-a\n"], monkeypatch).summary(2)
    assert shared["most_processes_on_a_gpu"] == 2 and shared["gpus_used"] == 1
    assert _watch_with(["11, GPU-a\n11, GPU-b\n"], monkeypatch).summary(2)["one_gpu_per_process"] is False
    assert _watch_with([""], monkeypatch).summary(1)["one_gpu_per_process"] is None


def test_scaling_efficiency_is_each_rate_over_k_times_one_gpus():
    runs = [{"gpus": 1, "returncode": 0, "checkpoints_per_hour": 50.0},
            {"gpus": 4, "returncode": 0, "checkpoints_per_hour": 180.0},
            {"gpus": 8, "returncode": 1, "checkpoints_per_hour": 999.0}]
    assert ray_gpus.scaling(runs) == {"4": 0.9}
    assert ray_gpus.scaling(runs[1:]) is None


@pytest.mark.parametrize("argv, says", [(["--tiny", "--gpus", "2"], "GPU(s) visible"),
                                        (["--tiny", "--work", str(Path(__file__).parent)], "not empty"),
                                        (["--tiny", "--executor", "local", "--gpus", "1,1"], "--executor local"),
                                        (["--size", "7b", "--tiny"], "choose from")])
def test_bad_arguments_exit_2_naming_the_problem(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        ray_gpus.parse_args(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err
