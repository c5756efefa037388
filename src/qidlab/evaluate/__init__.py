"""Evaluate stage: per-document losses of a model on a fixed eval set, and QiD with a paired CI.

* ``load_eval_set(source, n_docs=, seed=)`` -> ``EvalSet`` (documents + content hash);
* ``evaluate_loss(model, tokenizer, eval_set)`` (= ``score``) -> ``DocScores``: per-document
  nats, tokens, bytes, words (and reference-tokenizer tokens); ``.summary()`` gives nats/token,
  bits/byte, nats per reference token, nats/word and word perplexity; ``prefix=`` (bos/eos/none)
  and ``windows=`` (sliding/disjoint, the latter lm-evaluation-harness's rolling windows);
* ``paired_bootstrap_qid(scores16, scoresq)`` -> ``(qid, lo, hi)``.

How text is scored is pinned down in ``qidlab.evaluate.score``'s docstring. Importing this
package does not import torch or transformers.
"""

from __future__ import annotations

from qidlab.documents import docs_hash
from qidlab.evaluate.bootstrap import paired_bootstrap_qid
from qidlab.evaluate.evalset import EvalSet, load_eval_set
from qidlab.evaluate.score import (PREFIXES, UNITS, WINDOWS, DocScores, count_words, disjoint_windows, evaluate_loss,
                                   score, score_windows)

__all__ = ["PREFIXES", "UNITS", "WINDOWS", "DocScores", "EvalSet", "count_words", "disjoint_windows", "docs_hash",
           "evaluate_loss", "load_eval_set", "paired_bootstrap_qid", "score", "score_windows"]
