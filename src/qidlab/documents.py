"""Documents, at ground level: reading them, hashing them, and drawing calibration windows from them.

Corpus, evaluate, sweep and the quantize command all read text the same way, so the reading lives
here, below them all:

* ``read_source(path)``: the documents of a text file (blank-line separated), a folder (each file
  one document), JSONL or Parquet (``.gz`` looked through); ``read_path`` also reads a corpus
  folder (its eval split);
* a corpus folder's ``manifest.json`` (``Manifest``, ``load_manifest``) and its splits
  (``read_documents``); ``qidlab.corpus`` builds such folders;
* ``docs_hash(docs)``: the content hash that identifies a document list (eval sets, calibration
  text, a corpus's input);
* ``calibration_ids(tokenizer, spec)``: the (n_samples, seq_len) token windows GPTQ and AWQ
  calibrate on, drawn from a seeded sample of the documents (``CALIBRATION_SAMPLER``), and
  ``calibration_identity`` (the calibration text's content hash);
* ``tokenizer_fingerprint``: what a fast tokenizer does, as a key for caches of its output.

Importing this module loads numpy only; pyarrow and torch are imported by the functions that need them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qidlab.errors import QidlabError
from qidlab.hubdata import DatasetSource, dataset_documents

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


def docs_hash(docs: list[str]) -> str:
    """sha256 over the documents in order; each is fed as its UTF-8 byte length (8 bytes,
    little-endian) followed by its UTF-8 bytes, so document boundaries are part of the hash."""
    digest = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# files, folders, JSONL, Parquet


def _read_text(path: Path) -> str:
    """A UTF-8 text file; gunzipped first when its name ends in ``.gz``."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise QidlabError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QidlabError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _from_text_file(path: Path) -> list[str]:
    """Documents separated by blank lines (lines holding only whitespace count as blank); stripped."""
    return [d.strip() for d in re.split(r"\n[ \t\r\f\v]*\n", _read_text(path))]


def _from_folder(path: Path) -> list[str]:
    """Each file one document, recursively, by sorted relative path; hidden files and folders skipped."""
    files = sorted((f for f in path.rglob("*") if f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(path).parts)),
                   key=lambda f: f.relative_to(path).as_posix())
    return [_read_text(f) for f in files]


def _from_jsonl(path: Path, text_field: str) -> list[str]:
    """One JSON object per line; blank lines and null fields skipped; anything else not a string is an error."""
    docs = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QidlabError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            raise QidlabError(f"{path}:{lineno}: no field {text_field!r} (set `text_field` to choose another)",
                              params=("text_field",))
        value = record[text_field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise QidlabError(f"{path}:{lineno}: field {text_field!r} is {type(value).__name__}, not a string")
        docs.append(value)
    return docs


def _from_parquet(path: Path, text_field: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise QidlabError(f"{path}: not a readable Parquet file ({exc})") from None
    if text_field not in schema.names:
        raise QidlabError(f"{path}: no column {text_field!r} (columns: {', '.join(schema.names)}; "
                          "set `text_field` to choose another)", params=("text_field",))
    column = pq.read_table(path, columns=[text_field]).column(text_field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise QidlabError(f"{path}: column {text_field!r} is {column.type}, not text")
    return [d for d in column.to_pylist() if d is not None]


def read_source(path: Path, text_field: str = "text") -> tuple[str, list[str]]:
    """``(kind, documents)`` of a file or folder, the kind by its name (a ``.gz`` suffix is
    looked through): ``folder``, ``jsonl`` (``*.jsonl``/``*.ndjson``), ``parquet`` or ``text``."""
    suffix = Path(path.name[:-3] if path.name.endswith(".gz") else path.name).suffix.lower()
    if path.is_dir():
        return "folder", _from_folder(path)
    if suffix in JSONL_SUFFIXES:
        return "jsonl", _from_jsonl(path, text_field)
    if suffix in PARQUET_SUFFIXES:
        return "parquet", _from_parquet(path, text_field)
    return "text", _from_text_file(path)


def read_path(path: Path, text_field: str = "text") -> tuple[str, list[str]]:
    """``(kind, documents)`` of ``path``: a corpus folder (one holding ``manifest.json``) gives its
    eval split, kind ``corpus``; anything else is read by ``read_source``."""
    if (path / MANIFEST_FILE).is_file():
        return "corpus", read_documents(path, "eval")
    return read_source(path, text_field)


def drop_short(docs: list[str], min_chars: int, where: str) -> list[str]:
    """The documents whose stripped text has at least ``min_chars`` characters, in order;
    ``QidlabError`` naming ``where`` when none has."""
    kept = [d for d in docs if len(d.strip()) >= min_chars]
    if not kept:
        raise QidlabError(f"no documents in {where} (after dropping those under {min_chars} characters)")
    return kept


# ---------------------------------------------------------------------------
# corpus folders (built by qidlab.corpus)

CORPUS_FORMAT = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a corpus folder (``path``).

    ``documents``: counts ``read`` (from the sources), ``empty`` and ``duplicates`` (dropped),
    ``train``, ``eval``. ``bytes``: UTF-8 bytes of the documents' text per split. ``files``:
    ``{"train.jsonl": {"sha256", "bytes"}, ...}`` (``.jsonl.gz`` names when compressed).
    ``sources``: one entry per source, with its own ``documents``, ``bytes``, ``duplicates`` and
    ``empty`` counts (and, for fetched sources, the command, artefact sha256 and licences).
    ``input_hash``: sha256 over the sources' documents in order (``docs_hash``). ``reused`` is
    True when ``build_corpus`` found the folder already built (not stored).
    """

    path: Path
    recipe: str
    seed: int
    eval_fraction: float
    sources: list = field(repr=False)
    licenses: list
    documents: dict
    bytes: dict
    files: dict = field(repr=False)
    input_hash: str = field(repr=False)
    format: int = CORPUS_FORMAT
    reused: bool = field(default=False, compare=False)

    def split_path(self, split: str = "train") -> Path:
        """The file of ``split``: ``<split>.jsonl`` or, in a compressed corpus, ``<split>.jsonl.gz``."""
        if split not in SPLITS:
            raise QidlabError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        name = f"{split}.jsonl"
        return self.path / (f"{name}.gz" if f"{name}.gz" in self.files else name)

    @property
    def key(self) -> dict:
        return {"format": self.format, "recipe": self.recipe, "seed": self.seed,
                "eval_fraction": self.eval_fraction, "input_hash": self.input_hash}

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc.pop("path")
        doc.pop("reused")
        return doc


def load_manifest(out_dir) -> Manifest:
    """The manifest of a built corpus folder; ``QidlabError`` when there is none or it is unreadable."""
    folder = Path(out_dir).expanduser()
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise QidlabError(f"{folder} is not a corpus folder (no {MANIFEST_FILE}; build one with `qidlab corpus build`)")
    try:
        raw = json.loads(path.read_text())
        return Manifest(path=folder, **raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise QidlabError(f"{path}: not a qidlab corpus manifest ({exc})") from None


def read_documents(out_dir, split: str = "train") -> list[str]:
    """The documents of one split of a built corpus (``.jsonl`` or ``.jsonl.gz``), in file order."""
    path = load_manifest(out_dir).split_path(split)
    if not path.is_file():
        raise QidlabError(f"{path} is missing: rebuild the corpus")
    return read_source(path)[1]


# ---------------------------------------------------------------------------
# tokenizers and calibration windows


def tokenizer_fingerprint(tokenizer) -> str | None:
    """sha256 of a fast tokenizer's JSON (what it does, not which object it is), for per-process
    caches of its output; None for a tokenizer without a ``backend_tokenizer``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


@dataclass(frozen=True)
class CalibrationSpec:
    """Where GPTQ/AWQ calibration windows come from: ``n_samples`` windows of ``seq_len`` tokens,
    drawn with ``seed`` from the documents of ``source``: any path ``read_path`` reads (JSONL/Parquet:
    field ``text_field``), or a ``DatasetSource`` (a ``datasets`` data set, its own text field) of which
    ``n_docs`` documents are taken first (the seeded sample an eval set takes; all when None and not
    streaming)."""

    source: Path | DatasetSource
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0
    text_field: str = "text"
    n_docs: int | None = None

#: How ``calibration_ids`` draws its windows; part of a calibrated measurement's identity, so rows of
#: an older sampler (which tokenised the whole source as one text) are never taken for this one's.
CALIBRATION_SAMPLER = "seeded-documents-v2"


def calibration_identity(source) -> str:
    """The calibration text's content hash (``docs_hash``), so that the same job run from another
    folder, or merged from another store, is the same measurement. ``source``: a path, or a
    ``CalibrationSpec`` (its source read with its text field, a data set sampled). Cached per file
    version."""
    spec = source if isinstance(source, CalibrationSpec) else CalibrationSpec(Path(source))
    return _hash_of(_docs_key(spec))


def _docs_key(spec: CalibrationSpec) -> tuple:
    """What the calibration documents of ``spec`` depend on: the data set and its sample, or the
    file (resolved path, version) and text field."""
    if isinstance(spec.source, DatasetSource):
        return ("dataset", spec.source, spec.n_docs, spec.seed)
    path = Path(spec.source)
    if not path.exists():
        raise QidlabError(f"calibration source does not exist: {path}")
    return ("file", str(path.resolve()), *_version(path), spec.text_field)


@functools.lru_cache(maxsize=32)
def _hash_of(key: tuple) -> str:
    return "sha256:" + docs_hash(_docs_of(key))


def _spec_docs(spec: CalibrationSpec) -> list[str]:
    return _docs_of(_docs_key(spec))


@functools.lru_cache(maxsize=4)
def _docs_of(key: tuple) -> list[str]:
    """The non-blank calibration documents a ``_docs_key`` names: all of a file's, in order; a data
    set's seeded sample of ``n_docs`` (as ``load_eval_set`` takes it; all when None)."""
    if key[0] == "file":
        _, path, _mtime_ns, _size, text_field = key
        return drop_short(read_path(Path(path), text_field)[1], 1, path)
    _, src, n_docs, seed = key
    if src.streaming:
        return dataset_documents(src, n_docs=n_docs, seed=seed)
    return seeded_sample(drop_short(dataset_documents(src), 1, src.label), n_docs, seed)


def seeded_sample(docs: list[str], n_docs: int | None, seed: int) -> list[str]:
    """``n_docs`` of ``docs`` in their order, chosen by ``numpy.random.default_rng(seed).choice(len(docs),
    n_docs, replace=False)``; all of them when there are not more than ``n_docs`` (or it is None)."""
    if n_docs is None or len(docs) <= n_docs:
        return list(docs)
    keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=n_docs, replace=False))
    return [docs[i] for i in keep]


def calibration_ids(tokenizer, spec: CalibrationSpec, cache: dict | None = None):
    """(n_samples, seq_len) torch.long token ids: seeded random windows of a seeded sample of the
    calibration documents (``_draw_calibration``). ``cache``: a dict the caller keeps (the sweep
    keeps one per process, so the checkpoints of one suite share one draw), keyed by tokenizer
    (fast tokenizers only), spec and source file version; each call gets its own copy."""
    fingerprint = None if cache is None else tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return _draw_calibration(tokenizer, spec)
    key = (fingerprint, spec, _docs_key(spec))
    if key not in cache:
        cache[key] = _draw_calibration(tokenizer, spec)
    return cache[key].clone()


def _draw_calibration(tokenizer, spec: CalibrationSpec):
    """The documents are taken in a seeded random order until their text (joined by blank lines)
    gives at least twice the tokens the windows cover, or all are taken; only those are tokenised
    (a 100 MB training split is not); then ``n_samples`` seeded windows of ``seq_len`` tokens."""
    import torch

    docs = _spec_docs(spec)
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(docs))
    need, chars = 2 * spec.n_samples * spec.seq_len, 0
    while True:
        chars = max(2 * chars, 8 * need)  # a byte-level BPE token is rarely over 8 characters
        taken, total = [], 0
        for i in order:
            if total >= chars:
                break
            taken.append(docs[i])
            total += len(docs[i]) + 2
        ids = tokenizer("\n\n".join(taken), return_attention_mask=False)["input_ids"]
        if len(ids) >= need or len(taken) == len(docs):
            break
    if len(ids) <= spec.seq_len:
        where = getattr(spec.source, "label", spec.source)
        raise QidlabError(f"calibration text {where} has {len(ids)} tokens; need more than seq_len={spec.seq_len}")
    starts = rng.integers(0, len(ids) - spec.seq_len, size=spec.n_samples)
    return torch.tensor([ids[s : s + spec.seq_len] for s in starts], dtype=torch.long)


def _version(source) -> tuple[int, int]:
    """(mtime in ns, size in bytes) of a file: a cache key that changes when the file does."""
    st = Path(source).stat()
    return st.st_mtime_ns, st.st_size
