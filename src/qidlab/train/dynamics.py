"""Weight dynamics between saved checkpoints (Ouyang et al. 2024, Fig. 12): pure numpy.

For a checkpoint ``step`` and the previous saved checkpoint ``prev_step``, ``dw = w_step - w_prev``
over every weight matrix of the linears inside the transformer blocks (GPT-NeoX: attention
``query_key_value`` and ``dense``, MLP ``dense_h_to_4h`` and ``dense_4h_to_h``; the matrices that
post-training quantization rounds by default; biases, LayerNorms, embeddings and the head are left
out). ``change_summary`` reduces all of them together to:

* ``log10_edges``, ``counts``: a histogram of ``log10 |dw|`` with the fixed edges ``LOG10_EDGES``
  (-12 to 1 in steps of 0.1, so runs and checkpoints compare bin by bin); values below the first
  edge, exact zeros included, count in the first bin and values above the last edge in the last,
  so ``sum(counts)`` is the number of weights;
* ``quantiles``: the 0.5, 0.9 and 0.99 quantiles of ``|dw|`` (numpy's linear interpolation);
* ``rms`` = sqrt(mean dw^2) and ``mean_abs`` = mean |dw|.

Weights are in the model's own units (no normalisation); float32 weights cannot resolve changes much
below 1e-9 of their size, so the lowest bins stay empty except for exact zeros.
"""

from __future__ import annotations

import numpy as np

LOG10_EDGES = tuple(round(-12.0 + 0.1 * i, 1) for i in range(131))  # -12.0, -11.9, ..., 1.0
QUANTILES = (0.5, 0.9, 0.99)


def change_summary(deltas) -> dict:
    """Histogram, quantiles, rms and mean of ``|dw|`` over all arrays in ``deltas`` (module docstring)."""
    a = np.abs(np.concatenate([np.asarray(d, dtype=np.float32).ravel() for d in deltas]))  # (n,)
    if a.size == 0:
        raise ValueError("no weights to compare")
    edges = np.asarray(LOG10_EDGES)
    with np.errstate(divide="ignore"):
        logs = np.clip(np.log10(a), edges[0], edges[-1])
    counts, _ = np.histogram(logs, bins=edges)
    q = np.quantile(a, QUANTILES)
    return {"log10_edges": list(LOG10_EDGES), "counts": [int(c) for c in counts],
            "quantiles": {str(p): float(v) for p, v in zip(QUANTILES, q)},
            "rms": float(np.sqrt(np.sum(np.square(a), dtype=np.float64) / a.size)),
            "mean_abs": float(np.sum(a, dtype=np.float64) / a.size)}
