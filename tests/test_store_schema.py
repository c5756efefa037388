"""The store owns its schema: column lists read from schema.sql, the canonical view defined once,
what a checkpoint already has measured, the tables that describe a store, and the results that
publishing and the report return (what the command line prints)."""

from __future__ import annotations

import json

import pytest

import show_fixtures as sf
from qidlab.errors import QidlabError
from qidlab.show.report import build_report
from qidlab.show.study import ShowOptions
from qidlab.store import Measurement, Store, describe_store, publish_dataset, read_canonical
from qidlab.store.db import canonical_query, columns, connect


def _measurement(ckpt, es, bits=3.0, method="rtn"):
    return Measurement(checkpoint_id=ckpt, eval_set_id=es, method=method, bits=bits, config={"bits": bits},
                       loss16=3.0, loss=3.2, qid=0.2, qid_ci=None, n_tokens=30, versions={"qidlab": "0"},
                       code_revision="abc", doc_nll=[10.0, 20.0], doc_tokens=[10, 10], doc_bytes=[40, 41])


def _checkpoint(store, step=64):
    return store.checkpoint_id(suite="s", model="m", step=step, path="/x", n_params=1000, n_params_total=1500,
                               tokens=step * 2048, content_hash=f"h{step}")


def test_the_column_lists_are_the_schemas(tmp_path):
    conn = connect(tmp_path / "s.db")
    try:
        for table, names in columns().items():
            assert tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})")) == names
    finally:
        conn.close()
    assert columns()["measurements"][:3] == ("id", "checkpoint_id", "eval_set_id")


def test_the_published_query_is_the_canonical_view_and_the_config_hash(tmp_path):
    with Store(tmp_path / "s.db") as store:
        ck = _checkpoint(store)
        es = store.eval_set_id(name="web", content_hash="e", n_docs=2, source={})
        store.add_measurement(_measurement(ck, es))
        store.add_measurement(_measurement(ck, es, bits=16.0, method="none"))
        view = store.conn.execute("SELECT * FROM canonical").fetchall()
        query = store.conn.execute(canonical_query("config_hash"))
        names = [d[0] for d in query.description]
        rows = query.fetchall()
    assert [r[:-1] for r in rows] == view and len(view) == 1  # the 16-bit reference left out
    assert names == list(read_canonical(tmp_path / "s.db").columns) + ["config_hash"]


def test_what_a_checkpoint_has_measured(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store.measured(suite="s", model="m", step=64) == set()  # not stored at all
        ck = _checkpoint(store)
        es = store.eval_set_id(name="web", content_hash="e", n_docs=2, source={})
        assert store.measured(suite="s", model="m", step=64) == set()  # stored, nothing measured
        store.add_measurement(_measurement(ck, es))
        other = _checkpoint(store, step=128)
        store.add_measurement(_measurement(other, es, bits=4.0))
        (got,) = store.measured(suite="s", model="m", step=64)
        assert got[0] == es and got[1] == store.conn.execute(
            "SELECT config_hash FROM measurements WHERE checkpoint_id = ?", (ck,)).fetchone()[0]


def test_a_store_described(tmp_path):
    db = sf.write_store(tmp_path / "s.db", None, eval_sets=("web",), methods=("gptq",))
    tables = describe_store(db)
    assert sorted(tables) == ["checkpoints", "eval_sets", "methods", "runs"]
    ck = tables["checkpoints"]
    assert len(ck) == 20 and list(zip(ck.model, ck.step)) == sorted(zip(ck.model, ck.step))
    assert tables["methods"].to_dict("records") == [{"method": "gptq", "measurements": 60, "configs": 3}]
    assert tables["runs"].measurements.tolist() == [60]
    (tmp_path / "junk.db").write_text("not sqlite " * 100)
    with pytest.raises(QidlabError, match="not a readable qidlab store"):
        describe_store(tmp_path / "junk.db")
    with pytest.raises(QidlabError, match="not a readable SQLite store"):
        read_canonical(tmp_path / "junk.db")


def test_publishing_returns_the_manifest_it_wrote(tmp_path):
    suite = sf.write_suite(tmp_path, weights=False)
    db = sf.write_store(tmp_path / "s.db", suite, eval_sets=("web",), methods=("gptq",))
    published = publish_dataset(db, "set", tmp_path / "sets")
    assert published.folder == tmp_path / "sets" / "set"
    assert published.manifest == json.loads((published.folder / "manifest.json").read_text())
    (entry,) = published.manifest["suites"]
    assert entry["vocab_size"] == sf.VOCAB and entry["manifests"][0]["folder"] == "synth"


def test_the_report_returns_what_report_json_holds(tmp_path):
    db = sf.write_store(tmp_path / "s.db", None, eval_sets=("web",), methods=("gptq",))
    report = build_report(db, tmp_path / "out", options=ShowOptions(bootstrap=0, dpi=30))
    assert report.path == tmp_path / "out" / "report.html" and report.path.is_file()
    assert report.summary == json.loads((tmp_path / "out" / "report.json").read_text())
    assert report.summary["figures"] and report.summary["eval_set"] == "web"


def _as_version_2(path):
    """A store as qidlab wrote it before schema version 3 (no checkpoints.run, the view without it,
    no task_results)."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("DROP VIEW canonical")
        conn.execute("ALTER TABLE checkpoints DROP COLUMN run")
        conn.execute("DROP TABLE task_results")
        conn.execute("CREATE VIEW canonical AS " + canonical_query().replace(", c.run", ""))
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    return path


def test_runs_are_stored_exported_and_migrated_from_version_2(tmp_path):
    from qidlab.store import merge_stores

    db = tmp_path / "s.db"
    with Store(db) as store:
        es = store.eval_set_id(name="web", content_hash="e", n_docs=2, source={})
        for run in ("seed0", "seed1"):
            ck = store.checkpoint_id(suite="s", model=f"m-{run}", step=64, path="/x", n_params=1000,
                                     n_params_total=1500, tokens=64, content_hash=run, run=run)
            store.add_measurement(_measurement(ck, es))
    assert sorted(read_canonical(db)["run"]) == ["seed0", "seed1"]
    old = tmp_path / "old.db"
    old.write_bytes(db.read_bytes())
    _as_version_2(old)
    # an older store is read as it is (no migration), with this version's columns: run is NULL there
    assert read_canonical(old)["run"].isna().all()
    merged = tmp_path / "merged.db"
    merge_stores([old, db], merged)  # a version-2 source merges into a version-3 store
    assert read_canonical(merged)["run"].isna().sum() == 2  # the old store's checkpoints come first, run NULL
    with Store(old) as store:  # opened for writing: migrated in place, the view made again
        version = store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == "3"
    assert read_canonical(old)["run"].isna().all() and len(read_canonical(old)) == 2
