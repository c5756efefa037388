"""Suite folders as a store remembers them (qidlab.checkpoints.suites): found from stored
checkpoint paths (relative ones also from the store's folder), given ones checked, manifests read
as they are, the vocabulary size from the checkpoints' config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qidlab.checkpoints import suites
from qidlab.errors import QidlabError


@pytest.fixture
def suite(tmp_path):
    """tmp/runs/s/<m0,m1>/step<1,2>/config.json and a manifest naming the suite 'named'."""
    root = tmp_path / "runs" / "s"
    for model in ("m0", "m1"):
        for step in (1, 2):
            folder = root / model / f"step{step}"
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps({"vocab_size": 321}))
    (root / "qidlab-suite.toml").write_text('suite = "named"\ntokens_per_step = 8\n')
    return root


def test_suite_folders_of_stored_paths(suite, tmp_path, monkeypatch):
    stored = [suite / "m0" / "step1", suite / "m1" / "step2", tmp_path / "gone" / "m" / "step1"]
    assert suites.stored_suite_folders(stored) == [suite]  # once; a checkpoint that is gone leads nowhere
    monkeypatch.chdir(tmp_path)
    relative = [Path("s/m0/step1")]  # as a sweep run from the store's folder stores them
    assert suites.stored_suite_folders(relative) == []
    assert suites.stored_suite_folders(relative, tmp_path / "runs") == [tmp_path / "runs" / "s"]
    assert suites.locate("s/m0/step1", tmp_path / "runs") == tmp_path / "runs" / "s" / "m0" / "step1"
    assert suites.locate("/abs/m/step1", tmp_path) == Path("/abs/m/step1")


def test_given_suite_folders_must_exist(suite, tmp_path):
    assert suites.given_suite_folders([suite]) == [suite]
    with pytest.raises(QidlabError, match="no such folder"):
        suites.given_suite_folders([tmp_path / "missing"])


def test_a_suites_manifest_name_and_vocabulary(suite, tmp_path):
    found = suites.suite_manifest(suite)
    assert found["folder"] == "s" and found["file"] == "qidlab-suite.toml"
    assert found["content"] == {"suite": "named", "tokens_per_step": 8} and len(found["sha256"]) == 64
    assert suites.suite_name(suite) == "named"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert suites.suite_manifest(bare) is None and suites.suite_name(bare) == "bare"
    assert suites.vocab_size([], [suite]) == 321
    assert suites.vocab_size([tmp_path / "nothing"], [bare]) is None
    (bare / "config.json").write_text("[1, 2]")  # not an object: skipped, not a crash
    assert suites.vocab_size([bare], [suite]) == 321
    (suite / "qidlab-suite.toml").write_text("suite = ")
    with pytest.raises(QidlabError, match="cannot parse"):
        suites.suite_manifest(suite)
