"""qidlab.files: atomic writes, and one permission policy (the umask's) for everything qidlab writes:
a trained suite, a quantized checkpoint, a report, a figure, a published data set, a corpus."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from tiny_models import single_thread, tiny_corpus

import show_fixtures as sf
from qidlab.cli import main
from qidlab.corpus import build_corpus
from qidlab.files import building, open_atomic, swap_in, write_json, write_text
from qidlab.show import report as report_module
from qidlab.show.figures import save_figure
from qidlab.show.study import ShowOptions, load_study
from qidlab.store import publish_store
from qidlab.train import train_suite

SUITE = """
[suite]
name = "perm"
corpus = "corpus"
seed = 0
tokenizer = 300
seq_len = 32
batch_size = 4
steps = 4
checkpoints = { log_spaced_until = 2, every = 4 }

[[models]]
name = "h16-l1"
hidden = 16
layers = 1
heads = 2
lr = 1e-2
"""


@pytest.fixture
def umask():
    """Restores the process's umask after the test."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by path relative to ``root``."""
    paths = [root, *root.rglob("*")]
    return {p.relative_to(root).as_posix() or ".": stat.S_IMODE(p.stat().st_mode) for p in paths}


def _wrong(root: Path, mask: int) -> dict[str, str]:
    """The paths under ``root`` whose mode is not the umask's (0o777 or 0o666, less ``mask``)."""
    bad = {}
    for rel, mode in _modes(root).items():
        want = (0o777 if (root / rel).is_dir() else 0o666) & ~mask
        if mode != want:
            bad[rel] = f"{mode:o} (want {want:o})"
    return bad


# ---------------------------------------------------------------------------
# the helpers


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    assert path.read_text() == '{\n "x": 1\n}\n'
    with pytest.raises(RuntimeError), open_atomic(path) as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"x": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with building(target) as tmp:
        write_text(tmp / "a.txt", "one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), building(target) as tmp:
        write_text(tmp / "b.txt", "two")
        raise RuntimeError("stopped")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with building(target) as tmp:
        write_text(tmp / "b.txt", "two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left


def test_swap_in_puts_the_old_folder_back_when_the_rename_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    write_text(target / "kept.txt", "old")
    with pytest.raises(OSError):
        swap_in(tmp_path / "missing", target)
    assert (target / "kept.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---------------------------------------------------------------------------
# everything qidlab writes gets the umask's permissions


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The show stage's synthetic study (store, suite), and its report's files rendered once."""
    root = tmp_path_factory.mktemp("synthetic")
    suite = sf.write_suite(root)
    db = sf.write_store(root / "study.db", suite)
    files = report_module.render(load_study(db, options=ShowOptions(bootstrap=10, dpi=30)))
    return db, files


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_qidlab_writes_get_the_umask_permissions(mask, umask, synthetic, tmp_path, monkeypatch):
    import matplotlib.figure

    db, rendered = synthetic
    umask(mask)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in tiny_corpus(120)))
    build_corpus("files", tmp_path / "work" / "corpus", files=[docs])
    (tmp_path / "work" / "suite.toml").write_text(SUITE)
    with single_thread():
        steps = train_suite(tmp_path / "work" / "suite.toml", tmp_path / "suites", threads=1)
    suite = tmp_path / "suites" / "perm"
    for name in ("qidlab-suite.toml", "h16-l1/train-log.csv", "h16-l1/weight-dynamics.json", "h16-l1/step4"):
        assert (suite / name).exists()
    assert main(["quantize", str(steps[-1]), "--method", "rtn", "--bits", "4", "--out", str(tmp_path / "q"),
                 "--json"]) == 0
    monkeypatch.setattr(report_module, "render", lambda study: rendered)  # rendered once for both umasks
    report_module.build_report(db, tmp_path / "report")
    figure = save_figure(matplotlib.figure.Figure(figsize=(1, 1)), tmp_path / "figure.png", dpi=20)
    published = publish_store(db, "perm", tmp_path / "datasets")
    assert {p.name for p in (tmp_path / "report").iterdir()} == set(rendered)
    for root in (tmp_path / "work" / "corpus", suite, tmp_path / "q", tmp_path / "report", published):
        assert _wrong(root, mask) == {}, root
    assert stat.S_IMODE(figure.stat().st_mode) == 0o666 & ~mask


def test_read_json_object_names_the_file_in_one_line(tmp_path):
    from qidlab.errors import QidlabError
    from qidlab.files import read_json_object

    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json_object(good) == {"a": 1}
    for name, text, problem in (("bad.json", "{not json", "not valid JSON"), ("list.json", "[1, 2]", "expected a JSON object")):
        (tmp_path / name).write_text(text)
        with pytest.raises(QidlabError, match=problem) as err:
            read_json_object(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
