"""Evaluation sets: a fixed, seeded sample of documents from a text file, folder, JSONL, Parquet
or the eval split of a corpus folder (read by ``qidlab.documents``), or from a ``datasets`` data set
(``qidlab.hubdata.DatasetSource``: a Hub dataset, or parquet/json/text files read by ``datasets``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qidlab.documents import docs_hash, drop_short, read_path, seeded_sample
from qidlab.errors import QidlabError
from qidlab.hubdata import DatasetSource, dataset_documents


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


def truncate(doc: str, max_chars: int) -> str:
    """The first ``max_chars`` characters of ``doc``, ending at the last line break inside them if any."""
    if len(doc) <= max_chars:
        return doc
    head = doc[:max_chars]
    cut = head.rfind("\n")
    return (head[:cut] if cut > 0 else head).rstrip()


def load_eval_set(source, *, n_docs: int | None = 1000, seed: int = 0, name: str | None = None,
                  min_chars: int = 1, max_chars: int | None = None, text_field: str = "text") -> EvalSet:
    """Read documents from ``source`` and take a fixed, seeded sample of ``n_docs`` of them.

    ``source``: a text file (documents separated by blank lines), a folder (each file one
    document, recursive, sorted paths), ``*.jsonl``/``*.ndjson`` (field ``text_field``),
    ``*.parquet`` (column ``text_field``), a ``DatasetSource`` (its own ``text_field``; streaming: the
    sample is drawn while streaming, ``hubdata.dataset_documents``, and ``n_available`` is the number
    taken, ``complete`` False), a corpus folder from ``qidlab corpus build`` (one
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
    elif isinstance(source, DatasetSource):
        return _from_dataset(source, n_docs=n_docs, seed=seed, name=name, min_chars=min_chars, max_chars=max_chars)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise QidlabError(f"eval set source does not exist: {path}")
        kind, raw = read_path(path, text_field)
        desc = {"kind": kind, "path": str(path.resolve())}
        if kind in ("jsonl", "parquet"):
            desc["text_field"] = text_field
        default_name = path.stem if path.is_file() else path.name
    return _sample(raw, desc, n_docs=n_docs, seed=seed, name=name or default_name, min_chars=min_chars,
                   max_chars=max_chars)


def _sample(raw: list[str], desc: dict, *, n_docs, seed, name, min_chars, max_chars) -> EvalSet:
    """The seeded sample of ``raw`` (see ``load_eval_set``)."""
    available = drop_short(raw, min_chars, desc.get("path", desc.get("dataset", "the given list")))
    docs = seeded_sample(available, n_docs, seed)
    if max_chars is not None:
        docs = [truncate(d, max_chars) for d in docs]
        desc["max_chars"] = max_chars
    desc.update({"n_requested": n_docs, "seed": seed, "min_chars": min_chars, "n_available": len(available)})
    return EvalSet(name=name, docs=docs, content_hash=docs_hash(docs), source=desc,
                   n_docs=len(docs), n_available=len(available), complete=len(docs) == len(available))


def _from_dataset(src: DatasetSource, *, n_docs, seed, name, min_chars, max_chars) -> EvalSet:
    """A ``datasets`` source: loaded and sampled as a local file is, or sampled while streaming."""
    default = src.dataset.rpartition("/")[2]
    if not src.streaming:
        return _sample(dataset_documents(src), src.describe(), n_docs=n_docs, seed=seed, name=name or default,
                       min_chars=min_chars, max_chars=max_chars)
    docs = dataset_documents(src, n_docs=n_docs, seed=seed, min_chars=min_chars)
    if not docs:
        raise QidlabError(f"no documents in dataset {src.label} (after dropping those under {min_chars} characters)")
    desc = src.describe()
    if max_chars is not None:
        docs = [truncate(d, max_chars) for d in docs]
        desc["max_chars"] = max_chars
    desc.update({"n_requested": n_docs, "seed": seed, "min_chars": min_chars, "n_available": None})
    return EvalSet(name=name or default, docs=docs, content_hash=docs_hash(docs), source=desc, n_docs=len(docs),
                   n_available=len(docs), complete=False)
