"""bench/pythia_shapes.py in its --tiny mode (CPU, seconds): every stage of every size is in the
JSON; the study estimate scales unmeasured sizes. Nothing is timed against a limit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import pythia_shapes  # noqa: E402


def test_tiny_run_writes_every_stage(tmp_path, capsys):
    out = tmp_path / "bench.json"
    pythia_shapes.main(["--tiny", "--load", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [r["size"] for r in data["sizes"]] == ["tiny"]
    for row in data["sizes"]:
        assert "error" not in row, row.get("error")
        assert set(row["stages"]) == set(pythia_shapes.STAGES)
        for stage in row["stages"].values():
            assert stage["seconds"] >= 0 and stage["peak_gib"] > 0
        assert set(row["per_bits"]) == {"2", "3", "4"} and row["fallback"] == {}
        assert row["seconds_per_checkpoint"] == pytest.approx(sum(s["seconds"] for s in row["stages"].values()))
    assert data["study_estimate"] is None  # no Pythia size measured
    assert "| tiny |" in capsys.readouterr().out


def test_study_estimate_scales_unmeasured_sizes():
    rows = [{"size": "1b", "seconds_per_checkpoint": 60.0}, {"size": "6.9b", "seconds_per_checkpoint": 120.0},
            {"size": "12b", "error": "OutOfMemoryError"}]
    est = pythia_shapes.study_estimate(rows)
    sizes = est["sizes"]
    assert list(sizes) == list(pythia_shapes.PAPER_SIZES)
    assert sizes["1b"] == {"seconds_per_checkpoint": 60.0, "from": "measured"}
    assert sizes["12b"]["from"] == "scaled from 6.9b" and sizes["160m"]["from"] == "scaled from 1b"
    n = pythia_shapes.nonembedding_params
    assert sizes["12b"]["seconds_per_checkpoint"] == pytest.approx(120.0 * n("12b") / n("6.9b"))
    total = sum(v["seconds_per_checkpoint"] for v in sizes.values())
    assert est["gpu_hours"] == pytest.approx(total * 20 / 3600)
