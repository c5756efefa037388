"""Recipes: where a corpus's documents come from. Each returns ``(docs, sources)``.

``docs`` is a list of ``(name, text)`` in a fixed source order (the name says where the document
came from: a relative path, ``file.jsonl:17``); ``sources`` is a JSON-serialisable list, one entry
per source, with its licence where known (``None`` = unknown; the user's to check).

* ``stdlib``: the ``.py`` files of the running interpreter's standard library
  (``sysconfig.get_paths()["stdlib"]``), each file one document, by sorted relative path;
  folders named ``test``, ``tests`` or ``idle_test`` (the test suites) and ``site-packages``
  are left out, and so is a file that is not UTF-8. Licence: PSF-2.0.
* ``files``: local paths, as ``qidlab.evaluate.load_eval_set`` reads them: a text file
  (documents separated by blank lines), a folder (each file one document, recursive, sorted),
  ``*.jsonl``/``*.ndjson`` (field ``text``), ``*.parquet`` (column ``text``).
"""

from __future__ import annotations

import platform
import sysconfig
from pathlib import Path

from qidlab.errors import QidlabError

RECIPES = ("stdlib", "files")
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
              "implementation": platform.python_implementation(), "license": STDLIB_LICENSE,
              "excluded_dirs": sorted(STDLIB_EXCLUDED_DIRS), "skipped_not_utf8": skipped}
    return docs, [source]


def files_docs(paths, text_field: str = "text") -> tuple[list[tuple[str, str]], list[dict]]:
    """Documents from local files/folders/JSONL/Parquet, in the order the paths are given."""
    from qidlab.evaluate import evalset

    if not paths:
        raise QidlabError("recipe 'files' needs at least one path (--files PATH ...)")
    docs, sources = [], []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise QidlabError(f"recipe 'files': source does not exist: {path}")
        suffix = path.suffix.lower()
        if path.is_dir():
            kind, texts = "folder", evalset._from_folder(path)
        elif suffix in evalset.JSONL_SUFFIXES:
            kind, texts = "jsonl", evalset._from_jsonl(path, text_field)
        elif suffix in evalset.PARQUET_SUFFIXES:
            kind, texts = "parquet", evalset._from_parquet(path, text_field)
        else:
            kind, texts = "text", evalset._from_text_file(path)
        docs += [(f"{path.name}:{i}", t) for i, t in enumerate(texts)]
        sources.append({"kind": kind, "path": str(path.resolve()), "documents": len(texts), "license": None})
    return docs, sources


def recipe_docs(recipe: str, files=None) -> tuple[list[tuple[str, str]], list[dict]]:
    if recipe == "stdlib":
        if files:
            raise QidlabError("recipe 'stdlib' takes no paths (did you mean recipe 'files'?)")
        return stdlib_docs()
    if recipe == "files":
        return files_docs(files)
    raise QidlabError(f"unknown corpus recipe {recipe!r} (known: {', '.join(RECIPES)})")
