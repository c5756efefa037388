"""Shared-Hessian GPTQ in a sweep (issue 14): block by block, what it reports stored with each
measurement, the study's GPTQ settings, and stores of the previous schema migrated."""

import json
import sqlite3

import pytest
from test_store_merge import write_store
from test_sweep import STUDY, _copy_study, suite  # noqa: F401  (the module-scoped tiny suite)

from qidlab.errors import QidlabError
from qidlab.store import Store, merge_stores, read_canonical
from qidlab.store.db import SCHEMA_VERSION, canonical_query
from qidlab.sweep import load_study, run_study
from qidlab.sweep.run import measurement_config

GPTQ = ('[[methods]]\nmethod = "gptq"\nbits = [2, 4]\ngroup_size = 32\nshared_hessian = true\n\n'
        '[scoring]\nbootstrap = 20\n')


def _study(suite, tmp_path, study_keys: str = ""):  # noqa: F811
    text = STUDY.split("[[methods]]")[0].replace('store = "tiny.db"\n', 'store = "tiny.db"\n' + study_keys) + GPTQ
    study = load_study(_copy_study(suite, tmp_path, text))
    return type(study)(**{**vars(study), "steps": (150,)})


def _reports(db) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT method, quantization_json FROM measurements ORDER BY id").fetchall()
    return [(m, None if q is None else json.loads(q)) for m, q in rows]


def test_a_sweep_stores_the_damping_gptq_used_per_layer(suite, tmp_path):  # noqa: F811
    study = _study(suite, tmp_path)
    summary = run_study(study, progress=False)
    assert summary.measured == 3 and not summary.failed
    rows = _reports(study.store)
    assert [m for m, _ in rows] == ["none", "gptq", "gptq"]
    assert rows[0][1] is None  # the 16-bit reference quantizes nothing
    for _, report in rows[1:]:
        assert report["fallback"] == {} and len(report["damp"]) == 4 * 2  # 4 linears x 2 blocks
        assert set(report["damp"].values()) == {0.01}  # the config's damping sufficed everywhere
    qid = read_canonical(study.store).set_index("bits").qid
    assert qid[2] > qid[4] > -0.01


def test_the_study_chooses_hessian_precision_and_failure_policy(suite, tmp_path, monkeypatch):  # noqa: F811
    import qidlab.quantize as quantize

    seen = []
    real = quantize.gptq_shared_blockwise
    monkeypatch.setattr(quantize, "gptq_shared_blockwise",
                        lambda *a, **k: seen.append(k) or real(*a, **k))
    study = _study(suite, tmp_path, 'hessian_precision = "bf16"\non_gptq_failure = "rtn"\n')
    assert run_study(study, progress=False).measured == 3
    assert [(k["precision"], k["on_failure"]) for k in seen] == [("bf16", "rtn")]
    # bf16 products give other numbers: another measurement; float32 (the default) adds nothing
    (tmp_path / "d").mkdir()
    default = _study(suite, tmp_path / "d")
    gptq = study.methods[0]
    assert measurement_config(gptq, study)["hessian_precision"] == "bf16"
    assert "hessian_precision" not in measurement_config(gptq, default)
    with pytest.raises(QidlabError, match=r"\[study\] on_gptq_failure must be one of error, rtn"):
        (tmp_path / "bad").mkdir()
        _study(suite, tmp_path / "bad", 'on_gptq_failure = "skip"\n')


def _as_version_1(path):
    """A store as qidlab wrote it before schema version 2 (no quantization_json column, nor the
    checkpoints' run of version 3)."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP VIEW canonical")
        conn.execute("ALTER TABLE measurements DROP COLUMN quantization_json")
        conn.execute("ALTER TABLE checkpoints DROP COLUMN run")
        conn.execute("CREATE VIEW canonical AS " + canonical_query().replace(", c.run", ""))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    return path


def test_a_store_of_schema_1_is_migrated_when_written_and_merged_as_it_is(tmp_path):
    old = _as_version_1(write_store(tmp_path / "old.db"))
    rows = len(read_canonical(old))
    merged = tmp_path / "merged.db"
    merge_stores([old], merged)  # a source is read as it is, never written
    assert len(read_canonical(merged)) == rows
    with sqlite3.connect(old) as conn:
        assert "quantization_json" not in {r[1] for r in conn.execute("PRAGMA table_info(measurements)")}
    with Store(old) as store:  # opened for writing: migrated in place
        version = store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(measurements)")}
    assert version == SCHEMA_VERSION == "3" and "quantization_json" in columns
    assert len(read_canonical(old)) == rows


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    db = write_store(tmp_path / "new.db")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    before = db.read_bytes()
    with pytest.raises(QidlabError, match="store schema version 9, this qidlab reads 1 to 3"):
        Store(db)
    with pytest.raises(QidlabError, match="store schema version 9"):
        merge_stores([db], tmp_path / "m.db")
    assert db.read_bytes() == before
