"""Corpus stage: build a deduplicated, split training corpus from a named recipe.

* ``build_corpus(recipe, out_dir, *, seed=0, eval_fraction=0.05)`` -> ``Manifest``: writes
  ``train.jsonl`` / ``eval.jsonl`` (one ``{"text": ...}`` per line) and ``manifest.json``;
* ``load_manifest(out_dir)`` -> ``Manifest`` of a built corpus;
* ``RECIPES``: the recipe names (``stdlib``, the default, and ``files``).

Importing this package loads nothing heavy.
"""

from qidlab.corpus.build import MANIFEST_FILE, Manifest, build_corpus, load_manifest, read_documents
from qidlab.corpus.recipes import RECIPES

__all__ = ["MANIFEST_FILE", "RECIPES", "Manifest", "build_corpus", "load_manifest", "read_documents"]
