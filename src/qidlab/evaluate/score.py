"""Per-document negative log-likelihood of a causal LM: the measurement behind every loss and QiD.

How text is scored (the contract):

* each document is tokenized alone, ``tokenizer(doc, add_special_tokens=False)``: no context
  from other documents, no EOS appended;
* ``prefix`` (``PREFIXES``) says what the first document token is predicted from:
  ``"bos"`` prepends the tokenizer's BOS token, ``"eos"`` its EOS token, and every document
  token is scored; ``"none"`` prepends nothing and leaves the first token unscored (nothing to
  predict it from). The default (``prefix=None``) is BOS when the tokenizer has one, else EOS:
  lm-evaluation-harness's ``prefix_token_id`` (and, with neither, ``"none"``). Before ``prefix``
  existed a tokenizer without BOS was scored as ``"none"``; a study's unset ``[scoring] prefix``
  still is (``sweep.run.score_options``: a measurement's identity keeps its meaning).
  ``n_tokens`` counts the scored tokens: the document's token count, or that minus one under
  ``"none"``. The prefix must be a token the model saw in training:
  suites trained by qidlab before BOS = EOS (``qidlab.train.data``) never saw their
  ``<|bos|>``, so their ``"bos"`` prefix is an untrained embedding row;
* ``windows`` (``WINDOWS``): a sequence (prefix included) of ``L`` tokens that fits the context
  ``W`` (``max_length``, default the model's ``max_position_embeddings``) is scored in one pass.
  A longer one, under ``"sliding"`` (the default), is scored in overlapping windows
  (``score_windows``): window 0 is tokens ``[0, W)`` and scores targets ``1..W-1``; window k
  ends ``stride`` tokens after window k-1 (or at ``L``), spans the ``W`` tokens before its end,
  and scores only the targets after the previous window's end. Each token is scored exactly
  once; outside window 0 every scored token sees at least ``W - stride`` tokens of context (the
  last window may advance less than ``stride`` and then sees more). Under ``"disjoint"``
  (``disjoint_windows``) the windows are lm-evaluation-harness's ``loglikelihood_rolling``
  (``get_rolling_token_windows`` with ``context_len=1``, then ``make_disjoint_window``): the
  model reads at most ``W`` tokens and scores a target at every position it reads, so window 0
  scores targets ``1..W``, each later window the next ``W`` targets from the one token before
  them, and the last window (fewer targets left) is filled up with earlier tokens as context;
* ``nll_sum`` is in nats (natural log), accumulated in float64 from float32 log-softmax
  (``logsumexp(logits) - logits[target]``);
* only the scored positions' logits are computed: for the model types of ``PLAIN_HEAD_TYPES``
  the model's body runs on the batch and its output head on the scored positions' final hidden
  states, ``LOGIT_CHUNK_ELEMENTS`` logits at a time (the numbers ``model(...).logits`` would
  give, without a float32 ``batch x length x vocab`` tensor); other types run the whole model;
* ``n_bytes`` is the UTF-8 byte count of the whole document (bits per byte divides all scored
  nats by all bytes; under ``"none"`` the unscored first token's bytes are still counted);
  ``n_words`` is its word count as lm-evaluation-harness counts words for word perplexity
  (``len(re.split(r"\\s+", doc))``), so ``nats_per_word`` is lm-eval's ``log(word_perplexity)``.

Units (``UNITS``; each a ratio of sums over documents): ``nats_per_token`` (scored tokens),
``bits_per_byte``, ``nats_per_ref_token`` (tokens of a reference tokenizer) and
``nats_per_word``; ``word_perplexity`` (``DocScores.summary``) is ``exp(nats_per_word)``.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qidlab.documents import tokenizer_fingerprint
from qidlab.errors import QidlabError

UNITS = ("nats_per_token", "bits_per_byte", "nats_per_ref_token", "nats_per_word")
#: What the first document token is predicted from (module docstring); None: BOS, else EOS.
PREFIXES = ("bos", "eos", "none")
#: How a document longer than the context is cut (module docstring); the first is the default.
WINDOWS = ("sliding", "disjoint")

#: Model types whose causal-LM logits are exactly ``output_head(base_model(...).last_hidden_state)``:
#: no scaling or softcapping after the head (as Gemma 2's ``final_logit_softcapping``, Cohere's
#: ``logit_scale`` or Granite's ``logits_scaling`` apply), so ``score`` may run the head on the
#: scored positions alone. Any other type is scored from the full ``model(...).logits``.
PLAIN_HEAD_TYPES = frozenset({"gpt_neox", "llama", "qwen2", "qwen3", "mistral"})
#: Logits (rows x vocabulary) computed at once from the scored positions' hidden states: 2**26
#: float32 are 256 MiB (about 1,300 positions of a 50k vocabulary), whatever the batch size.
LOGIT_CHUNK_ELEMENTS = 2**26


@dataclass
class DocScores:
    """Per-document scores of one model on one eval set (arrays of shape ``(n_docs,)``)."""

    nll_sum: np.ndarray  # float64, nats summed over the scored tokens
    n_tokens: np.ndarray  # int64, model tokens scored
    n_bytes: np.ndarray  # int64, UTF-8 bytes of the document
    n_ref_tokens: np.ndarray | None = None  # int64, tokens of the reference tokenizer (if given)
    settings: dict = field(default_factory=dict)  # max_length, stride, prefix, windows, eval set hash
    n_words: np.ndarray | None = None  # int64, words as lm-evaluation-harness counts them (count_words)

    def __len__(self) -> int:
        return len(self.nll_sum)

    def totals(self, unit: str = "nats_per_token") -> tuple[np.ndarray, np.ndarray]:
        """Per-document ``(numerator, denominator)`` whose ratio of sums is the loss in ``unit``."""
        if unit == "nats_per_token":
            return self.nll_sum, self.n_tokens
        if unit == "bits_per_byte":
            return self.nll_sum / math.log(2), self.n_bytes
        if unit == "nats_per_ref_token":
            if self.n_ref_tokens is None:
                raise QidlabError("nats_per_ref_token needs scores made with reference_tokenizer=")
            return self.nll_sum, self.n_ref_tokens
        if unit == "nats_per_word":
            if self.n_words is None:
                raise QidlabError("nats_per_word needs scores with word counts (n_words)")
            return self.nll_sum, self.n_words
        raise QidlabError(f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")

    def loss(self, unit: str = "nats_per_token") -> float:
        """Corpus-level loss: sum of numerators over sum of denominators (token-weighted)."""
        num, den = self.totals(unit)
        total = den.sum()
        if total <= 0:
            raise QidlabError(f"no {unit.split('_per_')[1]}s scored: cannot compute {unit}")
        return float(num.sum() / total)

    def summary(self) -> dict:
        """``nats_per_token`` (the default unit), ``bits_per_byte``, ``nats_per_ref_token`` (with
        reference counts), ``nats_per_word`` and ``word_perplexity`` = exp(nats_per_word) (with
        word counts), ``n_docs``, ``n_tokens``, ``n_bytes`` (and ``n_ref_tokens``, ``n_words``)."""
        out = {"nats_per_token": self.loss("nats_per_token"), "bits_per_byte": self.loss("bits_per_byte")}
        if self.n_ref_tokens is not None:
            out["nats_per_ref_token"] = self.loss("nats_per_ref_token")
            out["n_ref_tokens"] = int(self.n_ref_tokens.sum())
        if self.n_words is not None and self.n_words.sum() > 0:
            out["nats_per_word"] = self.loss("nats_per_word")
            out["word_perplexity"] = math.exp(out["nats_per_word"])
            out["n_words"] = int(self.n_words.sum())
        out.update(n_docs=len(self), n_tokens=int(self.n_tokens.sum()), n_bytes=int(self.n_bytes.sum()))
        return out


def score_windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(begin, end, first)`` over a sequence of ``n`` tokens: run the model on tokens
    ``[begin, end)`` and score targets ``first..end-1`` (module docstring). Pure; ``n < 2``: none."""
    if n < 2:
        return []
    if n <= max_length:
        return [(0, n, 1)]
    out = [(0, max_length, 1)]
    end = max_length
    while end < n:
        new_end = min(end + stride, n)
        out.append((new_end - max_length, new_end, end))
        end = new_end
    return out


def disjoint_windows(n: int, max_length: int) -> list[tuple[int, int, int]]:
    """lm-evaluation-harness's rolling windows over a sequence of ``n`` tokens (prefix included) as
    ``(begin, end, first)``: the model reads tokens ``[begin, end - 1)`` (at most ``max_length``)
    and scores targets ``first..end-1``. Window 0 scores targets ``1..min(n, max_length + 1) - 1``;
    each later one the next ``max_length`` targets (or what is left), reading the ``max_length``
    tokens before its last target. Pure; ``n < 2``: none. (``get_rolling_token_windows(...,
    context_len=1)`` then ``make_disjoint_window``, as ``HFLM.loglikelihood_rolling`` calls them.)"""
    if n < 2:
        return []
    end = min(n, max_length + 1)
    out = [(0, end, 1)]
    while end < n:
        new_end = min(end + max_length, n)
        out.append((new_end - 1 - max_length, new_end, end))
        end = new_end
    return out


def count_words(doc: str) -> int:
    """Words of ``doc`` as lm-evaluation-harness counts them for word perplexity
    (``ConfigurableTask.count_words`` and the wikitext task: ``len(re.split(r"\\s+", doc))``)."""
    return len(re.split(r"\s+", doc))


def prefix_token(tokenizer, prefix: str | None) -> int | None:
    """The token id prepended to every document under ``prefix`` (module docstring): BOS for
    ``"bos"``, EOS for ``"eos"``, None for ``"none"``; ``prefix=None``: BOS when the tokenizer has
    one, else EOS (lm-evaluation-harness), else None. A missing BOS/EOS asked for: ``QidlabError``."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if prefix is None:
        return bos if bos is not None else eos
    if prefix not in PREFIXES:
        raise QidlabError(f"prefix must be one of {', '.join(PREFIXES)}, got {prefix!r}")
    if prefix == "none":
        return None
    token = bos if prefix == "bos" else eos
    if token is None:
        raise QidlabError(f"prefix {prefix!r}: the tokenizer has no {prefix.upper()} token")
    return token


def _ref_counter(reference_tokenizer):
    """A function doc -> number of reference tokens (no special tokens added)."""
    if reference_tokenizer is None:
        return None
    if isinstance(reference_tokenizer, (str, Path)):
        from tokenizers import Tokenizer

        path = Path(reference_tokenizer).expanduser()
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise QidlabError(f"reference tokenizer file not found: {file}")
        try:
            reference_tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:
            raise QidlabError(f"{file}: not a tokenizers JSON file ({exc})") from None
    if hasattr(reference_tokenizer, "encode") and hasattr(reference_tokenizer, "get_vocab_size"):
        return lambda doc: len(reference_tokenizer.encode(doc, add_special_tokens=False).ids)
    return lambda doc: len(reference_tokenizer(doc, add_special_tokens=False)["input_ids"])


def _context_length(model, max_length):
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    length = max_length or limit
    if not length:
        raise QidlabError("the model's config gives no context length: pass max_length=")
    if limit and length > limit:
        raise QidlabError(f"max_length={length} exceeds the model's context ({limit} positions)")
    if length < 2:
        raise QidlabError(f"max_length must be at least 2, got {length}")
    return int(length)


def _body_and_head(model):
    """``(body, head)`` whose composition gives ``model``'s logits, for a causal LM of
    ``PLAIN_HEAD_TYPES`` (transformers' ``base_model`` and ``get_output_embeddings()``); None for
    any other model, which ``score`` then runs whole. A model with forward hooks of its own runs whole
    too: the body would skip them (compressed-tensors decompresses a loaded quantized model in a
    pre-hook on the model's first forward, without which its linears have no ``weight``)."""
    if getattr(getattr(model, "config", None), "model_type", None) not in PLAIN_HEAD_TYPES:
        return None
    if model._forward_pre_hooks or model._forward_hooks:
        return None
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or head is None:
        return None
    return body, head


def _scored_nll(model, parts, input_ids, mask, scored, trim: bool = False):
    """-log p(target) in float32 at each scored position, in ``scored.nonzero()`` order: targets
    ``input_ids[:, 1:][scored]`` predicted at positions ``[:, :-1][scored]``. ``trim``: the model
    does not read the last column (only ever a target: disjoint windows)."""
    import torch
    import torch.nn.functional as F

    targets = input_ids[:, 1:][scored]  # (K,)
    n_pred = scored.shape[1]  # positions that predict a target
    if trim:
        input_ids, mask = input_ids[:, :-1], mask[:, :-1]
    if parts is None:  # the whole model: (B, T, V) logits, then only the scored rows in float32
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        return F.cross_entropy(logits[:, :n_pred][scored].float(), targets, reduction="none")
    body, head = parts
    hidden = body(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    hidden = hidden[:, :n_pred][scored]  # (K, H): no logits at padding or unscored context
    rows = max(1, LOGIT_CHUNK_ELEMENTS // (getattr(head, "out_features", None) or model.config.vocab_size))
    nll = torch.empty(len(targets), dtype=torch.float32, device=targets.device)
    for start in range(0, len(targets), rows):
        # float32 logits of these rows; cross_entropy: logsumexp minus the target's logit
        logits = head(hidden[start:start + rows]).float()
        nll[start:start + rows] = F.cross_entropy(logits, targets[start:start + rows], reduction="none")
        del logits
    return nll


def score(model, tokenizer, eval_set, *, max_length: int | None = None, stride: int | None = None,
          batch_size: int = 8, reference_tokenizer=None, prefix: str | None = None,
          windows: str = "sliding") -> DocScores:
    """Score every document of ``eval_set`` (an ``EvalSet`` or a list of strings) with ``model``.

    See the module docstring for exactly what is scored. ``prefix``: ``"bos"``, ``"eos"``,
    ``"none"`` or None (BOS, else EOS); ``windows``: ``"sliding"`` or ``"disjoint"``. ``stride``
    (sliding windows only) defaults to ``max_length // 2`` and must lie in ``[1, max_length - 1]``. Windows are batched
    ``batch_size`` at a time, right-padded with an attention mask; on CUDA under bf16 autocast,
    on CPU in the model's dtype (float32 as loaded by ``load_checkpoint``); under
    ``torch.inference_mode()``. ``reference_tokenizer`` (a ``tokenizer.json`` path or folder, a
    ``tokenizers.Tokenizer`` or a transformers tokenizer) fills ``n_ref_tokens``.
    """
    import torch

    docs = list(getattr(eval_set, "docs", eval_set))
    if not docs:
        raise QidlabError("the eval set has no documents")
    if batch_size < 1:
        raise QidlabError(f"batch_size must be positive, got {batch_size}")
    width = _context_length(model, max_length)
    if windows not in WINDOWS:
        raise QidlabError(f"windows must be one of {', '.join(WINDOWS)}, got {windows!r}")
    if windows == "disjoint" and stride is not None:
        raise QidlabError("stride applies to sliding windows only; disjoint windows do not overlap")
    stride = width // 2 if stride is None else int(stride)
    if not 1 <= stride < width:
        raise QidlabError(f"stride must be between 1 and max_length - 1 = {width - 1}, got {stride}")
    first_token = prefix_token(tokenizer, prefix)
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = next((t for t in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None), bos)
                if t is not None), 0)
    count_ref = _ref_counter(reference_tokenizer)

    n = len(docs)
    nll = np.zeros(n, dtype=np.float64)
    n_tokens = np.zeros(n, dtype=np.int64)
    n_bytes = np.array([len(d.encode("utf-8")) for d in docs], dtype=np.int64)
    n_ref = np.array([count_ref(d) for d in docs], dtype=np.int64) if count_ref else None
    n_words = np.array([count_words(d) for d in docs], dtype=np.int64)
    cut = (lambda n: score_windows(n, width, stride)) if windows == "sliding" else (
        lambda n: disjoint_windows(n, width))
    items = []  # (doc index, token ids of the window, index of its first scored target)
    for i, ids in enumerate(_encoded(tokenizer, eval_set, docs)):
        if first_token is not None:
            ids = np.concatenate([[first_token], ids])
        for begin, end, first in cut(len(ids)):
            items.append((i, ids[begin:end], first - begin))
            n_tokens[i] += end - first
    items.sort(key=lambda item: -len(item[1]))  # similar lengths together: less padding

    param = next(model.parameters())
    device = param.device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    parts = _body_and_head(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for start in range(0, len(items), batch_size):
                batch = items[start:start + batch_size]
                longest = max(len(ids) for _, ids, _ in batch)
                input_ids = np.full((len(batch), longest), pad, dtype=np.int64)
                mask = np.zeros((len(batch), longest), dtype=np.int64)
                scored = np.zeros((len(batch), longest - 1), dtype=bool)  # by target position - 1
                for row, (_, ids, first) in enumerate(batch):
                    input_ids[row, :len(ids)] = ids
                    mask[row, :len(ids)] = 1
                    scored[row, first - 1:len(ids) - 1] = True
                input_ids, mask, scored = (torch.from_numpy(a).to(device) for a in (input_ids, mask, scored))
                token_nll = _scored_nll(model, parts, input_ids, mask, scored, trim=longest > width)  # (K,)
                rows = scored.nonzero()[:, 0]  # (K,) batch row of each scored target
                row_nll = torch.zeros(len(batch), dtype=torch.float64, device=device)
                row_nll = row_nll.index_add_(0, rows, token_nll.double()).cpu().numpy()
                for row, (doc_index, _, _) in enumerate(batch):
                    nll[doc_index] += row_nll[row]
    finally:
        model.train(was_training)
    settings = {"max_length": width, "stride": stride if windows == "sliding" else None,
                "bos": first_token is not None and first_token == bos,  # a BOS token was prepended
                "prefix": prefix or ("none" if first_token is None else "bos" if first_token == bos else "eos"),
                "windows": windows, "eval_set_hash": getattr(eval_set, "content_hash", None)}
    return DocScores(nll_sum=nll, n_tokens=n_tokens, n_bytes=n_bytes, n_ref_tokens=n_ref, settings=settings,
                     n_words=n_words)


_ENCODED: dict = {}  # (tokenizer fingerprint, eval set content hash) -> token ids per document
_ENCODED_MAX = 8


def _encoded(tokenizer, eval_set, docs: list[str]) -> list[np.ndarray]:
    """Each document's token ids (int64 arrays), from one batched call (fast tokenizers: threads).
    Kept per process for an ``EvalSet`` (by content hash) and a fast tokenizer (by its JSON), so
    the many scorings of one checkpoint (16-bit and every quantized copy) tokenise once."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = None
    if fingerprint is not None and getattr(eval_set, "content_hash", None):
        key = (fingerprint, eval_set.content_hash)
        if key in _ENCODED:
            return _ENCODED[key]
    ids = [np.asarray(x, dtype=np.int64) for x in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    if key is not None:
        while len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = ids
    return ids


def evaluate_loss(model, tokenizer, eval_set, **kw) -> DocScores:
    """The evaluate stage's public verb: ``score`` (same arguments, same result)."""
    return score(model, tokenizer, eval_set, **kw)
