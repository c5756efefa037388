"""Recipes: where a corpus's documents come from. Each returns ``(docs, sources)``.

``docs`` is a list of ``(name, text)`` in a fixed source order (the name says where the document
came from: a relative path, ``file.jsonl:17``); ``sources`` is a JSON-serialisable list, one entry
per source, in the same order, with the number of ``documents`` it gave (consecutive in ``docs``)
and its ``licenses`` (``["unknown"]`` when none is known: the user's to check).

* ``stdlib``: the ``.py`` files of the running interpreter's standard library
  (``sysconfig.get_paths()["stdlib"]``), each file one document, by sorted relative path;
  folders named ``test``, ``tests`` or ``idle_test`` (the test suites) and ``site-packages``
  are left out, and so is a file that is not UTF-8. Licence: PSF-2.0.
* ``files``: local paths, as ``qidlab.evaluate.load_eval_set`` reads them: a text file
  (documents separated by blank lines), a folder (each file one document, recursive, sorted),
  ``*.jsonl``/``*.ndjson`` (field ``text``), ``*.parquet`` (column ``text``); ``.gz`` files are
  decompressed.
* ``debian-en``, ``debian-python``, ``brown``, ``shakespeare``: fetched sources
  (``qidlab.corpus.fetched``): English from Debian documentation packages, Python code (the
  standard library without its tests, and twelve libraries) from Debian packages, and two
  eval-only sets (their default eval fraction is 1).
"""

from __future__ import annotations

import platform
import sysconfig
from pathlib import Path

from qidlab.documents import read_source
from qidlab.errors import QidlabError

RECIPES = ("stdlib", "files", "debian-en", "debian-python", "brown", "shakespeare")
EVAL_ONLY = frozenset({"brown", "shakespeare"})
DEFAULT_EVAL_FRACTION = 0.05
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
STDLIB_LICENSE = "PSF-2.0"


def stdlib_docs(root: str | Path | None = None) -> tuple[list[tuple[str, str]], list[dict]]:
    """The standard library's ``.py`` sources (module docstring); ``root`` overrides the location."""
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise QidlabError(f"recipe 'stdlib': the standard library folder {root} does not exist")
    docs, skipped = [], []
    for f in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root)
        if any(part in STDLIB_EXCLUDED_DIRS for part in rel.parts[:-1]) or not f.is_file():
            continue
        try:
            docs.append((rel.as_posix(), f.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            skipped.append(rel.as_posix())
    if not docs:
        raise QidlabError(f"recipe 'stdlib': no .py files under {root}")
    source = {"kind": "stdlib", "path": str(root), "python": platform.python_version(),
              "implementation": platform.python_implementation(), "licenses": [STDLIB_LICENSE],
              "documents": len(docs), "bytes": sum(len(t.encode("utf-8")) for _, t in docs),
              "excluded_dirs": sorted(STDLIB_EXCLUDED_DIRS), "skipped_not_utf8": skipped}
    return docs, [source]


def files_docs(paths, text_field: str = "text") -> tuple[list[tuple[str, str]], list[dict]]:
    """Documents from local files/folders/JSONL/Parquet, in the order the paths are given."""
    if not paths:
        raise QidlabError("recipe 'files' needs at least one path (`files` PATH ...)", params=("files",))
    docs, sources = [], []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise QidlabError(f"recipe 'files': source does not exist: {path}")
        kind, texts = read_source(path, text_field)
        docs += [(f"{path.name}:{i}", t) for i, t in enumerate(texts)]
        sources.append({"kind": kind, "path": str(path.resolve()), "documents": len(texts),
                        "bytes": sum(len(t.encode("utf-8")) for t in texts), "licenses": ["unknown"]})
    return docs, sources


def default_eval_fraction(recipe: str) -> float:
    """1 (every document held out) for the eval-only recipes, else ``DEFAULT_EVAL_FRACTION``."""
    return 1.0 if recipe in EVAL_ONLY else DEFAULT_EVAL_FRACTION
