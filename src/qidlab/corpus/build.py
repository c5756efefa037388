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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from qidlab.corpus import fetched
from qidlab.corpus.markup import normalise
from qidlab.corpus.recipes import RECIPES, default_eval_fraction, files_docs, stdlib_docs
from qidlab.documents import CORPUS_FORMAT, MANIFEST_FILE, SPLITS, Manifest, docs_hash, load_manifest
from qidlab.errors import QidlabError
from qidlab.files import building, open_atomic
from qidlab.provenance import file_sha256

GZIP_LEVEL = 6


def verify(manifest: Manifest) -> bool:
    """True when every output file exists with the size and sha256 the manifest records."""
    for name, info in manifest.files.items():
        f = manifest.path / name
        if not f.is_file() or f.stat().st_size != info["bytes"] or file_sha256(f) != info["sha256"]:
            return False
    return True


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and eval document indices (each sorted) of ``n`` documents; pure.
    ``eval_fraction == 1`` puts every document in eval (an eval-only corpus)."""
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
    name ends in ``.gz``. Written atomically (``qidlab.files``)."""
    with open_atomic(path, "wb") as raw:
        fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) \
            if path.name.endswith(".gz") else raw
        for d in docs:
            fh.write((json.dumps({"text": d}, ensure_ascii=False) + "\n").encode("utf-8"))
        if fh is not raw:
            fh.close()


def _check_args(recipe: str, out_dir, seed, eval_fraction) -> tuple[Path, float]:
    if out_dir is None:
        raise QidlabError("build_corpus needs out_dir")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise QidlabError(f"seed must be an integer, got {seed!r}")
    if eval_fraction is None:
        eval_fraction = default_eval_fraction(recipe)
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction <= 1:
        raise QidlabError(f"`eval_fraction` must be in [0, 1], got {eval_fraction!r}", params=("eval_fraction",))
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


def recipe_docs(recipe: str, files=None, *, cache=None, fetcher=None, log=None) \
        -> tuple[list[tuple[str, str]], list[dict]]:
    """The documents and sources of ``recipe``; ``cache``/``fetcher``/``log`` serve the fetched ones."""
    fetched_recipes = {"debian-en": fetched.debian_en_docs, "debian-python": fetched.debian_python_docs,
                       "brown": fetched.brown_docs, "shakespeare": fetched.shakespeare_docs}
    if recipe not in RECIPES:
        raise QidlabError(f"unknown corpus recipe {recipe!r} (known: {', '.join(RECIPES)})")
    if recipe == "files":
        return files_docs(files)
    if files:
        raise QidlabError(f"recipe {recipe!r} takes no paths (did you mean recipe 'files'?)")
    if recipe == "stdlib":
        return stdlib_docs()
    return fetched_recipes[recipe](cache=cache, fetcher=fetcher, log=log)


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
    out, eval_fraction = _check_args(recipe, out_dir, seed, eval_fraction)
    named, sources = recipe_docs(recipe, files, cache=cache, fetcher=fetcher, log=log)
    texts = [t for _, t in named]
    key = {"format": CORPUS_FORMAT, "recipe": recipe, "seed": seed, "eval_fraction": eval_fraction,
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

    with building(out) as tmp:
        out_files = {}
        for split, docs in splits.items():
            f = tmp / (f"{split}.jsonl" + (".gz" if compress else ""))
            write_jsonl(f, docs)
            out_files[f.name] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
        licenses = sorted({lic for s in sources for lic in s.get("licenses", ())})
        manifest = Manifest(
            path=out, recipe=recipe, seed=seed, eval_fraction=eval_fraction, sources=sources, licenses=licenses,
            documents={"read": len(texts), "empty": sum(c["empty"] for c in counts),
                       "duplicates": sum(c["duplicates"] for c in counts), "train": len(splits["train"]),
                       "eval": len(splits["eval"])},
            bytes={s: sum(len(d.encode("utf-8")) for d in docs) for s, docs in splits.items()},
            files=out_files, input_hash=key["input_hash"])
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return manifest
