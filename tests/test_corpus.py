"""qidlab.corpus: the stdlib recipe, duplicates, the split, the manifest, the cache, errors."""

import hashlib
import json

import pytest

from qidlab.corpus import build_corpus, load_manifest, read_documents
from qidlab.corpus.build import split_indices
from qidlab.errors import QidlabError


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    return build_corpus("stdlib", tmp_path_factory.mktemp("stdlib"))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stdlib_recipe_has_no_duplicates_and_a_clean_split(stdlib_corpus):
    m = stdlib_corpus
    train, evl = read_documents(m.path, "train"), read_documents(m.path, "eval")
    assert len(train) == m.documents["train"] > 100 and len(evl) == m.documents["eval"] > 0
    assert len(set(train)) == len(train) and len(set(evl)) == len(evl)
    assert not set(train) & set(evl)
    assert m.documents["read"] == m.documents["train"] + m.documents["eval"] + m.documents["empty"] \
        + m.documents["duplicates"]
    assert m.licenses == ["PSF-2.0"] and m.sources[0]["kind"] == "stdlib"
    assert not any("/test/" in s for s in m.sources[0]["skipped_not_utf8"])
    assert m.bytes["train"] == sum(len(d.encode()) for d in train)
    assert abs(m.documents["eval"] - 0.05 * (m.documents["train"] + m.documents["eval"])) <= 1


def test_manifest_hashes_match_the_files(stdlib_corpus):
    m = load_manifest(stdlib_corpus.path)
    assert m == stdlib_corpus
    for name, info in m.files.items():
        f = m.path / name
        assert _sha(f) == info["sha256"] and f.stat().st_size == info["bytes"]
    doc = json.loads((m.path / "manifest.json").read_text())
    assert doc["seed"] == 0 and doc["recipe"] == "stdlib" and set(doc["files"]) == {"train.jsonl", "eval.jsonl"}


def test_rebuild_reuses_and_a_damaged_build_is_redone(stdlib_corpus):
    again = build_corpus("stdlib", stdlib_corpus.path)
    assert again.reused and again == stdlib_corpus
    (stdlib_corpus.path / "eval.jsonl").write_text("damaged\n")
    fixed = build_corpus("stdlib", stdlib_corpus.path)
    assert not fixed.reused and fixed == stdlib_corpus
    with pytest.raises(QidlabError, match="another recipe, seed"):
        build_corpus("stdlib", stdlib_corpus.path, seed=1)


def test_files_recipe_removes_exact_duplicates(tmp_path):
    src = tmp_path / "docs.jsonl"
    docs = [f"document number {i % 7}" for i in range(20)] + ["   ", "unique"]
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "a.txt").write_text("unique")  # duplicate of a JSONL document across sources
    (folder / "b.txt").write_text("from a folder")
    m = build_corpus("files", tmp_path / "out", files=[src, folder], seed=3, eval_fraction=0.25)
    assert m.documents == {"read": 24, "empty": 1, "duplicates": 14, "train": 7, "eval": 2}
    everything = read_documents(m.path, "train") + read_documents(m.path, "eval")
    assert sorted(everything) == sorted({*docs[:20], "unique", "from a folder"})
    assert m.licenses == ["unknown"] and [s["kind"] for s in m.sources] == ["jsonl", "folder"]
    assert [(s["documents"], s["empty"], s["duplicates"]) for s in m.sources] == [(22, 1, 13), (2, 0, 1)]


def test_split_is_seeded_and_disjoint():
    tr, ev = split_indices(100, 0.1, seed=5)
    assert (tr, ev) == split_indices(100, 0.1, seed=5) and ev != split_indices(100, 0.1, seed=6)[1]
    assert len(ev) == 10 and sorted(tr + ev) == list(range(100))
    assert split_indices(3, 0.01, 0)[1] != [] and split_indices(3, 0.0, 0) == ([0, 1, 2], [])
    with pytest.raises(QidlabError, match="no training document"):
        split_indices(1, 0.5, 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"recipe": "debian"}, "unknown corpus recipe 'debian'"),
    ({"recipe": "files", "files": ["/nonexistent/x.jsonl"]}, "source does not exist"),
    ({"recipe": "files"}, "needs at least one path"),
    ({"recipe": "stdlib", "eval_fraction": 1.5}, r"`eval_fraction` must be in \[0, 1\]"),
    ({"recipe": "brown", "files": ["x.txt"]}, "recipe 'brown' takes no paths"),
])
def test_a_source_that_cannot_be_had_is_one_clear_error(tmp_path, kwargs, match):
    with pytest.raises(QidlabError, match=match):
        build_corpus(out_dir=tmp_path / "c", **kwargs)


def test_a_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QidlabError, match="not empty"):
        build_corpus("stdlib", tmp_path)
    with pytest.raises(QidlabError, match="not a corpus folder"):
        load_manifest(tmp_path)
