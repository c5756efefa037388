"""Paired bootstrap over documents: a confidence interval for QiD = loss_q - loss16 (pure numpy)."""

from __future__ import annotations

import numpy as np

from qidlab.errors import QidlabError


def paired_bootstrap_qid(scores16, scoresq, n_boot: int = 1000, seed: int = 0,
                         unit: str = "nats_per_token") -> tuple[float, float, float]:
    """``(qid, lo, hi)``: QiD = loss(scoresq) - loss(scores16) in ``unit`` and its 95% interval.

    Both ``DocScores`` must cover the same documents in the same order (equal ``n_bytes``). Each
    replicate draws documents with replacement, the *same* draw for both models (paired), and
    recomputes each loss as a ratio of sums (token-weighted, as ``DocScores.loss``); the interval
    is the 2.5 and 97.5 percentiles of the replicate QiDs. Identical scores give exactly
    ``(0, 0, 0)``.
    """
    if len(scores16) != len(scoresq):
        raise QidlabError(f"paired bootstrap needs the same documents: {len(scores16)} vs {len(scoresq)} documents")
    if not np.array_equal(scores16.n_bytes, scoresq.n_bytes):
        raise QidlabError("paired bootstrap needs the same documents in the same order (document bytes differ)")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise QidlabError(f"n_boot must be a positive integer, got {n_boot!r}")
    num16, den16 = (np.asarray(a, dtype=np.float64) for a in scores16.totals(unit))
    numq, denq = (np.asarray(a, dtype=np.float64) for a in scoresq.totals(unit))
    qid = scoresq.loss(unit) - scores16.loss(unit)
    n = len(num16)
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))  # bound the (chunk, n) count matrix
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)  # (k, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates[start:start + k] = (counts @ numq) / (counts @ denq) - (counts @ num16) / (counts @ den16)
    replicates = replicates[np.isfinite(replicates)]  # a draw of only token-less documents has no loss
    if replicates.size == 0:
        raise QidlabError("no bootstrap replicate had any scored tokens")
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return float(qid), float(lo), float(hi)
