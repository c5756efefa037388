"""The store: idempotent rows, one transaction per measurement, the canonical view."""

import sqlite3

import pytest

from qidlab.errors import QidlabError
from qidlab.store import Measurement, Store, config_hash, read_canonical


def _measurement(ckpt, es, **over):
    base = dict(checkpoint_id=ckpt, eval_set_id=es, method="rtn", bits=3, config={"quantization": {"bits": 3}},
                loss16=3.0, loss=3.2, qid=0.2, qid_ci=(0.18, 0.22), n_tokens=30, versions={"qidlab": "0"},
                code_revision="abc", doc_nll=[10.0, 20.0, 66.0], doc_tokens=[10, 10, 10], doc_bytes=[40, 41, 42],
                group_size=64)
    base.update(over)
    return Measurement(**base)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.db") as s:
        yield s


def _ids(store):
    ck = store.checkpoint_id(suite="s", model="m", step=64, path="/x", n_params=1000, n_params_total=1500,
                             tokens=64 * 2048, content_hash="h1")
    es = store.eval_set_id(name="heldout", content_hash="e1", n_docs=3, source={"path": "eval.txt"})
    return ck, es


def test_rows_are_idempotent(store):
    ck, es = _ids(store)
    assert _ids(store) == (ck, es)
    first = store.add_measurement(_measurement(ck, es))
    assert first is not None
    assert store.add_measurement(_measurement(ck, es)) is None  # same job again: no duplicate
    assert store.count() == 1 and store.count("doc_losses") == 3
    assert store.add_measurement(_measurement(ck, es, config={"quantization": {"bits": 4}}, bits=4)) is not None
    assert store.count() == 2


def test_changed_checkpoint_is_refused(store):
    _ids(store)
    with pytest.raises(QidlabError, match="changed since it was measured"):
        store.checkpoint_id(suite="s", model="m", step=64, path="/x", n_params=1000, n_params_total=1500,
                            tokens=1, content_hash="other")


def test_a_failed_measurement_leaves_nothing(store):
    ck, es = _ids(store)
    with pytest.raises(QidlabError, match="one nll/tokens/bytes triple per document"):
        store.add_measurement(_measurement(ck, es, doc_bytes=[1, 2]))
    bad = _measurement(ck, es, doc_tokens=[10, "ten", 10])  # fails inside the transaction
    with pytest.raises(ValueError):
        store.add_measurement(bad)
    assert store.count() == 0 and store.count("doc_losses") == 0


def test_canonical_view_and_reference_rows(store, tmp_path):
    ck, es = _ids(store)
    store.add_measurement(_measurement(ck, es, method="none", bits=16, qid=0.0, loss=3.0,
                                       config={"quantization": {"method": "none"}}))
    store.add_measurement(_measurement(ck, es))
    table = read_canonical(tmp_path / "s.db")
    assert len(table) == 1  # the 16-bit reference is not a QiD measurement
    row = table.iloc[0]
    assert (row.n_params, row.tokens, row.bits, row.group_size, row.method, row.eval_set) == \
        (1000, 64 * 2048, 3, 64, "rtn", "heldout")
    assert row.qid == pytest.approx(0.2) and row.qid_ci_low == pytest.approx(0.18)


def test_wal_mode_and_hash_stability(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_not_a_store(tmp_path):
    path = tmp_path / "x.db"
    sqlite3.connect(path).execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(QidlabError, match="not a qidlab store"):
        read_canonical(path)


def test_versions_without_package_metadata(monkeypatch):
    """Libraries with no installed metadata (a source checkout, some GPU images) still report a version."""
    from importlib import metadata

    import numpy

    from qidlab import provenance

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provenance.metadata, "version", missing)
    versions = provenance.versions()
    assert versions["numpy"] == numpy.__version__
    assert versions["qidlab"]  # qidlab itself is always imported here
