"""What the figures and the report draw from: a store's measurements, where its checkpoints and
suites live, and the laws fitted to it.

Units: ``n_params`` is N, non-embedding parameters; ``tokens`` is D, training tokens;
``loss16``, ``loss`` and ``qid`` are cross-entropies (qid = loss - loss16) in the study's ``unit``:
a store's ``[scoring] unit`` (``qidlab.store.read_loss_unit``), a data set's (its manifest's
configs), a table's ``unit`` column; nats per token when none is named.

``load_study(db, suites, options)`` reads a store or a published data set (``qidlab.data``: by
name or folder; its manifest gives what a store's tables would); ``Study.from_frame(frame, ...)``
wraps a canonical DataFrame. The *primary slice* is one eval set and one quantization method: the
ones chosen in ``ShowOptions``, else the eval set with the most measurements and, on it, the
method with the most measurements. Laws are fitted to it (``qidlab.show.fits``). ``where``
(``ShowOptions.where``, else a data set manifest's ``primary.where``; ``qidlab.tables.select_rows``
conditions such as ``kind=run``) keeps the rows the laws and the paper's figures use (``frame``);
``all_rows`` keeps every row of the suite drawn, for the figures of runs, cooldowns and averages. A store of
several suites (e.g. a cosine suite and its constant-learning-rate twins) is drawn one suite at a
time: the one chosen, else the one with the most measurements; the others' rows are left out.
Checkpoints that saw no tokens (step 0) are left out: D = 0 has no place on a log axis or
in a power law.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import data, provenance
from ..checkpoints import suites as suite_folders
from ..errors import QidlabError
from ..laws.analysis import PYTHIA_VOCAB
from ..store import DEFAULT_LOSS_UNIT, LOSS_UNITS, describe_store, loss_unit, read_canonical, read_loss_unit
from ..tables import require_columns, select_rows, validate
from .fits import LawFit, fit_study_law

if TYPE_CHECKING:
    import pandas as pd

REQUIRED = ("n_params", "tokens", "bits", "qid")
#: Each scoring unit (``qidlab.evaluate.score.UNITS``) as an axis label writes it.
UNIT_TEXT = {"nats_per_token": "nats/token", "bits_per_byte": "bits/byte", "nats_per_ref_token": "nats/ref. token",
             "nats_per_word": "nats/word"}
#: What a study knows of each checkpoint (N in non-embedding parameters, D in tokens).
CHECKPOINT_COLUMNS = ["suite", "model", "step", "path", "n_params", "tokens"]


@dataclass(frozen=True)
class ShowOptions:
    """Choices of the figures and the report (sizes N in non-embedding parameters, D in tokens)."""

    suite: str | None = None  # a store of several suites: this one's rows only (default: the most measured)
    eval_set: str | None = None  # default: the eval set with the most measurements
    method: str | None = None  # default: the most measured method on that eval set
    bootstrap: int = 200  # bootstrap replicates for the 95% CIs of fitted parameters
    seed: int = 0
    sizes: tuple[float, ...] = (7e9, 70e9, 405e9)  # N of Fig. 1 (the paper's 7B, 70B, 405B)
    bits: tuple[float, ...] | None = None  # P of Fig. 1 (default: the study's bit widths)
    max_tokens: float = 1e14  # D up to which Fig. 1 projects (the paper's 100T)
    table_sizes: tuple[float, ...] = (1e9, 7e9, 70e9, 405e9)  # Table 1 rows
    table_qids: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)  # Table 1 QiD levels (in the study's unit)
    vocab_size: int | None = None  # ln(V) is the uniform-guess loss; default: the checkpoints' config.json
    dpi: int = 100
    where: tuple[str, ...] | None = None  # rows of the laws (select_rows); None: a data set's primary.where

    def check(self) -> None:
        if self.bootstrap < 0:
            raise QidlabError("`bootstrap` must be >= 0", params=("bootstrap",))
        if not self.sizes or any(not s > 0 for s in self.sizes):
            raise QidlabError("`sizes` needs positive model sizes", params=("sizes",))
        if self.bits is not None and (not self.bits or any(not b > 0 for b in self.bits)):
            raise QidlabError("`bits` needs positive bit widths", params=("bits",))
        if not self.max_tokens > 1e9:
            raise QidlabError("`max_tokens` must be above 1e9 tokens (the projection starts at 1e9 or below)",
                              params=("max_tokens",))
        if self.vocab_size is not None and self.vocab_size < 2:
            raise QidlabError("`vocab_size` must be at least 2", params=("vocab_size",))
        if self.where is not None and (isinstance(self.where, str) or not all(isinstance(w, str) for w in self.where)):
            raise QidlabError("`where` must be a sequence of conditions COLUMN=V1,V2 or COLUMN>=X", params=("where",))


@dataclass
class Study:
    """A measured study, ready to draw. ``frame``: canonical rows with D > 0."""

    frame: "pd.DataFrame"
    options: ShowOptions
    eval_set: str
    method: str
    source: dict[str, Any]  # where the rows came from (path, sha256, rows, rows left out)
    checkpoints: "pd.DataFrame"  # suite, model, step, path of every stored checkpoint
    suite_dirs: tuple[Path, ...]
    store_info: dict[str, Any]  # eval sets, methods, versions and code revisions of the rows
    suite: str | None = None  # the suite drawn (None: the rows name none)
    other_suites: "pd.DataFrame | None" = None  # the rows of the suites not drawn (figures may mark them)
    unit: str = DEFAULT_LOSS_UNIT  # of loss16, loss, qid: a [scoring] unit (qidlab.evaluate.score.UNITS)
    where: tuple[str, ...] = ()  # the conditions that chose ``frame`` from ``all_rows``
    all_rows: "pd.DataFrame | None" = None  # the suite's rows before ``where`` (None: as ``frame``)
    _fits: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.all_rows is None:
            self.all_rows = self.frame

    @property
    def unit_text(self) -> str:
        """The unit in an axis label: 'nats/token', 'bits/byte', ..."""
        return UNIT_TEXT.get(self.unit, self.unit.replace("_per_", "/").replace("_", " "))

    @property
    def unit_words(self) -> str:
        """The unit in a sentence: 'nats per token', 'bits per byte', ..."""
        return LOSS_UNITS.get(self.unit, self.unit.replace("_", " "))

    @property
    def nats_per_token(self) -> bool:
        """Whether losses are in nats per token, the unit of ln(V) and of the published constants."""
        return self.unit == DEFAULT_LOSS_UNIT

    @classmethod
    def from_frame(cls, frame: "pd.DataFrame", *, suites: Sequence[str | Path] = (),
                   options: ShowOptions | None = None, source: str = "table", unit: str | None = None) -> "Study":
        """A study of a canonical DataFrame (eval_set/method default to one unnamed set/method);
        ``unit``: of its losses, else its ``unit`` column's one value, else nats per token."""
        import pandas as pd

        frame = frame.copy()
        for column, default in (("eval_set", "(one eval set)"), ("method", "(one method)")):
            if column not in frame.columns:
                frame[column] = default
        if unit is None and "unit" in frame.columns:
            unit = loss_unit(({"scoring": {"unit": u}} for u in frame.unit.dropna().unique()), source)
        empty = pd.DataFrame(columns=["suite", "model", "step", "path"])
        return _assemble(frame, options or ShowOptions(), {"path": source}, empty, {}, suites,
                         unit=unit or DEFAULT_LOSS_UNIT)

    @property
    def primary(self) -> "pd.DataFrame":
        """The rows of the chosen eval set and method."""
        f = self.frame
        return f[(f.eval_set == self.eval_set) & (f.method == self.method)]

    def fit(self, law: str) -> "LawFit":
        """``law`` fitted to this study (computed once); ``QidlabError`` when it cannot be."""
        if law not in self._fits:
            try:
                self._fits[law] = fit_study_law(self, law)
            except QidlabError as exc:
                self._fits[law] = exc
        result = self._fits[law]
        if isinstance(result, QidlabError):
            raise QidlabError(str(result))
        return result

    def loss16_points(self) -> "pd.DataFrame":
        """One row per checkpoint of the primary eval set: n_params, tokens, loss16 (``unit``), and
        the columns that name its model (suite, model, run: a fit's bootstrap draws models whole)."""
        if "loss16" not in self.frame.columns or self.frame.loss16.isna().all():
            raise QidlabError("the measurements have no 16-bit loss (loss16)")
        rows = self.frame[(self.frame.eval_set == self.eval_set) & self.frame.loss16.notna()]
        key = [c for c in ("suite", "model", "step") if c in rows.columns] or ["n_params", "tokens"]
        names = [c for c in ("suite", "model", "run") if c in rows.columns]
        return rows.drop_duplicates(key)[["n_params", "tokens", "loss16", *names]].reset_index(drop=True)

    def vocab_size(self) -> tuple[int, str]:
        """V of the uniform-guess loss ln(V), and where it comes from."""
        if self.options.vocab_size:
            return int(self.options.vocab_size), "given"
        if self.store_info.get("vocab_size"):
            return int(self.store_info["vocab_size"]), "the data set's manifest"
        vocab = suite_folders.vocab_size(self.checkpoints.get("path", []), self.suite_dirs)
        if vocab is not None:
            return vocab, "the checkpoints' config.json"
        return PYTHIA_VOCAB, "Pythia's tokenizer (no checkpoint config.json found)"


# ---------------------------------------------------------------------------
# reading a store


def load_study(db: str | Path, *, suites: Sequence[str | Path] = (), options: ShowOptions | None = None) -> Study:
    """The study measured into the store ``db``; ``suites`` adds suite folders (the store's
    checkpoint paths name the others). A missing file, a file that is not a store, or a store
    with no measurements: ``QidlabError``."""
    path = Path(db)
    if not path.is_file():
        return _load_dataset(str(db), suites, options or ShowOptions())
    frame = read_canonical(path)
    tables = describe_store(path)
    checkpoints = tables.pop("checkpoints")[CHECKPOINT_COLUMNS]
    checkpoints = checkpoints.assign(path=[str(suite_folders.locate(p, path.parent)) for p in checkpoints.path])
    source = {"path": str(path), "sha256": provenance.file_sha256(path)}
    return _assemble(frame, options or ShowOptions(), source, checkpoints, tables, suites, unit=read_loss_unit(path))


def _primary_defaults(options: ShowOptions, primary: dict) -> ShowOptions:
    """A data set's ``primary`` slice (``qidlab store publish --primary``) fills the choices the
    user left open, unless the user chose another suite (its eval sets differ)."""
    if not primary or (options.suite is not None and options.suite != primary.get("suite")):
        return options
    where = options.where if options.where is not None else tuple(primary.get("where") or ())
    return replace(options, suite=options.suite or primary.get("suite"),
                   eval_set=options.eval_set or primary.get("eval_set"), method=options.method or primary.get("method"),
                   where=where)


def _dataset_unit(doc: dict, where: str) -> str:
    """A data set's unit: its configs' ``[scoring] unit`` (as publishing read them), else the
    words of its ``units.qid`` ('bits per byte, loss - loss16'), else nats per token."""
    configs = [c.get("config") for c in doc.get("configs") or [] if isinstance(c, dict)]
    if configs:
        return loss_unit(configs, where)
    words = str((doc.get("units") or {}).get("qid", "")).split(",")[0].strip()
    return {text: unit for unit, text in LOSS_UNITS.items()}.get(words, DEFAULT_LOSS_UNIT)


def _load_dataset(name: str, suites, options: ShowOptions) -> Study:
    """The study of a published data set (``qidlab store publish``), by name or folder."""
    import pandas as pd

    folder = data.dataset_dir(name)
    if folder is None:
        raise QidlabError(f"{name}: no such store or data set (data sets: {', '.join(data.datasets()) or 'none'})")
    doc, file = data.manifest(folder), data.resolve(str(folder))
    frame = data.load(str(folder))
    checkpoints = pd.DataFrame(doc.get("checkpoints") or [], columns=CHECKPOINT_COLUMNS)
    info = {
        "eval_sets": pd.DataFrame([{**e, "source_json": json.dumps(e.get("source"))} for e in doc.get("eval_sets", [])]),
        "methods": pd.DataFrame(doc.get("methods", []), columns=["method", "measurements", "configs"]),
        "runs": pd.DataFrame([{**r, "versions_json": json.dumps(r.get("versions", {}))} for r in doc.get("runs", [])]),
    }
    options = _primary_defaults(options, doc.get("primary") or {})
    vocab = {s.get("vocab_size") for s in doc.get("suites", [])} - {None}
    if len(vocab) == 1:
        info["vocab_size"] = vocab.pop()
    if isinstance(doc.get("units"), dict):
        info["units"] = doc["units"]
    info = {k: v for k, v in info.items() if not isinstance(v, pd.DataFrame) or len(v)}
    source = {"path": str(folder), "dataset": doc.get("name", folder.name), "sha256": provenance.file_sha256(file)}
    return _assemble(frame, options, source, checkpoints, info, suites, unit=_dataset_unit(doc, str(folder)))


def _assemble(frame, options: ShowOptions, source: dict, checkpoints, store_info: dict, suites, *,
              unit: str = DEFAULT_LOSS_UNIT) -> Study:
    options.check()
    where = source.get("path", "table")
    if frame.shape[0] == 0:
        raise QidlabError(f"{where}: the store has no measurements (run `qidlab sweep` first)")
    require_columns(frame, REQUIRED, "a figure")
    usable = frame["tokens"] > 0
    if not usable.any():
        raise QidlabError(f"{where}: every measurement is of a checkpoint with D = 0 tokens")
    frame = validate(frame[usable].reset_index(drop=True), source=where)
    suite, frame, other, rest = _one_suite(frame, options.suite)
    all_rows, where = frame, tuple(options.where or ())
    if where:
        frame = select_rows(frame, where).reset_index(drop=True)
        other = {**other, "rows_not_selected": int(len(all_rows) - len(frame))}
    source = {**source, "rows": int(len(frame)), "rows_without_tokens": int((~usable).sum()), **other}
    eval_set = _choose(frame, "eval_set", options.eval_set, "--eval-set")
    method = _choose(frame[frame.eval_set == eval_set], "method", options.method, "--method")
    if suite is not None and "suite" in checkpoints.columns:
        checkpoints = checkpoints[checkpoints.suite == suite]
    return Study(frame=frame, options=options, eval_set=eval_set, method=method, source=source,
                 checkpoints=checkpoints, suite_dirs=_suite_dirs(checkpoints, suites), store_info=store_info,
                 suite=suite, other_suites=rest, unit=unit, where=where, all_rows=all_rows)


def _one_suite(frame, given: str | None):
    """(suite, its rows, what was left out, the rows left out) — (None, frame, {}, None) for rows of
    one suite or none named."""
    if "suite" not in frame.columns or frame.suite.isna().all():
        if given is not None:
            raise QidlabError(f"--only-suite {given!r}: the measurements name no suites")
        return None, frame, {}, None
    if frame.suite.nunique() == 1 and given is None:
        return str(frame.suite.iloc[0]), frame, {}, None
    suite = _choose(frame, "suite", given, "--only-suite")
    keep = frame.suite == suite
    left = {str(k): int(v) for k, v in frame[~keep].suite.value_counts().sort_index().items()}
    return suite, frame[keep].reset_index(drop=True), {"rows_other_suites": left}, frame[~keep].reset_index(drop=True)


def _choose(frame, column: str, given: str | None, flag: str) -> str:
    counts = frame[column].value_counts()
    if given is not None:
        if given not in counts.index:
            raise QidlabError(f"{flag} {given!r}: not in the measurements (have: {', '.join(sorted(counts.index))})")
        return given
    best = counts.max()
    return sorted(str(v) for v in counts.index[counts == best])[0]


def _suite_dirs(checkpoints, explicit: Sequence[str | Path]) -> tuple[Path, ...]:
    """Suite folders: the ones given (which must exist), then those of the stored checkpoints that
    still exist, in order, without repeats."""
    given = suite_folders.given_suite_folders(explicit)
    stored = suite_folders.stored_suite_folders(checkpoints.get("path", []))
    return tuple(suite_folders.unique_folders([*given, *stored]))
