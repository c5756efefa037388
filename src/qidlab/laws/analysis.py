"""What the papers compute from a fitted law (pure functions of parameters):

* ``token_grid``      Ouyang Table 1: tokens to reach each QiD, per model size and bit width
* ``projection``      Ouyang Fig. 1: QiD and Loss16 + QiD up to 100T tokens, with where the
                      quantized loss passes the worse-than-random level ln(vocabulary size)
* ``quantized_loss``  loss16 and loss = loss16 + QiD beside a QiD prediction
* ``training_level``  Ouyang Sec. 4.2: the tokens a model "behaves as if trained on", from its QiD
* ``min_bits``        the smallest integer bit width whose QiD stays within a budget
* ``critical_tokens`` D_crit of Kumar 2024 (App. E.1) and Sun 2025
* ``optimal_format``  Sun 2025's best exponent/mantissa split for a total bit width
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import QidlabError
from .registry import get_law
from .solve import evaluate, predict_point, solve

#: Tokens per parameter of a Chinchilla-optimal model (Hoffmann et al. 2022).
CHINCHILLA_TOKENS_PER_PARAM = 20.0
#: GPT-NeoX-20B / Pythia tokenizer size; ln of it is the loss of a uniform guess.
PYTHIA_VOCAB = 50277
#: Llama-3's tokenizer size: Ouyang 2024 counts every loss and QiD per Llama-3 8B token (App. A.1).
LLAMA3_VOCAB = 128256

ParamsFor = Callable[[Mapping[str, float]], Mapping[str, float]]


def _params_for(params) -> ParamsFor:
    return params if callable(params) else (lambda values: params)


def token_grid(law, params, sizes: Sequence[float], bits: Sequence[float], qids: Sequence[float], **fixed):
    """Table 1: rows (n_params, bits, qid, tokens, tokens_trillion) for every combination.

    ``params`` is a dict, or a function of the row's inputs returning one (so a per-bit-width
    fit can serve each column). Extra ``fixed`` inputs (e.g. group_size) apply to every row."""
    import pandas as pd

    pick = _params_for(params)
    rows = []
    for n in sizes:
        for q in qids:
            for b in bits:
                known = {"n_params": n, "bits": b, **fixed}
                d = solve(law, pick(known), known, q, "tokens")
                rows.append({"n_params": n, "bits": b, "qid": q, "tokens": d, "tokens_trillion": d / 1e12})
    return pd.DataFrame(rows)


def projection(
    law, params, sizes, bits, *, max_tokens: float = 1e14, min_tokens: float = 1e9, points: int = 61,
    loss16_params: Mapping[str, float] | None = None, vocab_size: int = PYTHIA_VOCAB,
):
    """Fig. 1 as data. Returns (curves, crossings).

    curves: n_params, bits, tokens, qid, loss16, loss (= loss16 + qid), worse_than_random.
    crossings: per (n_params, bits), the tokens at which loss passes ln(vocab_size), or
    None when it does not within ``max_tokens``. loss16 comes from the ``kaplan`` law
    (Ouyang Fig. 7 constants unless ``loss16_params`` is given)."""
    import pandas as pd

    kaplan = get_law("kaplan")
    k16 = dict(loss16_params or kaplan.default_constants())
    pick = _params_for(params)
    random_level = math.log(vocab_size)
    tokens = np.geomspace(min_tokens, max_tokens, points)
    curves, crossings = [], []
    for n in sizes:
        loss16 = evaluate(kaplan, k16, {"n_params": n, "tokens": tokens})
        for b in bits:
            known = {"n_params": n, "bits": b}
            p = pick(known)
            qid = evaluate(law, p, {**known, "tokens": tokens})
            loss = loss16 + qid
            for t, q, l16, lq in zip(tokens, qid, loss16, loss):
                curves.append({"n_params": n, "bits": b, "tokens": t, "qid": q, "loss16": l16, "loss": lq,
                               "worse_than_random": bool(lq > random_level)})
            crossings.append({"n_params": n, "bits": b, "random_loss": random_level,
                              "tokens_worse_than_random": _crossing(law, p, k16, known, random_level, max_tokens)})
    return pd.DataFrame(curves), pd.DataFrame(crossings)


def random_level_note(vocab_size: int) -> str | None:
    """Why a worse-than-random level ln(``vocab_size``) is not the paper's (None when it is):
    Ouyang 2024 counts losses per Llama-3 token, so its level is ln(128256) = 11.76 nats."""
    if int(vocab_size) == LLAMA3_VOCAB:
        return None
    return (f"worse than random here is ln({int(vocab_size)}) = {math.log(vocab_size):.2f} nats per token of a "
            f"{int(vocab_size)}-token vocabulary; the paper counts losses per Llama-3 token (V = {LLAMA3_VOCAB}, "
            f"ln V = {math.log(LLAMA3_VOCAB):.2f}): this level and its crossings are not the paper's")


def _crossing(law, p, k16, known, level, max_tokens):
    from scipy.optimize import brentq

    kaplan = get_law("kaplan")

    def gap(u):
        d = math.exp(u)
        return float(evaluate(kaplan, k16, {"n_params": known["n_params"], "tokens": d})[0]
                     + evaluate(law, p, {**known, "tokens": d})[0] - level)

    grid = np.linspace(math.log(1e3), math.log(max_tokens), 400)
    values = np.array([gap(u) for u in grid])
    change = np.flatnonzero((values[:-1] <= 0) & (values[1:] > 0))
    if change.size == 0:
        return None
    i = change[0]
    return float(math.exp(brentq(gap, grid[i], grid[i + 1], xtol=1e-12)))


def quantized_loss(law, qid: float, values: Mapping[str, Any]) -> dict[str, Any]:
    """What a predicted ``qid`` (nats/token) means for the loss at ``values``: loss16, its source,
    and loss = loss16 + qid. loss16 is ``values["loss16"]`` when given, else the ``kaplan`` law
    with Ouyang 2024 Fig. 7's constants. Empty unless the law predicts qid from n_params and
    tokens and ``values`` give both."""
    law = get_law(law)
    if law.quantity != "qid" or not {"n_params", "tokens"} <= set(values) & set(law.variable_names):
        return {}
    if "loss16" in values:
        loss16, how = values["loss16"], "given"
    else:
        kaplan = get_law("kaplan")
        loss16 = predict_point(kaplan, kaplan.default_constants(), {k: values[k] for k in kaplan.variable_names})
        how = "kaplan law, Ouyang 2024 Fig. 7 constants"
    return {"loss16": loss16, "loss": loss16 + qid, "loss16_source": how}


def training_level(law, params, n_params: float, bits: float, qid: float, **other) -> dict[str, float]:
    """Sec. 4.2: the tokens at which the law predicts the measured ``qid`` for this model."""
    known = {"n_params": n_params, "bits": bits, **other}
    tokens = solve(law, params, known, qid, "tokens")
    ratio = tokens / n_params
    return {"tokens": tokens, "tokens_per_param": ratio,
            "chinchilla_multiple": ratio / CHINCHILLA_TOKENS_PER_PARAM}


def min_bits(law, params, known: Mapping[str, float], budget: float, max_bits: int = 16) -> dict[str, float]:
    """The smallest integer bit width with predicted QiD <= ``budget`` (and the exact crossing)."""
    law = get_law(law)
    if not (math.isfinite(budget) and budget > 0):
        raise QidlabError(f"`budget` must be a positive number of nats (got {budget:g})", params=("budget",))
    for b in range(1, max_bits + 1):
        if evaluate(law, params, {**known, "bits": b})[0] <= budget:
            exact = None
            if b > 1:
                exact = solve(law, params, known, budget, "bits", search=(1.0, float(b)))
            return {"bits": float(b), "bits_exact": exact}
    raise QidlabError(f"no bit width up to {max_bits} keeps {law.quantity} <= {budget:g} for "
                      + ", ".join(f"{k}={v:g}" for k, v in known.items()))


# ---------------------------------------------------------------------------
# critical data size and optimal formats


def critical_tokens(law_name: str, params: Mapping[str, float], values: Mapping[str, float]) -> float:
    """D_crit: the training tokens beyond which more data makes the (quantized) loss worse.

    kumar2024-ptq (App. E.1): minimises B*D^-beta + delta_PTQ(D); B and beta are the
      precision law's (kumar2024-qat) unless given in ``params`` as ``B``/``beta``.
    sun2025: [d*gamma*N^alpha*(E+0.5)^delta*(M+0.5)^nu / log2(B)]^(1/(2*beta))."""
    v = dict(values)
    if law_name in ("kumar2024-ptq", "kumar2024-qat"):
        ptq = dict(get_law("kumar2024-ptq").default_constants())
        ptq.update({k: p for k, p in params.items() if k in ptq})
        qat = get_law("kumar2024-qat").default_constants()
        B, beta = params.get("B", qat["B"]), params.get("beta", qat["beta"])
        _need(v, ("n_params", "bits"), law_name)
        num = beta * B * v["n_params"] ** ptq["gamma_N"] * math.exp(v["bits"] / ptq["gamma_post"])
        return (num / (ptq["gamma_D"] * ptq["C_T"])) ** (1.0 / (ptq["gamma_D"] + beta))
    if law_name == "sun2025":
        _need(v, ("n_params", "exp_bits", "man_bits", "block_size"), law_name)
        p = params
        if v["block_size"] <= 1:
            raise QidlabError("block_size must be > 1 (log2 of it scales the quantization term)")
        inner = (p["d"] * p["gamma"] * v["n_params"] ** p["alpha"] * (v["exp_bits"] + 0.5) ** p["delta"]
                 * (v["man_bits"] + 0.5) ** p["nu"] / math.log2(v["block_size"]))
        return inner ** (1.0 / (2 * p["beta"]))
    raise QidlabError(f"critical tokens are defined for kumar2024-ptq and sun2025, not {law_name!r}")


def _need(values, names, law_name):
    missing = [n for n in names if n not in values]
    if missing:
        raise QidlabError(f"{law_name} critical tokens need {', '.join(missing)} (`values` NAME=VALUE)",
                          params=("values",))


def optimal_format(params: Mapping[str, float], bits: int) -> dict[str, float | str]:
    """Sun 2025: the exponent/mantissa split of ``bits`` total (1 sign bit) with the lowest loss.

    Maximises (E+0.5)^delta * (M+0.5)^nu over integers E >= 1, M >= 0 with E + M + 1 = bits;
    ``man_bits_continuous`` is the real-valued optimum nu*P/(delta+nu) - 0.5."""
    bits = int(bits)
    if bits < 3:
        raise QidlabError("a floating-point format needs at least 3 bits (sign, exponent, mantissa)")
    delta, nu = params["delta"], params["nu"]
    best = max(range(0, bits - 1), key=lambda m: delta * math.log(bits - 1 - m + 0.5) + nu * math.log(m + 0.5))
    e = bits - 1 - best
    return {"bits": bits, "exp_bits": e, "man_bits": best, "format": f"E{e}M{best}",
            "man_bits_continuous": nu * bits / (delta + nu) - 0.5}


def grid_errors(grid, paper, decimals: int = 4):
    """Worst relative error (%) per bit width of a ``token_grid`` against a published table
    with columns n_params, bits, qid, tokens_trillion: raw, and after rounding the prediction
    to the table's printed precision (``decimals`` places of trillions)."""
    merged = grid.merge(paper, on=["n_params", "bits", "qid"], suffixes=("", "_paper"))
    if len(merged) != len(paper):
        raise QidlabError("the grid does not cover every cell of the published table")
    raw = (merged.tokens_trillion / merged.tokens_trillion_paper - 1).abs()
    printed = (merged.tokens_trillion.round(decimals) / merged.tokens_trillion_paper - 1).abs()
    return {float(b): {"raw": float(raw[merged.bits == b].max() * 100),
                       "printed": float(printed[merged.bits == b].max() * 100)}
            for b in sorted(merged.bits.unique())}
