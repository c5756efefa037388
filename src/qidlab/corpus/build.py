"""Build a corpus folder: duplicate removal, a seeded document-level split, a manifest.

A corpus folder holds::

    train.jsonl     one {"text": ...} per line, in source order (train.jsonl.gz with compress=True)
    eval.jsonl      the held-out documents, in source order (no document is in both)
    manifest.json   recipe, sources and licences, counts, sha256 of each file, seed (no timestamps)

Steps, in order: read the recipe's documents (``qidlab.corpus.recipes``; fetched sources come
from the cache, ``qidlab.corpus.fetch``); drop documents that are empty or whitespace only; drop
exact duplicates: documents whose normalised text (``markup.normalise``: NFC, whitespace runs as
one space) has the sha256 of an earlier one (the first occurrence is kept, so no document can
be in both splits); pick ``round(eval_fraction * n)`` documents for eval (at least one when
``eval_fraction > 0``; all of them when it is 1) with ``numpy.random.default_rng(seed).permutation(n)``;
write. Gzip output is reproducible (no file name or time in the header).

The files are written to a temporary folder beside ``out_dir`` and renamed into place once the
manifest is written, so a failed build (a source that cannot be fetched, a full disk) leaves
nothing behind. Building again into a folder whose manifest has the same key (recipe, seed, eval
fraction and the hash of the input documents) and whose files (same compression) still match
their sha256 reuses it. A folder holding a corpus with another key is refused rather than
overwritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qidlab.errors import QidlabError

FORMAT = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "eval")
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a corpus folder (``path``).

    ``documents``: counts ``read`` (from the sources), ``empty`` and ``duplicates`` (dropped),
    ``train``, ``eval``. ``bytes``: UTF-8 bytes of the documents' text per split. ``files``:
    ``{"train.jsonl": {"sha256", "bytes"}, ...}`` (``.jsonl.gz`` names when compressed).
    ``sources``: one entry per source, with its own ``documents``, ``bytes``, ``duplicates`` and
    ``empty`` counts (and, for fetched sources, the command, artefact sha256 and licences).
    ``input_hash``: sha256 over the sources' documents in order
    (``qidlab.evaluate.evalset.docs_hash``). ``reused`` is True when ``build_corpus`` found the
    folder already built (not stored).
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
    format: int = FORMAT
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


def _sha256(path: Path) -> str:
    from qidlab.provenance import file_sha256

    return file_sha256(path)


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


def verify(manifest: Manifest) -> bool:
    """True when every output file exists with the size and sha256 the manifest records."""
    for name, info in manifest.files.items():
        f = manifest.path / name
        if not f.is_file() or f.stat().st_size != info["bytes"] or _sha256(f) != info["sha256"]:
            return False
    return True


def read_documents(out_dir, split: str = "train") -> list[str]:
    """The documents of one split of a built corpus (``.jsonl`` or ``.jsonl.gz``), in file order."""
    from qidlab.evaluate.evalset import read_source

    path = load_manifest(out_dir).split_path(split)
    if not path.is_file():
        raise QidlabError(f"{path} is missing: rebuild the corpus")
    return read_source(path)[1]


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and eval document indices (each sorted) of ``n`` documents; pure.
    ``eval_fraction == 1`` puts every document in eval (an eval-only corpus)."""
    import numpy as np

    if eval_fraction == 1:
        return [], list(range(n))
    n_eval = round(eval_fraction * n)
    if eval_fraction > 0:
        n_eval = max(1, n_eval)
    if n - n_eval < 1:
        raise QidlabError(f"{n} document(s) cannot be split with eval_fraction={eval_fraction}: no training document left")
    eval_idx = set(np.random.default_rng(seed).permutation(n)[:n_eval].tolist())
    return [i for i in range(n) if i not in eval_idx], sorted(eval_idx)


def deduplicate(texts: list[str], per_source: list[int]) -> tuple[list[str], list[dict]]:
    """The non-empty documents whose normalised text was not seen before, in order, and per
    source (``per_source``: consecutive document counts) how many were ``empty`` and ``duplicates``."""
    from qidlab.corpus.markup import normalise

    seen, unique, counts, i = set(), [], [], 0
    for n in per_source:
        c = {"empty": 0, "duplicates": 0}
        for text in texts[i:i + n]:
            if not text.strip():
                c["empty"] += 1
                continue
            h = hashlib.sha256(normalise(text).encode("utf-8")).digest()
            if h in seen:
                c["duplicates"] += 1
                continue
            seen.add(h)
            unique.append(text)
        counts.append(c)
        i += n
    return unique, counts


def write_jsonl(path: Path, docs: list[str]) -> None:
    """One ``{"text": ...}`` object per line; gzip'ed (reproducibly: no name, mtime 0) when the
    name ends in ``.gz``."""
    with open(path, "wb") as raw:
        fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) \
            if path.name.endswith(".gz") else raw
        for d in docs:
            fh.write((json.dumps({"text": d}, ensure_ascii=False) + "\n").encode("utf-8"))
        if fh is not raw:
            fh.close()


def _check_args(recipe: str, out_dir, seed, eval_fraction) -> tuple[Path, float]:
    from qidlab.corpus.recipes import default_eval_fraction

    if out_dir is None:
        raise QidlabError("build_corpus needs out_dir")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise QidlabError(f"seed must be an integer, got {seed!r}")
    if eval_fraction is None:
        eval_fraction = default_eval_fraction(recipe)
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction <= 1:
        raise QidlabError(f"eval_fraction must be in [0, 1], got {eval_fraction!r}")
    return Path(out_dir).expanduser(), float(eval_fraction)


def _reusable(out: Path, key: dict, names: set[str]) -> Manifest | None:
    """The manifest of ``out`` when it can be reused; None when ``out`` is free (or a damaged
    build of the same corpus); ``QidlabError`` when it holds something else."""
    if (out / MANIFEST_FILE).is_file():
        old = load_manifest(out)
        if old.key != key:
            raise QidlabError(f"{out} holds a corpus built with another recipe, seed, eval fraction or input "
                              f"({old.recipe}, seed {old.seed}); choose another folder or delete it")
        if set(old.files) == names and verify(old):
            return Manifest(**{**asdict(old), "path": out, "reused": True})
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QidlabError(f"{out} exists, is not empty and holds no corpus manifest; choose another folder")
    return None


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build ``tmp`` to ``out``, replacing an empty folder or an old build."""
    old = None
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_corpus(recipe: str = "stdlib", out_dir=None, *, files=None, seed: int = 0, eval_fraction=None,
                 compress: bool = False, cache=None, fetcher=None, log=None) -> Manifest:
    """Build (or reuse) the corpus of ``recipe`` in ``out_dir`` and return its manifest.

    ``recipe``: one of ``qidlab.corpus.RECIPES`` (``files`` takes ``files=[paths]``).
    ``eval_fraction`` in [0, 1]; None = the recipe's default (1 for the eval-only recipes
    ``brown`` and ``shakespeare``, else 0.05). ``compress``: write ``.jsonl.gz``. ``cache``,
    ``fetcher``: where fetched sources are kept and how they are fetched
    (``qidlab.corpus.fetch``). ``log``: a function taking progress lines. Any problem:
    ``QidlabError``, and nothing written to ``out_dir``.
    """
    from qidlab.corpus.fetch import fresh_dir
    from qidlab.corpus.recipes import recipe_docs
    from qidlab.evaluate.evalset import docs_hash

    out, eval_fraction = _check_args(recipe, out_dir, seed, eval_fraction)
    named, sources = recipe_docs(recipe, files, cache=cache, fetcher=fetcher, log=log)
    texts = [t for _, t in named]
    key = {"format": FORMAT, "recipe": recipe, "seed": seed, "eval_fraction": eval_fraction,
           "input_hash": docs_hash(texts)}
    names = {f"{s}.jsonl" + (".gz" if compress else "") for s in SPLITS}
    reused = _reusable(out, key, names)
    if reused is not None:
        return reused

    unique, counts = deduplicate(texts, [s["documents"] for s in sources])
    if not unique:
        raise QidlabError(f"recipe {recipe!r}: no non-empty documents")
    train_idx, eval_idx = split_indices(len(unique), eval_fraction, seed)
    splits = {"train": [unique[i] for i in train_idx], "eval": [unique[i] for i in eval_idx]}
    sources = [{**s, **c} for s, c in zip(sources, counts)]

    tmp = fresh_dir(out.parent, f".{out.name}.tmp-")
    try:
        out_files = {}
        for split, docs in splits.items():
            f = tmp / (f"{split}.jsonl" + (".gz" if compress else ""))
            write_jsonl(f, docs)
            out_files[f.name] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
        licenses = sorted({lic for s in sources for lic in s.get("licenses", ())})
        manifest = Manifest(
            path=out, recipe=recipe, seed=seed, eval_fraction=eval_fraction, sources=sources, licenses=licenses,
            documents={"read": len(texts), "empty": sum(c["empty"] for c in counts),
                       "duplicates": sum(c["duplicates"] for c in counts), "train": len(splits["train"]),
                       "eval": len(splits["eval"])},
            bytes={s: sum(len(d.encode("utf-8")) for d in docs) for s, docs in splits.items()},
            files=out_files, input_hash=key["input_hash"])
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
