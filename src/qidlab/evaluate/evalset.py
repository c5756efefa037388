"""Evaluation sets: a fixed, seeded sample of documents from a text file, folder, JSONL, Parquet
or the eval split of a corpus folder."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qidlab.errors import QidlabError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class EvalSet:
    """Documents to score, in a fixed order, with the hash that identifies them.

    ``content_hash`` is ``docs_hash(docs)``. ``complete`` is True when every available document
    was taken (fewer than or exactly ``n_docs`` requested were available), False when
    ``docs`` is a seeded sample of ``n_available``. ``source`` is JSON-serialisable.
    """

    name: str
    docs: list[str] = field(repr=False)
    content_hash: str
    source: dict
    n_docs: int
    n_available: int
    complete: bool

    def __len__(self) -> int:
        return len(self.docs)


def docs_hash(docs: list[str]) -> str:
    """sha256 over the documents in order; each is fed as its UTF-8 byte length (8 bytes,
    little-endian) followed by its UTF-8 bytes, so document boundaries are part of the hash."""
    digest = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


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
            raise QidlabError(f"{path}:{lineno}: no field {text_field!r} (set text_field= to choose another)")
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
                          "set text_field= to choose another)")
    column = pq.read_table(path, columns=[text_field]).column(text_field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise QidlabError(f"{path}: column {text_field!r} is {column.type}, not text")
    return [d for d in column.to_pylist() if d is not None]


def truncate(doc: str, max_chars: int) -> str:
    """The first ``max_chars`` characters of ``doc``, ending at the last line break inside them if any."""
    if len(doc) <= max_chars:
        return doc
    head = doc[:max_chars]
    cut = head.rfind("\n")
    return (head[:cut] if cut > 0 else head).rstrip()


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


def load_eval_set(source, *, n_docs: int | None = 1000, seed: int = 0, name: str | None = None,
                  min_chars: int = 1, max_chars: int | None = None, text_field: str = "text") -> EvalSet:
    """Read documents from ``source`` and take a fixed, seeded sample of ``n_docs`` of them.

    ``source``: a text file (documents separated by blank lines), a folder (each file one
    document, recursive, sorted paths), ``*.jsonl``/``*.ndjson`` (field ``text_field``),
    ``*.parquet`` (column ``text_field``), a corpus folder from ``qidlab corpus build`` (one
    holding ``manifest.json``: its eval split), or a list of strings; ``.gz`` files are
    decompressed. Documents whose stripped text has
    fewer than ``min_chars`` characters are dropped first. When more than ``n_docs`` remain, the
    sample is ``numpy.random.default_rng(seed).choice(n, n_docs, replace=False)``, kept in source
    order; otherwise (or with ``n_docs=None``) every document is taken and ``complete`` is True.
    ``max_chars``: each sampled document is cut to its first ``max_chars`` characters, at the last
    line break inside that prefix when there is one (bounds the scoring cost of long files).
    No documents left: ``QidlabError``.
    """
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise QidlabError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    if n_docs is not None and (isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1):
        raise QidlabError(f"n_docs must be a positive integer or None, got {n_docs!r}")
    if isinstance(source, (list, tuple)):
        if not all(isinstance(d, str) for d in source):
            raise QidlabError("an in-memory eval set must be a list of strings")
        raw, desc = list(source), {"kind": "memory"}
        default_name = "memory"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise QidlabError(f"eval set source does not exist: {path}")
        if (path / "manifest.json").is_file():
            from qidlab.corpus import read_documents

            raw, kind = read_documents(path, "eval"), "corpus"
        else:
            kind, raw = read_source(path, text_field)
        desc = {"kind": kind, "path": str(path.resolve())}
        if kind in ("jsonl", "parquet"):
            desc["text_field"] = text_field
        default_name = path.stem if path.is_file() else path.name
    available = [d for d in raw if len(d.strip()) >= min_chars]
    if not available:
        where = desc.get("path", "the given list")
        raise QidlabError(f"no documents in {where} (after dropping those under {min_chars} characters)")
    if n_docs is not None and len(available) > n_docs:
        keep = np.sort(np.random.default_rng(seed).choice(len(available), size=n_docs, replace=False))
        docs = [available[i] for i in keep]
    else:
        docs = available
    if max_chars is not None:
        docs = [truncate(d, max_chars) for d in docs]
        desc["max_chars"] = max_chars
    desc.update({"n_requested": n_docs, "seed": seed, "min_chars": min_chars, "n_available": len(available)})
    return EvalSet(name=name or default_name, docs=docs, content_hash=docs_hash(docs), source=desc,
                   n_docs=len(docs), n_available=len(available), complete=len(docs) == len(available))
