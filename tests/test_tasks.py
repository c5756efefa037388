"""Downstream tasks: a study's [[tasks]] through lm-evaluation-harness on the models in memory,
the task_results table (schema 3, migrated from 2) and `qidlab fit --target task:NAME:METRIC`.

The lm_eval tests run a custom multiple-choice task over a local JSONL file (``dataset_path:
json``), offline; they skip when lm_eval or its Hugging Face backend (accelerate) is missing."""

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny_checkpoint, tiny_corpus

from qidlab.cli import main
from qidlab.data import load_task_target
from qidlab.errors import QidlabError
from qidlab.store import Store, TaskMeasurement, read_task_table
from qidlab.store.db import SCHEMA_VERSION, check_store

TASK_YAML = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

LL_YAML = """task: toy_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""

STUDY = """
[study]
name = "tasks"
store = "tasks.db"
device = "cpu"

[checkpoints]
root = "{root}"

[[eval_sets]]
name = "heldout"
source = "{eval}"
n_docs = 6

[[methods]]
method = "rtn"
bits = [2, 8]

[[tasks]]
name = "toy_mc"
include = "{tasks}"
batch_size = 4

[[tasks]]
name = "toy_ll"
include = "{tasks}"

[scoring]
bootstrap = 20
"""


def _lm_eval():
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'qidlab[tasks]')")
    pytest.importorskip("lm_eval.models.huggingface",
                        reason="lm_eval's HFLM needs accelerate (pip install 'qidlab[tasks]')", exc_type=ImportError)


def _task_files(root):
    """A two-choice task: a sentence's true continuation against another sentence's."""
    rng = random.Random(0)
    sentences = [s for d in tiny_corpus(30, seed=7) for s in d.split(". ") if len(s.split()) >= 7][:24]
    rows = []
    for i, s in enumerate(sentences):
        words, other = s.split(), sentences[(i + 5) % len(sentences)].split()
        good, bad = " " + " ".join(words[4:7]), " " + " ".join(other[4:7])
        choices = [good, bad] if rng.random() < 0.5 else [bad, good]
        rows.append({"question": " ".join(words[:4]), "choices": choices, "answer": choices.index(good)})
    (root / "toy.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "tasks").mkdir()
    (root / "tasks" / "toy_mc.yaml").write_text(TASK_YAML.format(data=root / "toy.jsonl"))
    (root / "tasks" / "toy_ll.yaml").write_text(LL_YAML.format(data=root / "toy.jsonl"))
    return len(rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    make_tiny_checkpoint(root / "suite", steps=80, save_steps=[80], model_name="m")
    (root / "eval.txt").write_text("\n\n".join(tiny_corpus(12, seed=1)))
    n_docs = _task_files(root)
    (root / "study.toml").write_text(STUDY.format(root=root / "suite", eval=root / "eval.txt", tasks=root / "tasks"))
    return root, n_docs


def test_a_study_stores_task_metrics_of_the_models_in_memory(setup, monkeypatch):
    _lm_eval()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qidlab.evaluate.tasks import TaskSpec, run_tasks
    from qidlab.quantize import RTNConfig, quantize_
    from qidlab.sweep import load_study, run_study

    root, n_docs = setup
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    study = load_study(root / "study.toml")
    summary = run_study(study, progress=False)
    assert summary.failed == [] and summary.measured == 3 and summary.task_results == 6  # 3 models x 2 tasks
    table = read_task_table(root / "tasks.db")
    np.testing.assert_allclose(table.delta, table.value - table.value16)
    assert (table.n_docs == n_docs).all() and table.stderr.notna().all()
    acc = table[table.task == "toy_mc"].set_index("bits")
    ppl = table[table.task == "toy_ll"].set_index("bits")
    assert sorted(acc.index) == sorted(ppl.index) == [2.0, 8.0]
    assert set(acc.metric) == {"acc"} and (acc.higher_is_better == 1).all()
    assert set(ppl.metric) == {"perplexity"} and (ppl.higher_is_better == 0).all()
    assert ppl.value[2.0] > ppl.value16[2.0] > 1  # 2-bit rounding raises a continuation's perplexity
    with Store(root / "tasks.db") as store:
        ref = store.conn.execute("SELECT task, value, value16, delta FROM task_results WHERE method = 'none' "
                                 "ORDER BY task").fetchall()
        identity = json.loads(store.conn.execute("SELECT config_json FROM task_results WHERE bits = 2 AND "
                                                 "task = 'toy_mc'").fetchone()[0])
    assert [r[0] for r in ref] == ["toy_ll", "toy_mc"] and all(v == v16 and d == 0.0 for _, v, v16, d in ref)
    assert (ppl.value16 == ref[0][1]).all() and (acc.value16 == ref[1][1]).all()
    assert identity["task"]["name"] == "toy_mc" and identity["task"]["include"].startswith("sha256:")
    assert "scoring" not in identity and identity["quantization"]["bits"] == 2
    # the same numbers as lm_eval on the model loaded afresh, 16-bit and quantized (nothing reused)
    folder = root / "suite" / "m" / "step80"
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    specs = [TaskSpec("toy_mc", include=root / "tasks", batch_size=4), TaskSpec("toy_ll", include=root / "tasks")]
    fresh = run_tasks(model, tok, specs)
    assert fresh["toy_mc"]["acc"].value == pytest.approx(ref[1][1])
    assert fresh["toy_ll"]["perplexity"].value == pytest.approx(ref[0][1], rel=1e-6)
    quantize_(model, RTNConfig(bits=2))
    with torch.no_grad():
        fresh = run_tasks(model, tok, specs)
    assert fresh["toy_mc"]["acc"].value == pytest.approx(acc.value[2.0])
    assert fresh["toy_ll"]["perplexity"].value == pytest.approx(ppl.value[2.0], rel=1e-6)
    # a lower-is-better metric's drop from 16 bits is value - value16
    drop = load_task_target(str(root / "tasks.db"), "task:toy_ll:perplexity").set_index("bits")["task:toy_ll:perplexity"]
    assert drop[2.0] == pytest.approx(ppl.value[2.0] - ppl.value16[2.0]) and drop[2.0] > 0
    # resumed: nothing again
    again = run_study(load_study(root / "study.toml"), progress=False)
    assert (again.measured, again.task_results) == (0, 0)


def test_an_unknown_task_is_one_line_before_anything_is_written(setup, tmp_path):
    _lm_eval()
    from qidlab.sweep import load_study, run_study

    root, _ = setup
    text = (root / "study.toml").read_text().replace('name = "toy_mc"', 'name = "toy_mcq"')
    (tmp_path / "study.toml").write_text(text.replace('store = "tasks.db"', f'store = "{tmp_path / "x.db"}"'))
    with pytest.raises(QidlabError, match=r"\[\[tasks\]\] 'toy_mcq': no such lm-evaluation-harness task") as err:
        run_study(load_study(tmp_path / "study.toml"), progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "x.db").exists()


def test_tasks_tables_are_validated(setup, tmp_path):
    from qidlab.sweep import load_study

    root, _ = setup
    text = (root / "study.toml").read_text()
    (tmp_path / "a.toml").write_text(text.replace("batch_size = 4", "batch_sise = 4"))
    with pytest.raises(QidlabError, match=r"unknown key 'batch_sise' in tasks\[0\]; did you mean batch_size"):
        load_study(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text(text.replace("batch_size = 4", "limit = 0"))
    with pytest.raises(QidlabError, match=r"tasks\[0\]"):
        load_study(tmp_path / "b.toml")
    study = load_study(root / "study.toml")
    assert study.tasks[0].identity() == {"name": "toy_mc", "include": study.tasks[0].identity()["include"]}


# ---- the store and fit, without lm_eval -------------------------------------------------


def _law_store(path):
    """task_results following drop = k D^0.5 / (N^0.3 P^4) (acc falls from 0.8), 16-bit rows included."""
    rng = np.random.default_rng(0)
    with Store(path) as store:
        for n in (1e6, 4e6, 1.6e7):
            for d in (1e8, 1e9, 1e10):
                cid = store.checkpoint_id(suite="s", model=f"n{n:g}", step=int(d / 1e6), path="x", n_params=int(n),
                                          n_params_total=int(2 * n), tokens=int(d), content_hash=f"h{n}{d}")
                for bits in (16, 2, 3, 4):
                    drop = 0.0 if bits == 16 else 40 * d ** 0.5 / (n ** 0.3 * bits ** 4) * rng.lognormal(0, 0.02)
                    method = "none" if bits == 16 else "rtn"
                    store.add_task_result(TaskMeasurement(
                        checkpoint_id=cid, task="toy", metric="acc", method=method, bits=bits,
                        config={"quantization": {"method": method, "bits": bits}}, value=0.8 - drop, stderr=0.01,
                        value16=0.8, higher_is_better=True, n_docs=100, versions={"qidlab": "test"},
                        code_revision="test"))
    return path


def test_fit_a_law_to_a_task_metric(tmp_path, capsys):
    db = _law_store(tmp_path / "t.db")
    frame = read_task_table(db)
    assert len(frame) == 27 and set(frame.method) == {"rtn"}  # the 16-bit rows are the reference, not points
    np.testing.assert_allclose(frame.delta, frame.value - frame.value16)
    assert main(["fit", str(db), "--law", "ouyang2024", "--target", "task:toy:acc", "--holdout", "", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["fits"][0]
    assert fit["n"] == 27 and fit["target"] == "task:toy:acc"
    assert fit["params"]["alpha"] == pytest.approx(0.3, abs=0.03) and fit["params"]["gamma"] == pytest.approx(4, abs=0.2)
    assert main(["fit", str(db), "--law", "ouyang2024", "--target", "task:toy:acc_norm"]) == 2
    assert "no task results for task:toy:acc_norm (stored: task:toy:acc)" in capsys.readouterr().err
    assert main(["fit", str(db), "--law", "ouyang2024", "--target", "task:toy"]) == 2
    assert "task:NAME:METRIC" in capsys.readouterr().err


def test_a_store_of_schema_2_gains_the_task_table(tmp_path):
    db = _law_store(tmp_path / "old.db")
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE task_results")  # and what else version 3 added: checkpoints.run
        conn.execute("DROP VIEW canonical")
        conn.execute("ALTER TABLE checkpoints DROP COLUMN run")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    check_store(db)  # an older store is a valid merge source as it is
    assert read_task_table(db).empty
    with Store(db) as store:
        version = store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == SCHEMA_VERSION == "3" and store.count("task_results") == 0


def test_task_results_merge_once_and_conflicts_are_named(tmp_path):
    import shutil

    from qidlab.store import merge_stores

    a = _law_store(tmp_path / "a.db")
    dest = tmp_path / "m.db"
    assert merge_stores([a], dest).total()["task_results"] == 36  # 27 quantized + 9 16-bit rows
    again = merge_stores([a], dest)
    assert again.total()["task_results"] == 0 and again.total("present")["task_results"] == 36
    b = Path(shutil.copy(a, tmp_path / "b.db"))
    with sqlite3.connect(b) as conn:
        conn.execute("UPDATE task_results SET value = value - 0.1, delta = delta - 0.1 WHERE id = 2")
    with pytest.raises(QidlabError, match=r"1 conflict\(s\): task result s/n1e\+06/step100 toy acc"):
        merge_stores([b], dest)
    skipped = merge_stores([b], dest, on_conflict="skip")
    assert len(skipped.sources[0].conflicts) == 1 and skipped.total()["task_results"] == 0
    assert len(read_task_table(dest)) == 27


# ---- published data sets and the dry run --------------------------------------------------


def _with_measurements(path):
    """The law store of ``_law_store`` plus one QiD measurement per checkpoint (publish needs some)."""
    from qidlab.store import Measurement

    _law_store(path)
    with Store(path) as store:
        es = store.eval_set_id(name="heldout", content_hash="e1", n_docs=2, source={"path": "x"})
        for (cid,) in store.conn.execute("SELECT id FROM checkpoints ORDER BY id").fetchall():
            store.add_measurement(Measurement(
                checkpoint_id=cid, eval_set_id=es, method="rtn", bits=4, config={"method": "rtn", "bits": 4},
                loss16=3.0, loss=3.1, qid=0.1, qid_ci=None, n_tokens=20, versions={"qidlab": "test"},
                code_revision="test", doc_nll=[31.0, 31.0], doc_tokens=[10, 10], doc_bytes=[40, 40]))
    return path


def test_publish_writes_the_task_results_and_fit_reads_them(tmp_path, capsys):
    import pandas as pd

    from qidlab.store import publish_dataset

    db = _with_measurements(tmp_path / "t.db")
    assert main(["store", "publish", str(db), "--name", "withtasks", "--out", str(tmp_path / "ds")]) == 0
    assert "27 task results" in capsys.readouterr().out
    folder = tmp_path / "ds" / "withtasks"
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["files"]["tasks"]
    assert entry["path"] == "tasks.parquet" and entry["rows"] == 27 and manifest["counts"]["task_results"] == 27
    assert manifest["tasks"] == [{"task": "toy", "metric": "acc", "rows": 27, "methods": ["rtn"], "higher_is_better": True}]
    assert {c["config"]["quantization"]["bits"] for c in manifest["task_configs"]} == {2, 3, 4}
    published = pd.read_parquet(folder / "tasks.parquet")
    stored = read_task_table(db)
    key = ["n_params", "tokens", "bits"]
    both = published.merge(stored, on=key, suffixes=("", "_db"))
    assert len(both) == 27 and set(published.method) == {"rtn"}  # the 16-bit rows live on as value16
    for col in ("value", "stderr", "value16", "delta", "n_docs"):
        np.testing.assert_array_equal(both[col], both[col + "_db"])
    assert published.config_hash.str.len().eq(16).all()
    # a law fitted to the data set is the one fitted to the store
    fits = []
    for source in (str(db), str(folder)):
        assert main(["fit", source, "--law", "ouyang2024", "--target", "task:toy:acc", "--holdout", "", "--json"]) == 0
        fits.append(json.loads(capsys.readouterr().out)["fits"][0]["params"])
    assert fits[0] == pytest.approx(fits[1], rel=1e-9)
    # the published file is checked against its manifest
    published.assign(value=published.value + 0.01).to_parquet(folder / "tasks.parquet", index=False)
    assert main(["fit", str(folder), "--law", "ouyang2024", "--target", "task:toy:acc"]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    # a store without task results: no file, and the manifest says why
    plain = tmp_path / "plain.db"
    with sqlite3.connect(db) as src, sqlite3.connect(plain) as dst:
        src.backup(dst)
    with sqlite3.connect(plain) as conn:
        conn.execute("DELETE FROM task_results")
    out = publish_dataset(plain, "plain", tmp_path / "ds")
    assert out.manifest["files"]["tasks"]["path"] is None and "no task results" in out.manifest["files"]["tasks"]["reason"]
    assert not (out.folder / "tasks.parquet").exists() and out.manifest["tasks"] == []
    assert main(["fit", str(out.folder), "--law", "ouyang2024", "--target", "task:toy:acc"]) == 2
    assert "has no task results" in capsys.readouterr().err


def test_dry_run_lists_the_tasks_that_would_run(setup, capsys, monkeypatch):
    _lm_eval()
    root, _ = setup
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    study = root / "study.toml"
    dry = root / "dry.toml"  # its own store: the other tests' sweep does not change what is to do
    dry.write_text(study.read_text().replace('store = "tasks.db"', 'store = "dry.db"'))
    assert main(["sweep", str(dry), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t.split(" ")[0] for t in doc["tasks"]] == ["toy_mc", "toy_ll"] and "include" in doc["tasks"][0]
    (ck,) = doc["checkpoints"]
    assert (ck["tasks_todo"], ck["tasks_stored"]) == (6, 0) and doc["tasks_to_run"] == 6  # 3 models x 2 tasks
    assert not (root / "dry.db").exists()
    assert main(["sweep", str(dry), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "tasks: 6 to run, 0 stored" in text and "6 runs to do): toy_mc" in text
    # after a sweep of one task, its runs are stored and the other's are left
    from qidlab.sweep import load_study, run_study

    one = root / "one.toml"
    one.write_text(dry.read_text().split("[[tasks]]\nname = \"toy_ll\"")[0] + "[scoring]\nbootstrap = 20\n")
    run_study(load_study(one), progress=False)
    assert main(["sweep", str(dry), "--dry-run", "--json"]) == 0
    (ck,) = json.loads(capsys.readouterr().out)["checkpoints"]
    assert (ck["tasks_todo"], ck["tasks_stored"]) == (3, 3) and ck["todo"] == 0
    # an unknown task is refused by the dry run as by the sweep
    bad = root / "bad.toml"
    bad.write_text(dry.read_text().replace('name = "toy_ll"', 'name = "toy_nope"'))
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert "toy_nope" in capsys.readouterr().err
