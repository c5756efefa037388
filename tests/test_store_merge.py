"""Merging stores: the union of disjoint stores, idempotence, conflicts (error and skip), bad
sources that stop the merge before anything is written, provenance, and `qidlab store merge`.

Stores are written with ``Store`` directly (a few rows each, no torch). Units: N non-embedding
parameters, D tokens, losses in nats per token."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.store import Measurement, Store, drop_models, merge_stores, publish_store, read_canonical

KEY = ["suite", "model", "step", "eval_set", "method", "bits"]


def write_store(path: Path, *, suite="s", models=("m1", "m2"), steps=(100, 200), eval_set="web", methods=("rtn",),
                bits=(2, 3), qid_scale=1.0, content="", revision="rev-a", device=None, calibration=None) -> Path:
    """A store with a 16-bit reference and one row per (model, step, method, bits): QiD grows
    with D, shrinks with N and P, so every row has distinct values."""
    with Store(path) as store:
        es = store.eval_set_id(name=eval_set, content_hash=f"hash-{eval_set}{content}", n_docs=3,
                               source={"path": f"{eval_set}.txt"})
        for i, model in enumerate(models):
            n = 1000 * (i + 1)
            for step in steps:
                ck = store.checkpoint_id(suite=suite, model=model, step=step, path=f"/x/{suite}/{model}/step{step}",
                                         n_params=n, n_params_total=n + 500, tokens=step * 64,
                                         content_hash=f"{suite}-{model}-{step}{content}")
                store.add_measurement(_row(ck, es, "none", 16, 0.0, revision))
                for method in methods:
                    for b in bits:
                        qid = qid_scale * 0.01 * step ** 0.5 / (n ** 0.2 * b ** 2)
                        store.add_measurement(_row(ck, es, method, b, qid, revision, calibration))
        if device:
            store.record_device(device)
    return path


def _row(ck, es, method, bits, qid, revision, calibration=None):
    loss16 = 3.0
    config = {"quantization": {"method": method, "bits": bits}}
    if calibration:
        config["calibration"] = {"source": calibration, "n_samples": 16}
    return Measurement(checkpoint_id=ck, eval_set_id=es, method=method, bits=float(bits), config=config,
                       loss16=loss16, loss=loss16 + qid, qid=qid, qid_ci=(0.9 * qid, 1.1 * qid), n_tokens=30,
                       versions={"qidlab": "0.1.0", "torch": "2.13.0"}, code_revision=revision,
                       doc_nll=[10 * (loss16 + qid)] * 3, doc_tokens=[10] * 3, doc_bytes=[40, 41, 42])


def dump(path: Path) -> dict:
    """Every table of a store, ids replaced by identities (comparable across stores)."""
    conn = sqlite3.connect(path)
    try:
        q = {
            "measurements": "SELECT c.suite, c.model, c.step, e.name, m.config_hash, m.method, m.bits, m.loss16, "
                            "m.loss, m.qid, m.qid_ci_low, m.qid_ci_high, m.n_tokens, m.versions_json, "
                            "m.code_revision FROM measurements m JOIN checkpoints c ON c.id = m.checkpoint_id "
                            "JOIN eval_sets e ON e.id = m.eval_set_id",
            "doc_losses": "SELECT c.suite, c.model, c.step, e.name, m.config_hash, d.doc_index, d.nll_sum, d.n_tokens, "
                          "d.n_bytes FROM doc_losses d JOIN measurements m ON m.id = d.measurement_id "
                          "JOIN checkpoints c ON c.id = m.checkpoint_id JOIN eval_sets e ON e.id = m.eval_set_id",
            "checkpoints": "SELECT suite, model, step, path, n_params, n_params_total, tokens, content_hash "
                           "FROM checkpoints",
            "eval_sets": "SELECT name, content_hash, n_docs, source_json FROM eval_sets",
            "fits": "SELECT law, query_json, result_json, versions_json, code_revision FROM fits",
            "meta": "SELECT key, value FROM meta",
        }
        return {k: sorted(conn.execute(sql).fetchall()) for k, sql in q.items()}
    finally:
        conn.close()


def canonical(path: Path) -> pd.DataFrame:
    return read_canonical(path).sort_values(KEY).reset_index(drop=True)


def add_fit(path: Path, law: str) -> None:
    with Store(path) as store, store.conn:
        store.conn.execute("INSERT INTO fits(law, query_json, result_json, versions_json, code_revision) "
                           "VALUES (?, '{}', ?, '{}', 'rev-a')", (law, json.dumps({"law": law})))


@pytest.fixture
def two(tmp_path):
    """Two disjoint stores: other suites, eval sets, methods, code revisions and devices."""
    a = write_store(tmp_path / "a.db", suite="s1", eval_set="web", methods=("rtn",), device="cpu: x86_64")
    b = write_store(tmp_path / "b.db", suite="s2", models=("m3",), eval_set="wiki", methods=("gptq",), bits=(3, 4),
                    revision="rev-b", device="cuda: NVIDIA H100 80GB HBM3")
    add_fit(a, "ouyang2024")
    return a, b


# ---------------------------------------------------------------------------
# union and idempotence


def test_merging_disjoint_stores_gives_their_union(two, tmp_path):
    a, b = two
    out = tmp_path / "m.db"
    summary = merge_stores([a, b], out)
    union = pd.concat([canonical(a), canonical(b)]).sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(canonical(out), union)
    got, want_a, want_b = dump(out), dump(a), dump(b)
    for table in ("measurements", "doc_losses", "checkpoints", "eval_sets", "fits"):
        assert got[table] == sorted(want_a[table] + want_b[table]), table
    # provenance per row: b's rows keep b's code revision
    assert {r[-1] for r in got["measurements"] if r[0] == "s2"} == {"rev-b"}
    assert summary.total()["measurements"] == 2 * 2 * 3 + 1 * 2 * 3  # references included
    assert summary.total()["doc_losses"] == 3 * summary.total()["measurements"]
    meta = dict(got["meta"])
    merged = json.loads(meta["merged_from"])
    assert [m["store"] for m in merged] == [str(a), str(b)]
    assert merged[1]["meta"]["devices"] == ["cuda: NVIDIA H100 80GB HBM3"]
    assert all(len(m["sha256"]) == 64 for m in merged)
    assert json.loads(meta["devices"]) == ["cpu: x86_64", "cuda: NVIDIA H100 80GB HBM3"]


def test_merging_again_adds_nothing(two, tmp_path):
    a, b = two
    out = tmp_path / "m.db"
    merge_stores([a, b], out)
    before = dump(out)
    again = merge_stores([b, a, a], out)
    assert dump(out) == before  # meta included: the same files are recorded once
    assert again.total()["measurements"] == 0 and again.total("present")["measurements"] == 18 + 12
    assert merge_stores([out], tmp_path / "copy.db").total()["measurements"] == 18
    assert dump(tmp_path / "copy.db")["measurements"] == before["measurements"]


def test_overlapping_stores_keep_one_row_per_measurement(tmp_path):
    a = write_store(tmp_path / "a.db", steps=(100, 200))
    b = write_store(tmp_path / "b.db", steps=(200, 300))  # step 200 measured by both, identically
    out = tmp_path / "m.db"
    summary = merge_stores([a, b], out)
    assert summary.sources[1].present["measurements"] == 2 * 3 and summary.sources[1].added["checkpoints"] == 2
    assert sorted(canonical(out).step.unique()) == [100, 200, 300]
    assert len(canonical(out)) == 2 * 3 * 2


def test_the_same_setting_under_other_configs_is_reported(tmp_path):
    a = write_store(tmp_path / "a.db", methods=("gptq",), calibration="/job1/calibration.jsonl")
    b = write_store(tmp_path / "b.db", methods=("gptq",), calibration="/job2/calibration.jsonl")
    summary = merge_stores([a, b], tmp_path / "m.db")
    assert summary.total()["measurements"] == 12 + 8  # b's 16-bit references are a's
    assert len(summary.duplicates) == 2 * 2 * 2  # (model, step, bits)
    assert summary.duplicates[0] == "s/m1/step100 gptq 2 bits on 'web': 2 configs differing in calibration.source"
    assert merge_stores([a], tmp_path / "a-only.db").duplicates == []
    manifest = json.loads((publish_store(tmp_path / "m.db", "m", tmp_path / "out") / "manifest.json").read_text())
    assert manifest["duplicate_settings"] == summary.duplicates


# ---------------------------------------------------------------------------
# conflicts


def test_a_changed_checkpoint_is_one_error_naming_both_stores(tmp_path):
    a = write_store(tmp_path / "a.db")
    b = write_store(tmp_path / "b.db", content="-retrained")  # same names, other weights and eval content
    out = tmp_path / "m.db"
    merge_stores([a], out)
    before = dump(out)
    with pytest.raises(QidlabError) as err:
        merge_stores([b], out)
    message = str(err.value)
    assert f"checkpoint s/m1/step100: content hash s-m1-100-retrained in {b}, s-m1-100 in {out}" in message
    assert "--on-conflict skip" in message and f"nothing of {b} was merged" in message
    assert dump(out) == before
    # in one run, the other store is named as the origin of the row
    with pytest.raises(QidlabError, match=f"in {b}, s-m1-100 in {a}"):
        merge_stores([a, b], tmp_path / "new.db")


def test_a_retrained_model_replaces_the_old_one_after_dropping_it(tmp_path, capsys):
    old = write_store(tmp_path / "old.db", models=("m1", "m2", "m3"))
    new = write_store(tmp_path / "new.db", models=("m2",), steps=(100, 200, 300), qid_scale=2.0)
    with sqlite3.connect(new) as conn:  # trained again: other weights under the same names
        conn.execute("UPDATE checkpoints SET content_hash = content_hash || '-retrained'")
    out = tmp_path / "m.db"
    merge_stores([old], out)
    before = dump(out)
    with pytest.raises(QidlabError, match="content hash s-m2-100-retrained"):
        merge_stores([new], out)  # refused while the old model's rows are there
    for models, message in ((["m9"], "suite 's' has no model(s) m9 (it has: m1, m2, m3)"),
                            (["m2", "m9"], "has no model(s) m9")):
        with pytest.raises(QidlabError, match=re.escape(message)):
            drop_models(out, "s", models)
    assert dump(out) == before  # a refused merge or drop changes nothing
    foreign = _foreign(tmp_path / "foreign.db")
    foreign_bytes = foreign.read_bytes()
    with pytest.raises(QidlabError, match="not a qidlab store"):
        drop_models(foreign, "s", ["m2"])
    assert foreign.read_bytes() == foreign_bytes  # no qidlab schema written into someone else's file

    assert main(["store", "drop", str(out), "--suite", "s", "--models", "m2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # 2 steps x (16-bit + 2 widths), 3 documents each
    assert doc["deleted"] == {"doc_losses": 2 * 3 * 3, "measurements": 2 * 3, "checkpoints": 2}
    merge_stores([new], out)
    table = canonical(out)
    assert sorted(table[table.model == "m2"].step.unique()) == [100, 200, 300]
    keep = ["model", "step", "method", "bits", "qid"]
    old_rows = canonical(old)
    assert (table[table.model != "m2"][keep].sort_values(keep).reset_index(drop=True)
            .equals(old_rows[old_rows.model != "m2"][keep].sort_values(keep).reset_index(drop=True)))
    with sqlite3.connect(out) as conn:
        dropped = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0])
    assert dropped == [{"suite": "s", "models": ["m2"], "deleted": doc["deleted"]}]
    manifest = json.loads((publish_store(out, "after-drop", tmp_path / "sets") / "manifest.json").read_text())
    assert manifest["store"]["dropped"] == dropped  # a data set says which models' rows were replaced
    merge_stores([out], tmp_path / "onward.db")  # and a store merged onward carries the record, parsed
    with sqlite3.connect(tmp_path / "onward.db") as conn:
        onward = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'merged_from'").fetchone()[0])
    assert onward[0]["meta"]["dropped"] == dropped


def test_an_eval_set_renamed_or_rebuilt_is_a_conflict(tmp_path):
    a = write_store(tmp_path / "a.db", eval_set="web")
    b = write_store(tmp_path / "b.db", suite="t", eval_set="web", content="-v2")  # same name, other documents
    with pytest.raises(QidlabError, match=r"eval set 'web': content hash hash-web-v2 in .*b\.db, hash-web in .*a\.db"):
        merge_stores([a, b], tmp_path / "m.db")
    c = write_store(tmp_path / "c.db", suite="u", eval_set="web2")
    with Store(c) as s, s.conn:
        s.conn.execute("UPDATE eval_sets SET content_hash = 'hash-web'")  # the same documents, another name
    with pytest.raises(QidlabError, match=r"eval set content hash-web: named 'web2' in .*c\.db, 'web' in .*a\.db"):
        merge_stores([a, c], tmp_path / "m2.db")


def test_a_measurement_with_other_values_is_a_conflict_and_skip_keeps_the_destination(tmp_path):
    a = write_store(tmp_path / "a.db")
    b = write_store(tmp_path / "b.db", steps=(200, 300), qid_scale=1.5)  # step 200 measured again, differently
    out = tmp_path / "m.db"
    merge_stores([a], out)
    with pytest.raises(QidlabError, match=r"4 conflict\(s\): measurement s/m1/step200 rtn 2 bits on 'web'"):
        merge_stores([b], out)
    summary = merge_stores([b], out, on_conflict="skip")
    src = summary.sources[0]
    assert len(src.conflicts) == 4 and src.skipped_measurements == 4  # (m1, m2) x 2 bits at step 200
    merged = canonical(out)
    kept = merged[merged.step == 200].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, canonical(a)[canonical(a).step == 200].reset_index(drop=True))
    assert sorted(merged.step.unique()) == [100, 200, 300]  # b's new checkpoints are merged
    assert src.added["measurements"] == 2 * 3 and src.present["measurements"] == 2  # the 16-bit references agree


def test_skip_drops_the_measurements_of_a_conflicting_checkpoint(tmp_path):
    a = write_store(tmp_path / "a.db", models=("m1",))
    b = write_store(tmp_path / "b.db", models=("m1",), content="-retrained")
    out = tmp_path / "m.db"
    summary = merge_stores([a, b], out, on_conflict="skip")
    src = summary.sources[1]
    assert len(src.conflicts) == 2 + 1  # two checkpoints and the eval set
    assert src.added == {"checkpoints": 0, "eval_sets": 0, "measurements": 0, "doc_losses": 0, "fits": 0, "task_results": 0}
    assert src.skipped_measurements == 2 * 3
    assert dump(out)["measurements"] == dump(a)["measurements"]


def test_a_failing_source_leaves_the_earlier_ones_merged(tmp_path):
    a = write_store(tmp_path / "a.db")
    b = write_store(tmp_path / "b.db", suite="t")
    c = write_store(tmp_path / "c.db", content="-retrained")
    out = tmp_path / "m.db"
    with pytest.raises(QidlabError, match=rf"nothing of {c} was merged \(sources merged before it: {a}, {b}\)"):
        merge_stores([a, b, c], out)
    assert dump(out)["measurements"] == sorted(dump(a)["measurements"] + dump(b)["measurements"])


# ---------------------------------------------------------------------------
# bad sources: one error, nothing written


def _foreign(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things(x)")
    conn.commit()
    conn.close()
    return path


def _damaged(path: Path) -> Path:
    write_store(path, models=tuple(f"m{i}" for i in range(40)))
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page: 6 * page] = b"\xff" * (3 * page)  # wipe three b-tree pages, header left intact
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b"this is not a database " * 200) and p, "not a readable SQLite store"),
    (_foreign, r"not a qidlab store \(no table 'meta'\)"),
    (_damaged, "damaged|malformed"),
    (lambda p: p, "no such store"),
])
def test_a_bad_source_is_one_error_and_nothing_is_written(tmp_path, make, problem):
    good = write_store(tmp_path / "good.db")
    bad = tmp_path / "bad.db"
    make(bad)
    out = tmp_path / "m.db"
    with pytest.raises(QidlabError, match=problem):
        merge_stores([good, bad], out)
    assert not out.exists()  # checked before the destination is created
    merge_stores([good], out)
    before = dump(out)
    with pytest.raises(QidlabError, match=problem):
        merge_stores([bad, good], out)
    assert dump(out) == before


def test_a_bad_destination_or_option_is_refused(tmp_path):
    good = write_store(tmp_path / "good.db")
    with pytest.raises(QidlabError, match="not a qidlab store"):
        merge_stores([good], _foreign(tmp_path / "foreign.db"))
    with pytest.raises(QidlabError, match="cannot be merged into itself"):
        merge_stores([good], good)
    with pytest.raises(QidlabError, match="on_conflict must be one of error, skip"):
        merge_stores([good], tmp_path / "m.db", on_conflict="newest")
    with Store(tmp_path / "old.db") as s, s.conn:
        s.conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(QidlabError, match="store schema version 0, this qidlab reads 1 to 3"):
        merge_stores([tmp_path / "old.db"], tmp_path / "m.db")
    assert not (tmp_path / "m.db").exists()


# ---------------------------------------------------------------------------
# the command line


def test_store_merge_command(two, tmp_path, capsys):
    a, b = two
    out = tmp_path / "m.db"
    assert main(["store", "merge", str(a), str(b), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["added"]["measurements"] == 18 and [s["path"] for s in doc["sources"]] == [str(a), str(b)]
    assert main(["store", "merge", str(a), "--out", str(out)]) == 0
    assert f"{out}: +0 measurements from 1 stores" in capsys.readouterr().out
    c = write_store(tmp_path / "c.db", suite="s1", content="-x")
    assert main(["store", "merge", str(c), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qidlab: error: ") and err.count("\n") == 1 and str(c) in err and str(a) not in err
    assert main(["store", "merge", str(c), "--out", str(out), "--on-conflict", "skip"]) == 0
    assert "skipped: checkpoint s1/m1/step100" in capsys.readouterr().out
