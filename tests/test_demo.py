"""`qidlab demo` end to end at its smoke scale: every stage runs, the store fills with the planned
measurements, the fits come back, and a second run reuses everything."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from qidlab.demo import SMOKE, run_demo, study_toml, suite_toml, sweep_steps  # noqa: E402
from qidlab.store import read_canonical  # noqa: E402
from qidlab.sweep.study import load_study  # noqa: E402
from qidlab.train.config import load_suite_config  # noqa: E402


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines = []
    summary = run_demo(out, scale=SMOKE, threads=1, report=False, log=lines.append)
    return out, summary, lines


def test_written_suite_and_study_files_are_valid(demo_run):
    out, _, _ = demo_run
    suite = load_suite_config(out / "work" / "suite.toml")
    assert [m.name for m in suite.models] == [m[0] for m in SMOKE.models]
    assert (out / "work" / "suite.toml").read_text() == suite_toml(SMOKE)
    study = load_study(out / "work" / "study.toml")
    assert study.steps == tuple(sweep_steps(SMOKE)) and all(s >= SMOKE.sweep_from for s in study.steps)
    assert {e.name for e in study.eval_sets} >= {"stdlib-heldout"}
    assert {(m["method"], m["bits"]) for m in study.methods} == {(m, b) for m in ("rtn", "gptq") for b in SMOKE.bits}


def test_every_planned_measurement_is_stored(demo_run):
    out, summary, lines = demo_run
    table = read_canonical(summary["store"])
    n_evals = table.eval_set.nunique()
    planned = len(SMOKE.models) * len(sweep_steps(SMOKE)) * 2 * len(SMOKE.bits) * n_evals
    assert len(table) == planned == summary["measurements"]
    assert set(table.method) == {"rtn", "gptq"} and set(table.bits) == set(map(float, SMOKE.bits))
    assert summary["sweep"]["measured_now"] > 0
    assert json.loads((out / "summary.json").read_text())["measurements"] == planned
    assert any(line.startswith("==> 5/6") for line in lines)


def test_fits_per_method_with_cis_next_to_the_paper(demo_run):
    _, summary, lines = demo_run
    assert {f["group"]["method"] for f in summary["fits"]} == {"rtn", "gptq"}
    for fit in summary["fits"]:
        assert set(fit["params"]) == {"k", "beta", "alpha", "gamma"}
        assert "ci95" in fit and fit["n"] + fit["n_nonpositive"] > 0
    text = "\n".join(lines)
    assert "paper 0.5251" in text and "paper 5.4967" in text


def test_second_run_reuses_everything(demo_run):
    out, first, _ = demo_run
    lines = []
    again = run_demo(out, scale=SMOKE, threads=1, report=False, log=lines.append)
    assert again["sweep"]["measured_now"] == 0
    assert again["sweep"]["already_stored"] == first["sweep"]["measured_now"] + first["sweep"]["already_stored"]
    assert again["measurements"] == first["measurements"]
    assert not any("step 8/8" in line for line in lines)  # nothing retrained
