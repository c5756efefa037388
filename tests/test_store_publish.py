"""Publishing a store as a data set (`qidlab store publish`) and loading data sets by name
(`qidlab.data`, `qidlab fit NAME`, `qidlab plot FIG NAME`, `qidlab report NAME`), the shipped
data sets included.

The published store is the show stage's synthetic study (``show_fixtures``: QiD from Ouyang's
law with known exponents, a suite folder with its manifest; no torch). Units: N non-embedding
parameters, D tokens, losses in nats per token."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import pandas as pd
import pytest

import qidlab.data
import show_fixtures as sf
from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.provenance import file_sha256
from qidlab.show.study import ShowOptions, load_study
from qidlab.store import Store, publish_dataset, publish_store, read_canonical, read_loss_unit
from qidlab.store import publish as publish_module

SORT = ["suite", "model", "step", "eval_set", "method", "bits"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(store, suite folder) of the synthetic study, with a device recorded."""
    root = tmp_path_factory.mktemp("publish")
    suite = sf.write_suite(root, weights=False)
    db = sf.write_store(root / "study.db", suite)
    with Store(db) as store:
        store.record_device("cuda: NVIDIA H100 80GB HBM3")
    return db, suite


@pytest.fixture
def published(study, tmp_path, monkeypatch):
    """The study published as 'synth-study' into a folder on $QIDLAB_DATA_PATH."""
    db, _ = study
    folder = publish_store(db, "synth-study", tmp_path / "datasets", description="synthetic")
    monkeypatch.setenv(qidlab.data.ENV, str(tmp_path / "datasets"))
    return folder


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


# ---------------------------------------------------------------------------
# the published files


def test_the_table_is_the_canonical_view_and_the_manifest_describes_it(study, published):
    db, suite = study
    table = pd.read_parquet(published / "measurements.parquet")
    want = read_canonical(db).sort_values(SORT).reset_index(drop=True)
    got = table.drop(columns="config_hash").sort_values(SORT).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)  # the view's columns, in its order
    m = _manifest(published)
    assert m["format"] == "qidlab-dataset/1" and m["name"] == "synth-study" and m["description"] == "synthetic"
    files = m["files"]
    assert files["measurements"]["sha256"] == file_sha256(published / "measurements.parquet")
    assert files["measurements"]["rows"] == m["counts"]["measurements"] == len(want) == 240
    assert m["counts"] == {"measurements": 240, "references": 0, "checkpoints": 20, "suites": 1, "models": 4,
                           "eval_sets": 2, "doc_losses": 240 * 4, "task_results": 0}
    assert [e["name"] for e in m["eval_sets"]] == ["web", "wiki"] and m["eval_sets"][0]["source"] == {"path": "web.txt"}
    assert {x["method"]: x["bits"] for x in m["methods"]} == {"gptq": [2.0, 3.0, 4.0], "rtn": [2.0, 3.0, 4.0]}
    assert {c["config_hash"] for c in m["configs"]} == set(table.config_hash)
    assert m["runs"] == [{"code_revision": "abc1234", "versions": {"qidlab": "0.1.0", "torch": "2.13.0"},
                          "measurements": 240}]
    assert m["devices"] == ["cuda: NVIDIA H100 80GB HBM3"]
    assert m["store"]["sha256"] == file_sha256(db)
    (entry,) = m["suites"]
    assert entry["suite"] == "synth" and entry["vocab_size"] == sf.VOCAB
    assert [x["model"] for x in entry["models"]] == ["m0", "m1", "m2", "m3"]
    (found,) = entry["manifests"]
    assert found["file"] == "qidlab-suite.toml" and found["content"]["tokens_per_step"] == sf.TOKENS_PER_STEP
    assert found["sha256"] == file_sha256(suite / "qidlab-suite.toml")


def test_per_document_losses_ship_only_when_small(study, tmp_path, monkeypatch):
    db, _ = study
    small = publish_store(db, "a", tmp_path)
    docs = pd.read_parquet(small / "doc_losses.parquet")
    entry = _manifest(small)["files"]["doc_losses"]
    assert len(docs) == entry["rows"] == 240 * 4 and entry["sha256"] == file_sha256(small / "doc_losses.parquet")
    assert list(docs.columns) == ["suite", "model", "step", "eval_set", "config_hash", "doc_index", "nll_sum",
                                  "n_tokens", "n_bytes"]
    monkeypatch.setattr(publish_module, "DOC_LOSSES_MAX_BYTES", entry["bytes"] - 1)
    big = publish_store(db, "b", tmp_path)
    entry = _manifest(big)["files"]["doc_losses"]
    assert not (big / "doc_losses.parquet").exists() and entry["path"] is None and entry["rows"] == 960
    assert entry["reason"].startswith("left out:")
    assert (publish_store(db, "c", tmp_path, doc_losses="always") / "doc_losses.parquet").exists()
    assert _manifest(publish_store(db, "d", tmp_path, doc_losses="never"))["files"]["doc_losses"]["reason"] == \
        "left out on request"


def test_publishing_again_gives_the_same_files_and_replaces_only_a_data_set(study, tmp_path):
    db, _ = study
    first = publish_store(db, "x", tmp_path)
    sums = {p.name: file_sha256(p) for p in first.iterdir()}
    again = publish_store(db, "x", tmp_path)
    assert {p.name: file_sha256(p) for p in again.iterdir()} == sums
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temporary folder left behind
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(QidlabError, match="exists and is not a qidlab data set"):
        publish_store(db, "notes", tmp_path)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_bad_input_is_one_error_and_writes_nothing(study, tmp_path, capsys):
    db, _ = study
    for name, problem in (("Big Set", "use lower-case letters"), ("ouyang2024-table1", "taken by a bundled table")):
        with pytest.raises(QidlabError, match=problem):
            publish_store(db, name, tmp_path / "out")
    (tmp_path / "junk.db").write_text("not sqlite " * 100)
    assert main(["store", "publish", str(tmp_path / "junk.db"), "--name", "j", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qidlab: error: ") and "not a readable SQLite store" in err and err.count("\n") == 1
    Store(tmp_path / "empty.db").close()
    with pytest.raises(QidlabError, match="no QiD measurements to publish"):
        publish_store(tmp_path / "empty.db", "e", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_columns_or_fields_the_files_are_what_earlier_versions_wrote(study, tmp_path):
    """The shipped qidlab-gpu-2026 manifest was written before ``columns=`` and ``fields=`` existed:
    a store in nats per token published without them has the same entries and the same units."""
    db, _ = study
    m = _manifest(publish_store(db, "plain", tmp_path))
    old = qidlab.data.manifest("qidlab-gpu-2026")
    assert set(m) - set(old) == {"tasks", "task_configs"}  # added with task results, before columns=
    assert set(old) <= set(m) and "columns" not in m
    assert m["units"] == old["units"] == publish_module.UNITS
    table = pd.read_parquet(tmp_path / "plain" / "measurements.parquet")
    assert list(table.columns) == [*read_canonical(db).columns, "config_hash"]


def _unit_store(db, units):
    """A store of one measurement per checkpoint, each scored in the given ``[scoring] unit``."""
    with Store(db) as store:
        eid = store.eval_set_id(name="web", content_hash="h", n_docs=4, source={"path": "web.txt"})
        for i, unit in enumerate(units):
            cid = store.checkpoint_id(suite="u", model=f"m{i}", step=10, path="/nonexistent", n_params=1000,
                                      n_params_total=1200, tokens=10_000, content_hash=f"c{i}")
            m = sf._measurement(cid, eid, "rtn", 3, 2.0, 0.1)
            config = {**m.config, "scoring": {"unit": unit}} if unit else m.config
            store.add_measurement(replace(m, config=config))
    return db


def test_the_units_say_the_unit_the_measurements_were_scored_in(tmp_path):
    m = _manifest(publish_store(_unit_store(tmp_path / "bpb.db", ["bits_per_byte"] * 2), "bpb", tmp_path))
    assert m["units"]["qid"] == "bits per byte, loss - loss16" and m["units"]["loss16"].startswith("bits per byte")
    assert m["units"]["nll_sum"] == publish_module.UNITS["nll_sum"]  # per-document sums stay nats
    explicit = _manifest(publish_store(_unit_store(tmp_path / "npt.db", ["nats_per_token", None]), "npt", tmp_path))
    assert explicit["units"] == publish_module.UNITS
    with pytest.raises(QidlabError, match=r"several units \(bits_per_byte, nats_per_token\)"):
        publish_store(_unit_store(tmp_path / "mixed.db", ["bits_per_byte", None]), "mixed", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_stores_unit_is_read_as_publishing_reads_it(tmp_path):
    assert read_loss_unit(_unit_store(tmp_path / "bpb.db", ["bits_per_byte"] * 2)) == "bits_per_byte"
    assert read_loss_unit(_unit_store(tmp_path / "npt.db", ["nats_per_token", None])) == "nats_per_token"
    with pytest.raises(QidlabError, match=r"mixed.db: measurements scored in several units"):
        read_loss_unit(_unit_store(tmp_path / "mixed.db", ["bits_per_byte", None]))


def test_checkpoints_of_no_tokens_can_be_left_out_so_that_the_set_loads(tmp_path, monkeypatch):
    db = tmp_path / "zero.db"
    with Store(db) as store:
        eid = store.eval_set_id(name="web", content_hash="h", n_docs=4, source={"path": "web.txt"})
        for step, tokens in ((0, 0), (10, 10_000)):
            cid = store.checkpoint_id(suite="u", model="m", step=step, path="/nonexistent", n_params=1000,
                                      n_params_total=1200, tokens=tokens, content_hash=f"c{step}")
            store.add_measurement(sf._measurement(cid, eid, "rtn", 3, 2.0, 0.1))
    monkeypatch.setenv(qidlab.data.ENV, str(tmp_path / "sets"))
    publish_store(db, "all", tmp_path / "sets")
    with pytest.raises(QidlabError, match="column 'tokens', row 1: 0 must be > 0"):
        qidlab.data.load("all")
    m = _manifest(publish_store(db, "trained", tmp_path / "sets", keep_untrained=False))
    assert m["left_out"]["rows"] == {"measurements": 1, "doc_losses": 4, "tasks": 0}
    assert m["left_out"]["checkpoints"] == ["u/m/step0"] and m["counts"]["measurements"] == 1
    assert list(qidlab.data.load("trained").step) == [10]
    assert set(pd.read_parquet(tmp_path / "sets" / "trained" / "doc_losses.parquet").step) == {10}


def _columns(db):
    """Extra per-checkpoint columns of the synthetic store: one row per measured checkpoint."""
    ck = read_canonical(db)[["suite", "model", "step"]].drop_duplicates().reset_index(drop=True)
    return ck.assign(lr=ck.step * 1e-6, kind=[f"k-{m}" for m in ck.model])


MEANINGS = {"lr": "learning rate of the last update", "kind": "a label"}


def test_extra_columns_are_joined_per_checkpoint_and_described(study, tmp_path, monkeypatch):
    db, _ = study
    cols = _columns(db).sample(frac=1, random_state=0)  # any row order
    published = publish_dataset(db, "cols", tmp_path, columns=cols, column_meanings=MEANINGS,
                                fields={"status": "partial", "design": {"sizes": 4}})
    table = pd.read_parquet(published.folder / "measurements.parquet")
    plain = pd.read_parquet(publish_store(db, "plain", tmp_path) / "measurements.parquet")
    pd.testing.assert_frame_equal(table.drop(columns=["lr", "kind"]), plain)  # same rows, same order
    assert list(table.columns[-2:]) == ["lr", "kind"]
    assert (table.lr == table.step * 1e-6).all() and (table.kind == "k-" + table.model).all()
    m = published.manifest
    assert m["units"]["lr"] == MEANINGS["lr"] and m["units"]["kind"] == "a label"
    assert m["columns"] == {"joined_on": ["suite", "model", "step"], "extra": ["lr", "kind"], "checkpoints": 20}
    assert m["status"] == "partial" and m["design"] == {"sizes": 4}
    assert set(m) - {"status", "design"} <= set(publish_module.WRITTEN)
    assert m["files"]["measurements"]["sha256"] == file_sha256(published.folder / "measurements.parquet")
    monkeypatch.setenv(qidlab.data.ENV, str(tmp_path))
    loaded = qidlab.data.load("cols")
    assert {"lr", "kind"} <= set(loaded.columns) and len(loaded) == 240


def test_a_primary_where_names_the_rows_of_the_laws_on_any_column(study, tmp_path, monkeypatch):
    db, _ = study
    where = ["kind=k-m0,k-m1", "lr>=0.01"]
    m = publish_dataset(db, "w", tmp_path, columns=_columns(db), column_meanings=MEANINGS,
                        primary={"method": "gptq", "where": where}).manifest
    assert m["primary"] == {"method": "gptq", "where": where}
    monkeypatch.setenv(qidlab.data.ENV, str(tmp_path))
    study = load_study("w", options=ShowOptions(bootstrap=0))
    assert study.where == tuple(where) and set(study.frame.model) == {"m0", "m1"}
    kept = study.all_rows.kind.isin(["k-m0", "k-m1"]) & (study.all_rows.lr >= 0.01)
    assert (study.frame.lr >= 0.01).all() and len(study.frame) == kept.sum() < len(study.all_rows)
    assert set(study.all_rows.model) == {"m0", "m1", "m2", "m3"}  # what the schedule figures see
    for bad, problem in (("kind=k-m0", "a list of conditions"), (["kind~1"], "expects COLUMN=V1,V2"),
                         (["size=1"], "no column 'size' in the table")):
        with pytest.raises(QidlabError, match=re.escape(f"primary where") + ".*" + re.escape(problem)):
            publish_dataset(db, "bad", tmp_path / "bad", columns=_columns(db), column_meanings=MEANINGS,
                            primary={"where": bad})
    assert not (tmp_path / "bad").exists()


def test_bad_extra_columns_are_one_error_and_write_nothing(study, tmp_path, capsys):
    db, _ = study
    cols = _columns(db)
    stray = pd.DataFrame([{"suite": "synth", "model": "m9", "step": 1000, "lr": 0.1, "kind": "x"}])
    cases = [
        (pd.concat([cols, cols.iloc[:1]]), MEANINGS, "2 rows share their keys, e.g. suite 'synth', model 'm0'"),
        (pd.concat([cols, stray]), MEANINGS, "1 rows match no measured checkpoint, e.g. suite 'synth', model 'm9'"),
        (cols.iloc[1:], MEANINGS, "no row for 1 measured checkpoints"),
        (cols, {"lr": "rate"}, "no meaning given for 'kind'"),
        (cols, {**MEANINGS, "decay": "?"}, "'decay' is not an extra column"),
        (cols.assign(tokens=1), {**MEANINGS, "tokens": "D"}, "'tokens' is already a column of the measurements"),
        (cols.drop(columns="step"), MEANINGS, "needs the key columns suite, model, step"),
        (cols.assign(step=cols.step + 0.5), MEANINGS, "is not an integer"),
    ]
    for frame, meanings, problem in cases:
        with pytest.raises(QidlabError, match=re.escape(problem)) as err:
            publish_dataset(db, "bad", tmp_path / "out", columns=frame, column_meanings=meanings)
        assert "\n" not in str(err.value)
    with pytest.raises(QidlabError, match="'units' is written by publishing itself"):
        publish_dataset(db, "bad", tmp_path / "out", fields={"units": {}})
    assert not (tmp_path / "out").exists()


def test_a_primary_slice_is_what_figures_draw_by_default(study, tmp_path, monkeypatch, capsys):
    db, _ = study
    table = read_canonical(db)
    eval_set, method = sorted(table.eval_set.unique())[-1], sorted(table.method.unique())[-1]
    monkeypatch.setenv(qidlab.data.ENV, str(tmp_path / "sets"))
    assert main(["store", "publish", str(db), "--name", "prim", "--out", str(tmp_path / "sets"),
                 "--primary", f"eval_set={eval_set}", f"method={method}"]) == 0
    assert _manifest(tmp_path / "sets" / "prim")["primary"] == {"eval_set": eval_set, "method": method}
    chosen = load_study("prim", options=ShowOptions(bootstrap=0))
    assert (chosen.eval_set, chosen.method) == (eval_set, method)  # not the most measured / first by name
    other = sorted(table.method.unique())[0]
    assert load_study("prim", options=ShowOptions(bootstrap=0, method=other)).method == other  # the user's choice wins
    for primary, problem in ((["size=1"], "unknown key 'size'"), (["method=gptq-x"], "primary method='gptq-x': not in"),
                             (["suite=nope"], "primary suite='nope': not in")):
        with pytest.raises(QidlabError, match=re.escape(problem)):
            publish_store(db, "bad", tmp_path / "bad", primary=dict(p.split("=") for p in primary))
    assert not (tmp_path / "bad" / "bad").exists()


def test_the_command_says_whether_the_per_document_losses_were_shipped(study, tmp_path, capsys):
    db, _ = study
    out = tmp_path / "sets"
    assert main(["store", "publish", str(db), "--name", "all", "--out", str(out)]) == 0
    rows = _manifest(out / "all")["files"]["doc_losses"]["rows"]
    assert f"{rows} per-document losses (" in capsys.readouterr().out
    assert main(["store", "publish", str(db), "--name", "none", "--out", str(out), "--doc-losses", "never"]) == 0
    assert "per-document losses not shipped (left out on request)" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# loading by name


def test_a_data_set_loads_by_name_or_folder_and_is_checked(study, published, tmp_path):
    db, _ = study
    assert qidlab.data.datasets()["synth-study"] == published and "synth-study" in qidlab.data.names()
    by_name = qidlab.data.load("synth-study")
    assert len(by_name) == 240 and set(by_name.eval_set) == {"web", "wiki"}
    pd.testing.assert_frame_equal(qidlab.data.load(str(published)), by_name)
    assert qidlab.data.resolve("synth-study") == published / "measurements.parquet"
    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    table = pd.read_parquet(copy / "measurements.parquet")
    table.loc[0, "qid"] *= 2
    table.to_parquet(copy / "measurements.parquet", index=False)
    with pytest.raises(QidlabError, match="sha256 differs from the manifest's"):
        qidlab.data.load(str(copy))
    with pytest.raises(QidlabError, match=r"'synth-studdy': no such file or bundled data set \(have: .*synth-study"):
        qidlab.data.load("synth-studdy")


def test_fit_plot_and_report_take_a_data_set_name(published, tmp_path, capsys):
    capsys.readouterr()
    assert main(["fit", "synth-study", "--law", "ouyang2024", "--holdout", "", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fit = doc["fits"][0]
    assert doc["data"]["path"] == str(published / "measurements.parquet") and fit["n"] == 240
    assert fit["params"]["gamma"] == pytest.approx(sf.TRUTH["gamma"], rel=0.1)
    assert main(["plot", "fig2", "synth-study", "--out", str(tmp_path / "f.png"), "--bootstrap", "0", "--dpi", "30"]) == 0
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    study = load_study("synth-study", options=ShowOptions(bootstrap=0))
    assert study.vocab_size() == (sf.VOCAB, "the data set's manifest")
    assert list(study.store_info["eval_sets"].name) == ["web", "wiki"]
    assert study.source["dataset"] == "synth-study" and len(study.checkpoints) == 20
    with pytest.raises(QidlabError, match="no such store or data set"):
        load_study(tmp_path / "missing.db")


def test_report_reads_the_shipped_data_set_by_default(tmp_path, capsys):
    out = tmp_path / "r"
    capsys.readouterr()
    assert main(["report", "--out", str(out), "--bootstrap", "0", "--dpi", "30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    m = qidlab.data.manifest(qidlab.data.DEFAULT)
    assert doc["store"]["dataset"] == qidlab.data.DEFAULT and "fit-ouyang2024.json" in doc["fits"]
    assert doc["store"]["sha256"] == m["files"]["measurements"]["sha256"]
    html = (out / "report.html").read_text()
    assert f"qidlab report: {qidlab.data.DEFAULT}" in html
    for e in m["eval_sets"]:  # eval sets and code revisions come from the manifest
        assert f"{e['name']}: {e['n_docs']} documents, sha256 {e['content_hash'][:12]}" in html
    assert all(f"code {r['code_revision']}" in html for r in m["runs"])


def test_the_default_input_is_the_shipped_data_set(capsys):
    capsys.readouterr()
    assert qidlab.data.DEFAULT in qidlab.data.datasets(), "the default data set ships inside the package"
    assert main(["fit", "--law", "ouyang2024", "--holdout", "", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"]["path"] == str(qidlab.data.path(qidlab.data.DEFAULT))


def test_a_superseded_data_set_still_loads_with_one_line_saying_by_what(capsys):
    old, entry = next(iter(qidlab.data.SUPERSEDED.items()))
    assert old in qidlab.data.datasets() and entry["by"] in qidlab.data.datasets() and old != qidlab.data.DEFAULT
    capsys.readouterr()
    assert main(["fit", old, "--law", "ouyang2024", "--holdout", "", "--where", "suite=en", "--json"]) == 0
    out = capsys.readouterr()
    notes = [line for line in out.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"{old} is superseded by {entry['by']}" in notes[0] and entry["why"] in notes[0]
    assert json.loads(out.out)["data"]["rows"] > 0  # the fit ran on it
    assert main(["fit", entry["by"], "--law", "ouyang2024", "--holdout", "", "--json"]) == 0
    assert "superseded" not in capsys.readouterr().err
    assert qidlab.data.superseded_note("missing-name") is None


@pytest.mark.parametrize("name", sorted(qidlab.data.datasets()))
def test_every_shipped_data_set_matches_its_manifest(name):
    folder = qidlab.data.datasets()[name]
    m = qidlab.data.manifest(name)
    assert m["name"] == name == folder.name and m["format"] == "qidlab-dataset/1"
    for entry in m["files"].values():
        if entry.get("path"):
            assert file_sha256(folder / entry["path"]) == entry["sha256"]
            assert len(pd.read_parquet(folder / entry["path"])) == entry["rows"]
    table = qidlab.data.load(name)
    assert len(table) == m["counts"]["measurements"] and (table.tokens > 0).any()
    assert set(table.method) == {x["method"] for x in m["methods"]}
    assert set(table.eval_set) <= {e["name"] for e in m["eval_sets"]}
    assert m["runs"] and all(r["code_revision"] for r in m["runs"])
