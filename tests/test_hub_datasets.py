"""Eval sets and calibration through Hugging Face ``datasets`` (issue 13, item 2), offline for real.

* local files read by ``datasets``' own builders (dataset = "parquet" / "json" + data_files), with
  and without streaming;
* a Hub dataset id read back from an ``HF_DATASETS_CACHE`` in the layout ``load_dataset`` leaves after
  reading a Hub dataset (``ORG___NAME/<config>/0.0.0/<commit>/`` with ``dataset_info.json`` and the
  Arrow files), written by ``datasets``' own Parquet builder, then read with ``HF_HUB_OFFLINE=1``
  through ``load_dataset("ORG/NAME", config)`` (its offline "latest cached version" path).

Not tested here (no network): the online path of a Hub id (``load_dataset`` listing the repo's
files and downloading them) and streaming a Hub dataset over HTTP; the same ``load_dataset`` calls
are made, only the source of the files differs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_hub import STUDY, hub_cache, hub_source, write_study  # noqa: F401 (fixtures)
from tiny_models import tiny_corpus

from qidlab.cli import main
from qidlab.documents import CalibrationSpec, calibration_identity, docs_hash, seeded_sample
from qidlab.errors import QidlabError
from qidlab.evaluate import load_eval_set
from qidlab.hubdata import DatasetSource
from qidlab.sweep import load_study, run_study

SRC = str(Path(__file__).resolve().parents[1] / "src")


def pages(n: int, seed: int) -> list[str]:
    """Documents of a few hundred characters (some blank, as a real split has)."""
    docs = [" ".join(tiny_corpus(3, seed=seed + i)) for i in range(n)]
    return [("" if i % 7 == 3 else d) for i, d in enumerate(docs)]


@pytest.fixture
def ds_cache(tmp_path, monkeypatch):
    """An empty HF_DATASETS_CACHE for this test (``datasets`` caches what its builders read), offline."""
    import datasets

    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def cache_hub_dataset(cache: Path, repo: str, config: str, split: str, table: pa.Table, work: Path) -> None:
    """Put ``table`` into ``cache`` as ``load_dataset(repo, config, split=split)`` leaves a Hub dataset:
    ``datasets``' Parquet builder prepares it (Arrow file + dataset_info.json) under the dataset's name;
    the folder is then named ``ORG___NAME`` as for a Hub id (the builder refuses a repo_id for local
    files, which is the one step done by hand)."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet

    work.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / f"{split}.parquet")
    org, name = repo.split("/")
    builder = Parquet(cache_dir=str(cache), data_files=DataFilesDict.from_patterns({split: [str(work / f"{split}.parquet")]}),
                      dataset_name=name, config_name=config, config_id=config, hash="0" * 40)
    builder.download_and_prepare()
    (cache / name).rename(cache / f"{org}___{name}")


def test_parquet_and_json_through_datasets_match_the_local_reader(tmp_path, ds_cache):
    """The same file read by qidlab (source =) and by datasets (dataset = "parquet"/"json"): the same
    seeded sample and content hash; the text field is honoured by both."""
    docs = pages(40, seed=0)
    pq.write_table(pa.table({"id": list(range(40)), "content": docs}), tmp_path / "web.parquet")
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"content": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    local = load_eval_set(tmp_path / "web.parquet", n_docs=10, seed=3, text_field="content")
    for builder, file in (("parquet", "web.parquet"), ("json", "web.jsonl")):
        es = load_eval_set(DatasetSource(builder, data_files=(str(tmp_path / file),), text_field="content"),
                           n_docs=10, seed=3)
        assert es.docs == local.docs and es.content_hash == local.content_hash
        assert es.source["dataset"] == builder and es.source["text_field"] == "content"
    assert local.docs == seeded_sample([d for d in docs if d.strip()], 10, 3)
    with pytest.raises(QidlabError, match=r"no field 'text' \(fields: id, content; set text_field\)"):
        load_eval_set(DatasetSource("parquet", data_files=(str(tmp_path / "web.parquet"),)), n_docs=10)


def test_streaming_takes_a_seeded_sample_of_the_shards(tmp_path, ds_cache):
    """Streaming four JSONL shards: n_docs non-blank documents of the set, the same for the same seed,
    another for another seed."""
    shards = []
    corpus = set()
    for k in range(4):
        docs = pages(30, seed=100 * k)
        corpus |= {d for d in docs if d.strip()}
        shards.append(str(tmp_path / f"shard{k}.jsonl"))
        Path(shards[-1]).write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    src = DatasetSource("json", data_files=tuple(shards), text_field="content", streaming=True, shuffle_buffer=8)
    a = load_eval_set(src, n_docs=12, seed=0)
    assert len(a.docs) == 12 and set(a.docs) <= corpus and not a.complete
    assert load_eval_set(src, n_docs=12, seed=0).content_hash == a.content_hash
    assert load_eval_set(src, n_docs=12, seed=1).docs != a.docs
    assert a.source["streaming"] is True and a.source["n_available"] is None


def test_a_hub_dataset_id_read_back_offline(tmp_path, ds_cache):
    """WikiText-2 in lm-evaluation-harness's document-level form (config wikitext-2-raw-v1, split test,
    field page), cached under a Hub id and read with HF_HUB_OFFLINE=1."""
    docs = pages(20, seed=7)
    cache_hub_dataset(ds_cache, "tiny-org/wikitext_document_level", "wikitext-2-raw-v1", "test",
                      pa.table({"page": docs}), tmp_path / "files")
    src = DatasetSource("tiny-org/wikitext_document_level", config="wikitext-2-raw-v1", split="test", text_field="page")
    es = load_eval_set(src, n_docs=62)
    assert es.docs == [d for d in docs if d.strip()] and es.complete and es.name == "wikitext_document_level"
    with pytest.raises(QidlabError, match=r"no split 'train'.*set split"):
        load_eval_set(DatasetSource(src.dataset, config=src.config, split="train", text_field="page"))
    with pytest.raises(QidlabError, match="tiny-org/nothing: not in the datasets cache and offline"):
        load_eval_set(DatasetSource("tiny-org/nothing", split="test"))


def test_calibration_from_a_dataset_is_the_seeded_sample(tmp_path, ds_cache):
    docs = pages(50, seed=3)
    pq.write_table(pa.table({"content": docs}), tmp_path / "calib.parquet")
    src = DatasetSource("parquet", data_files=(str(tmp_path / "calib.parquet"),), text_field="content")
    spec = CalibrationSpec(source=src, n_samples=4, seq_len=16, seed=2, n_docs=20)
    assert calibration_identity(spec) == "sha256:" + docs_hash(seeded_sample([d for d in docs if d.strip()], 20, 2))
    (tmp_path / "calib.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    local = CalibrationSpec(source=tmp_path / "calib.jsonl", text_field="content")
    assert calibration_identity(local) == "sha256:" + docs_hash([d for d in docs if d.strip()])


DATA_STUDY = STUDY.replace('''[[eval_sets]]
name = "heldout"
source = "EVAL"
n_docs = 6
''', '''[[eval_sets]]
name = "web"
dataset = "json"
data_files = ["web.jsonl"]
text_field = "content"
n_docs = 6
seed = 1

[[eval_sets]]
name = "local"
source = "web.jsonl"
text_field = "content"
n_docs = 5

[calibration]
dataset = "parquet"
data_files = "calib.parquet"
text_field = "content"
n_docs = 10
seed = 2
n_samples = 4
seq_len = 32
''').replace('repos = ["tiny-org/neox-a", "tiny-org/neox-b"]', 'repos = ["tiny-org/neox-a"]').replace(
    "steps = [20, 40, 60]", "steps = [60]").replace('method = "rtn"', 'method = "gptq"')


def write_data(tmp_path: Path) -> tuple[list[str], list[str]]:
    web, calib = pages(20, seed=11), pages(30, seed=12)
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"content": d, "n": i}) + "\n" for i, d in enumerate(web)))
    pq.write_table(pa.table({"content": calib}), tmp_path / "calib.parquet")
    return [d for d in web if d.strip()], [d for d in calib if d.strip()]


def test_a_study_sweeps_eval_sets_and_calibration_from_datasets(hub_source, hub_cache, ds_cache, tmp_path, one_thread):
    """A Hub checkpoint, GPTQ calibrated on a data set, two eval sets (one through datasets, one local
    with text_field): the store's eval sets and calibration hash are those of the seeded samples."""
    web, calib = write_data(tmp_path)
    study = load_study(write_study(hub_source, tmp_path, DATA_STUDY))
    summary = run_study(study, progress=False)
    assert summary.failed == [] and summary.measured == 2 * 2  # (16-bit + gptq) x 2 eval sets
    with sqlite3.connect(study.store) as conn:
        sets = {name: (h, json.loads(src)) for name, h, src in
                conn.execute("SELECT name, content_hash, source_json FROM eval_sets")}
        configs = [json.loads(c) for (c,) in conn.execute("SELECT config_json FROM measurements WHERE method='gptq'")]
    assert sets["web"][0] == docs_hash(seeded_sample(web, 6, 1))
    assert sets["web"][1]["dataset"] == "json" and sets["web"][1]["text_field"] == "content"
    assert sets["local"][0] == docs_hash(seeded_sample(web, 5, 0)) and sets["local"][1]["text_field"] == "content"
    assert {c["calibration"]["content_hash"] for c in configs} == {"sha256:" + docs_hash(seeded_sample(calib, 10, 2))}


def sweep_error(capsys, path: Path) -> str:
    capsys.readouterr()
    assert main(["sweep", str(path), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert not (path.parent / "hub.db").exists()  # nothing written
    return err.strip().removeprefix("qidlab: error: ")


BAD = [
    (('text_field = "content"\nn_docs = 6', 'text_field = "body"\nn_docs = 6'),
     "eval set 'web': dataset json[train] has no field 'body' (fields: content, n; set text_field)"),
    (('dataset = "json"\ndata_files = ["web.jsonl"]', 'dataset = "tiny-org/nowhere"'),
     "dataset tiny-org/nowhere: not in the datasets cache and offline"),
    (('data_files = ["web.jsonl"]\n', ''), "dataset 'json' reads files: give data_files"),
    (('name = "local"\nsource = "web.jsonl"', 'name = "local"\nsource = "web.jsonl"\ndataset = "json"'),
     "eval_sets[1] needs either 'source' (a local file or folder) or 'dataset'"),
    (('text_field = "content"\nn_docs = 10', 'text_field = "content"\nstreaming = true'),
     "[calibration] streaming needs n_docs"),
    (('n_docs = 6\nseed = 1', 'n_docs = 6\nseed = 1\nsplit = "validation"'), "no split 'validation'"),
    (('data_files = "calib.parquet"', 'data_files = "missing.parquet"'), "missing.parquet"),
    (('n_docs = 6\nseed = 1', 'n_docs = 6\nseed = 1\nsplits = "train"'), "did you mean split"),
    (('source = "web.jsonl"\ntext_field = "content"', 'source = "web.jsonl"'),
     "web.jsonl:1: no field 'text' (set text_field to choose another)"),
]


@pytest.mark.parametrize("edit, message", BAD, ids=["field", "unknown-offline", "no-data-files", "source-and-dataset",
                                                    "streaming-calibration", "split", "missing-file", "typo",
                                                    "local-field"])
def test_bad_dataset_input_is_one_line(hub_source, hub_cache, ds_cache, tmp_path, capsys, edit, message):
    write_data(tmp_path)
    text = DATA_STUDY.replace(*edit)
    assert text != DATA_STUDY
    assert message in sweep_error(capsys, write_study(hub_source, tmp_path, text))


def test_without_the_datasets_package_the_line_names_the_extra(hub_source, hub_cache, ds_cache, tmp_path, capsys,
                                                                 monkeypatch):
    write_data(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    message = sweep_error(capsys, write_study(hub_source, tmp_path, DATA_STUDY))
    assert "needs the datasets package: pip install 'qidlab[hub]'" in message


def test_hub_dataset_in_a_study_through_the_environment(hub_source, hub_cache, ds_cache, tmp_path):
    """A fresh process reading HF_DATASETS_CACHE / HF_DATASETS_OFFLINE as a user sets them: the dry run
    of a study whose eval set is a cached Hub dataset (WikiText-2's document-level form)."""
    cache_hub_dataset(ds_cache, "tiny-org/wikitext_document_level", "wikitext-2-raw-v1", "test",
                      pa.table({"page": pages(10, seed=5)}), tmp_path / "files")
    text = STUDY.replace('source = "EVAL"\nn_docs = 6', 'dataset = "tiny-org/wikitext_document_level"\n'
                         'config = "wikitext-2-raw-v1"\nsplit = "test"\ntext_field = "page"\nn_docs = 62')
    path = write_study(hub_source, tmp_path, text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache),
           "HF_DATASETS_CACHE": str(ds_cache), "PYTHONPATH": os.pathsep.join([SRC, str(Path(__file__).parent)])}
    done = subprocess.run([sys.executable, "-m", "qidlab", "sweep", str(path), "--dry-run", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["eval_sets"] == ["heldout"] and doc["total"] == 6 * 2
    assert doc["unavailable"] == []  # the cached data set was read (a missing one would be listed here)


# ---------------------------------------------------------------------------
# presets: qidlab study init


@pytest.fixture
def nothing_cached(tmp_path, monkeypatch):
    """Offline, with empty Hugging Face caches: no repo, revision or data set of a preset is there."""
    import datasets
    from huggingface_hub import constants

    for var, sub in (("HF_HUB_CACHE", "hub"), ("HF_DATASETS_CACHE", "datasets")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")


PAPER_STEPS = [512, 1000, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 20000, 24000, 29000, 36000, 43000, 57000,
               71000, 86000, 93000, 95000, 98000]  # Ouyang et al. 2024, Appendix A.1
PYTHIA = [f"EleutherAI/pythia-{s}" for s in ("160m", "410m", "1b", "2.8b", "6.9b", "12b")]


def test_the_paper_preset_expands_offline_to_the_papers_study(tmp_path, capsys, nothing_cached):
    """`qidlab study init ouyang2024` then `qidlab sweep --dry-run` with nothing cached and no network:
    6 sizes x 20 steps x (16-bit + GPTQ 2/3/4) x 1 eval set, every revision to download, the data set
    and the reference tokenizer listed as not available here; nothing written."""
    out = tmp_path / "study.toml"
    assert main(["study", "init", "ouyang2024", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sweep", str(out), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ckpts = doc["checkpoints"]
    assert len(ckpts) == 6 * 20 and doc["total"] == 6 * 20 * 4 * 1 == doc["to_measure"]
    assert sorted({c["suite"] for c in ckpts}) == sorted(PYTHIA)
    assert all(sorted(c["step"] for c in ckpts if c["suite"] == r) == PAPER_STEPS for r in PYTHIA)
    assert all(c["tokens"] == c["step"] * 1024 * 2048 and c["cached"] is False and c["download_bytes"] is None
               for c in ckpts)
    assert [c.split()[:2] for c in doc["configs"]] == [["16-bit"], ["gptq", "2-bit"], ["gptq", "3-bit"],
                                                        ["gptq", "4-bit"]]
    assert doc["eval_sets"] == ["refinedweb"]
    assert any("tiiuae/falcon-refinedweb: streaming reads the Hub" in u for u in doc["unavailable"])
    assert any(u.startswith("reference tokenizer") for u in doc["unavailable"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # no store, no caches written
    study = load_study(out)
    assert study.scoring["unit"] == "nats_per_ref_token" and study.hub.keep is False
    assert study.eval_sets[0].source.text_field == "content" and study.calibration.source.streaming


def test_study_init_refuses_to_overwrite_and_suggests_a_preset(tmp_path, capsys):
    out = tmp_path / "study.toml"
    out.write_text("mine")
    assert main(["study", "init", "olmo2", "--out", str(out)]) == 2
    assert "exists: choose another --out or pass --force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["study", "init", "olmo2", "--out", str(out), "--force"]) == 0
    study = load_study(out)
    assert [(r.name, r.step, r.tokens) for r in study.hub.revisions][0] == ("stage1-step1000-tokens5B", 1000, 5 * 10**9)
    assert main(["study", "init", "ouyang", "--out", str(tmp_path / "x.toml")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'ouyang'" in err and "did you mean ouyang2024?" in err
    assert not (tmp_path / "x.toml").exists()
