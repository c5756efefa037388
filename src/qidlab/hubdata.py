"""Documents from a Hugging Face ``datasets`` data set: a Hub dataset or data files read by a builder.

``DatasetSource`` says where the text is: a Hub dataset id (``"tiiuae/falcon-refinedweb"``), or a
builder (``"parquet"``, ``"json"``, ``"text"``, ``"csv"``) with ``data_files``; its ``config`` (the
dataset's configuration, ``load_dataset``'s ``name``), ``split`` and ``text_field`` (the column holding
the text). ``dataset_documents`` reads it:

* not streaming: ``datasets.load_dataset(...)`` (downloaded once into ``HF_DATASETS_CACHE``, read from
  there afterwards, offline too) and every document of the split, in the split's order; the caller
  takes its seeded sample from them (``qidlab.evaluate.load_eval_set``: as from a local file);
* streaming: ``load_dataset(..., streaming=True)``, records with no text (None, or fewer than
  ``min_chars`` characters once stripped) filtered out, then ``IterableDataset.shuffle(seed=seed,
  buffer_size=shuffle_buffer)`` and ``take(n_docs)``. That shuffle permutes the order of the data
  set's files (shards) with ``seed``, then draws each document at random from a buffer of
  ``shuffle_buffer`` documents filled from the files in that order. So only the first files of the
  shuffled order are read (RefinedWeb, 5,534 Parquet files of ~1 GB: one or two of them), the sample
  is the same for the same seed and the same files, but it is not a uniform sample of the whole set:
  its documents come from the few files read. The content hash of the documents taken is what
  identifies the sample (``docs_hash``), so another sample is never mistaken for this one.

``datasets`` is imported by the functions (it is heavy and optional: ``pip install 'qidlab[hub]'``).
It honours ``HF_DATASETS_CACHE``, ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` and ``HF_TOKEN``.
Every failure is one ``QidlabError`` naming the dataset, split or field and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from qidlab.errors import QidlabError, did_you_mean

#: ``datasets``' packaged builders that read ``data_files``.
BUILDERS = ("parquet", "json", "text", "csv", "arrow")


class NotCached(QidlabError):
    """The data set is not in the local cache and the Hub may not be asked (offline): a dry run
    reports it as to be downloaded; a sweep stops with this line."""


@dataclass(frozen=True)
class DatasetSource:
    """Where documents come from in ``datasets`` terms (see the module docstring)."""

    dataset: str  # a Hub dataset id, or a builder of BUILDERS with data_files
    split: str = "train"
    text_field: str = "text"  # the column holding each document's text (the "text" builder: always "text")
    config: str | None = None  # the dataset's configuration (load_dataset's name), e.g. "wikitext-2-raw-v1"
    data_files: tuple[str, ...] = ()  # with a builder: the files (paths or URLs)
    streaming: bool = False  # take a seeded sample while streaming (needs n_docs) instead of loading the split
    shuffle_buffer: int = 10_000  # streaming: documents in the shuffle buffer

    def __post_init__(self):
        if self.dataset in BUILDERS and not self.data_files:
            raise QidlabError(f"dataset {self.dataset!r} reads files: give `data_files`", params=("data_files",))
        if self.dataset not in BUILDERS and self.data_files and "/" not in self.dataset:
            raise QidlabError(f"`data_files` needs dataset = one of {', '.join(BUILDERS)} (or a Hub id), not "
                              f"{self.dataset!r}" + did_you_mean(self.dataset, BUILDERS), params=("dataset",))

    def describe(self) -> dict:
        """JSON-serialisable: what the store records as the eval set's source."""
        out = {"kind": "datasets", "dataset": self.dataset, "split": self.split, "text_field": self.text_field}
        if self.config:
            out["config"] = self.config
        if self.data_files:
            out["data_files"] = list(self.data_files)
        if self.streaming:
            out.update(streaming=True, shuffle_buffer=self.shuffle_buffer)
        return out

    @property
    def label(self) -> str:
        return f"{self.dataset}" + (f"/{self.config}" if self.config else "") + f"[{self.split}]"


def dataset_documents(src: DatasetSource, *, n_docs: int | None = None, seed: int = 0,
                      min_chars: int = 1) -> list[str]:
    """The documents of ``src``: not streaming, every text of the split in order (None skipped; the
    caller samples); streaming, the seeded sample of ``n_docs`` texts of at least ``min_chars``
    stripped characters described in the module docstring."""
    if src.streaming:
        if n_docs is None:
            raise QidlabError(f"dataset {src.label}: streaming needs `n_docs` (how many documents to take)",
                              params=("n_docs",))
        stream = _load(src, streaming=True)
        _check_field(src, stream.column_names)
        field = src.text_field
        stream = stream.filter(lambda r: isinstance(r[field], str) and len(r[field].strip()) >= min_chars)
        stream = stream.shuffle(seed=seed, buffer_size=src.shuffle_buffer).take(n_docs)
        return _texts(src, (r[field] for r in _records(src, stream)))
    table = _load(src, streaming=False)
    _check_field(src, table.column_names)
    return _texts(src, table.select_columns([src.text_field]).with_format(None)[src.text_field])


def _texts(src: DatasetSource, values) -> list[str]:
    docs = []
    for value in values:
        if value is None:
            continue
        if not isinstance(value, str):
            raise QidlabError(f"dataset {src.label}: field {src.text_field!r} is {type(value).__name__}, not text "
                              f"(set text_field to the column holding the text)", params=("text_field",))
        docs.append(value)
    return docs


def _records(src: DatasetSource, stream):
    try:
        yield from stream
    except KeyError as exc:
        raise QidlabError(f"dataset {src.label}: a record has no field {exc} (set text_field)",
                          params=("text_field",)) from None
    except Exception as exc:  # network or file errors while streaming
        raise _error(exc, src) from None


def _check_field(src: DatasetSource, columns) -> None:
    if columns is not None and src.text_field not in columns:
        raise QidlabError(f"dataset {src.label} has no field {src.text_field!r} (fields: {', '.join(columns)}; set "
                          f"text_field)" + did_you_mean(src.text_field, columns), params=("text_field",))


def _load(src: DatasetSource, *, streaming: bool):
    try:
        import datasets
    except ImportError:
        raise QidlabError(f"dataset {src.label}: reading a `datasets` data set needs the datasets package: "
                          f"pip install 'qidlab[hub]'") from None
    kwargs = {"split": src.split, "streaming": streaming}
    if src.data_files:
        kwargs["data_files"] = list(src.data_files)
    verbosity, bars = datasets.logging.get_verbosity(), not datasets.utils.are_progress_bars_disabled()
    datasets.logging.set_verbosity_error()  # not "Using the latest cached version ..." on every read
    if src.data_files and not any("://" in f for f in src.data_files):
        datasets.utils.disable_progress_bars()  # local files: no download to show, only "Generating ... split"
    try:
        return datasets.load_dataset(src.dataset, src.config, **kwargs)
    except Exception as exc:
        raise _error(exc, src) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.utils.enable_progress_bars()


def _error(exc: Exception, src: DatasetSource) -> QidlabError:
    """``datasets``' exception as one line naming the dataset and what to do."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Unknown split" in text:
        return QidlabError(f"dataset {src.label}: no split {src.split!r} ({text}); set split", params=("split",))
    if "OfflineModeIsEnabled" in text or "offline" in text.lower():
        if src.streaming:
            return NotCached(f"dataset {src.dataset}: streaming reads the Hub and HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is "
                             f"set: go online, or download it once and set streaming = false", params=("dataset",))
        return NotCached(f"dataset {src.dataset}: not in the datasets cache and offline (HF_DATASETS_OFFLINE or "
                         f"HF_HUB_OFFLINE set): load it once online, or point dataset = \"parquet\"/\"json\" at local "
                         f"data_files", params=("dataset",))
    if "Couldn't find cache" in text or "BuilderConfig" in text or "Available configs" in str(exc):
        return QidlabError(f"dataset {src.dataset} has no config {src.config!r} ({text}); set config",
                           params=("config",))
    if type(exc).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError"):
        return QidlabError(f"dataset {src.dataset}: not found on the Hub (check the id; a gated or private dataset "
                           f"needs HF_TOKEN)", params=("dataset",))
    if isinstance(exc, FileNotFoundError):
        return QidlabError(f"dataset {src.label}: {text}", params=("data_files",))
    return QidlabError(f"dataset {src.label}: {type(exc).__name__}: {text}")
