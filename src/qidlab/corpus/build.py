"""Build a corpus folder: exact-duplicate removal, a seeded document-level split, a manifest.

A corpus folder holds::

    train.jsonl     one {"text": ...} per line, in source order
    eval.jsonl      the held-out documents, in source order (no document is in both)
    manifest.json   recipe, sources and licences, counts, sha256 of each file, seed (no timestamps)

Steps, in order: read the recipe's documents (``qidlab.corpus.recipes``); drop documents that are
empty or whitespace only; drop exact duplicates (same sha256 of the UTF-8 text; the first
occurrence is kept); pick ``round(eval_fraction * n)`` documents for eval (at least one when
``eval_fraction > 0``) with ``numpy.random.default_rng(seed).permutation(n)``; write.

Building again into a folder whose manifest has the same key (recipe, seed, eval fraction and the
hash of the input documents) and whose files still match their sha256 reuses it. A folder holding
a corpus with another key is refused rather than overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qidlab.errors import QidlabError

FORMAT = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a corpus folder (``path``).

    ``documents``: counts ``read`` (from the sources), ``empty`` and ``duplicates`` (dropped),
    ``train``, ``eval``. ``bytes``: UTF-8 bytes of the documents' text per split. ``files``:
    ``{"train.jsonl": {"sha256", "bytes"}, ...}``. ``input_hash``: sha256 over the sources'
    documents in order (``qidlab.evaluate.evalset.docs_hash``). ``reused`` is True when
    ``build_corpus`` found the folder already built (not stored).
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
        if split not in SPLITS:
            raise QidlabError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        return self.path / f"{split}.jsonl"

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
    """The documents of one split of a built corpus, in file order."""
    path = load_manifest(out_dir).split_path(split)
    if not path.is_file():
        raise QidlabError(f"{path} is missing: rebuild the corpus")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and eval document indices (each sorted) of ``n`` documents; pure."""
    import numpy as np

    n_eval = round(eval_fraction * n)
    if eval_fraction > 0:
        n_eval = max(1, n_eval)
    if n - n_eval < 1:
        raise QidlabError(f"{n} document(s) cannot be split with eval_fraction={eval_fraction}: no training document left")
    eval_idx = set(np.random.default_rng(seed).permutation(n)[:n_eval].tolist())
    return [i for i in range(n) if i not in eval_idx], sorted(eval_idx)


def _write_jsonl(path: Path, docs: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build_corpus(recipe: str = "stdlib", out_dir=None, *, files=None, seed: int = 0,
                 eval_fraction: float = 0.05) -> Manifest:
    """Build (or reuse) the corpus of ``recipe`` in ``out_dir`` and return its manifest.

    ``recipe``: ``"stdlib"`` (default) or ``"files"`` (with ``files=[paths]``); see
    ``qidlab.corpus.recipes``. ``eval_fraction`` in [0, 1). Any problem: ``QidlabError``.
    """
    from qidlab.corpus.recipes import recipe_docs
    from qidlab.evaluate.evalset import docs_hash

    if out_dir is None:
        raise QidlabError("build_corpus needs out_dir")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise QidlabError(f"seed must be an integer, got {seed!r}")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction < 1:
        raise QidlabError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    out = Path(out_dir).expanduser()
    named, sources = recipe_docs(recipe, files)
    texts = [t for _, t in named]
    key = {"format": FORMAT, "recipe": recipe, "seed": seed, "eval_fraction": float(eval_fraction),
           "input_hash": docs_hash(texts)}
    if (out / MANIFEST_FILE).is_file():
        old = load_manifest(out)
        if old.key != key:
            raise QidlabError(f"{out} holds a corpus built with another recipe, seed, eval fraction or input "
                              f"({old.recipe}, seed {old.seed}); choose another folder or delete it")
        if verify(old):
            return Manifest(**{**asdict(old), "path": out, "reused": True})
    elif out.exists() and any(out.iterdir()):
        raise QidlabError(f"{out} exists, is not empty and holds no corpus manifest; choose another folder")

    seen, unique, empty, dups = set(), [], 0, 0
    for text in texts:
        if not text.strip():
            empty += 1
            continue
        h = hashlib.sha256(text.encode("utf-8")).digest()
        if h in seen:
            dups += 1
            continue
        seen.add(h)
        unique.append(text)
    if not unique:
        raise QidlabError(f"recipe {recipe!r}: no non-empty documents")
    train_idx, eval_idx = split_indices(len(unique), float(eval_fraction), seed)
    splits = {"train": [unique[i] for i in train_idx], "eval": [unique[i] for i in eval_idx]}

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # the manifest is written last: it marks a complete build
    out_files = {}
    for split, docs in splits.items():
        f = out / f"{split}.jsonl"
        _write_jsonl(f, docs)
        out_files[f.name] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
    licenses = sorted({s["license"] for s in sources if s.get("license")})
    manifest = Manifest(
        path=out, recipe=recipe, seed=seed, eval_fraction=float(eval_fraction), sources=sources, licenses=licenses,
        documents={"read": len(texts), "empty": empty, "duplicates": dups, "train": len(splits["train"]),
                   "eval": len(splits["eval"])},
        bytes={s: sum(len(d.encode("utf-8")) for d in docs) for s, docs in splits.items()},
        files=out_files, input_hash=key["input_hash"])
    tmp = out / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)
    return manifest
