"""Corpus stage: build a deduplicated, split corpus from a named recipe.

* ``build_corpus(recipe, out_dir, *, seed=0, eval_fraction=None, compress=False, cache=None)``
  -> ``Manifest``: writes ``train.jsonl`` / ``eval.jsonl`` (one ``{"text": ...}`` per line;
  ``.jsonl.gz`` with ``compress=True``) and ``manifest.json``;
* ``load_manifest(out_dir)`` -> ``Manifest`` of a built corpus; ``read_documents(out_dir, split)``
  (both from ``qidlab.documents``, which reads corpus folders for every stage);
* ``RECIPES``: ``stdlib`` (the default), ``files``, ``debian-en`` (English from Debian
  documentation packages), ``debian-python`` (Python code from Debian packages), and the
  eval-only ``brown`` and ``shakespeare``. Fetched sources are kept in a cache folder
  (``qidlab.corpus.fetch``).

Importing this package loads nothing heavy.
"""

from qidlab.corpus.build import build_corpus
from qidlab.corpus.recipes import RECIPES
from qidlab.documents import MANIFEST_FILE, Manifest, load_manifest, read_documents

__all__ = ["MANIFEST_FILE", "RECIPES", "Manifest", "build_corpus", "load_manifest", "read_documents"]
