"""Per-document negative log-likelihood of a causal LM: the measurement behind every loss and QiD.

How text is scored (the contract):

* each document is tokenized alone, ``tokenizer(doc, add_special_tokens=False)``: no context
  from other documents, no EOS appended;
* if the tokenizer has a BOS token, it is prepended and every document token is scored
  (predicted from BOS and what precedes it); otherwise the first token is not scored (nothing
  to predict it from). ``n_tokens`` counts the scored tokens: the document's token count, or
  that minus one without BOS;
* a sequence (BOS included) of ``L`` tokens that fits the context ``W`` (``max_length``, default
  the model's ``max_position_embeddings``) is scored in one pass. A longer one is scored in
  sliding windows (``score_windows``): window 0 is tokens ``[0, W)`` and scores targets
  ``1..W-1``; window k ends ``stride`` tokens after window k-1 (or at ``L``), spans the ``W``
  tokens before its end, and scores only the targets after the previous window's end. Each token
  is scored exactly once; outside window 0 every scored token sees at least ``W - stride``
  tokens of context (the last window may advance less than ``stride`` and then sees more);
* ``nll_sum`` is in nats (natural log), accumulated in float64 from float32 log-softmax
  (``logsumexp(logits) - logits[target]``);
* only the scored positions' logits are computed: for the model types of ``PLAIN_HEAD_TYPES``
  the model's body runs on the batch and its output head on the scored positions' final hidden
  states, ``LOGIT_CHUNK_ELEMENTS`` logits at a time (the numbers ``model(...).logits`` would
  give, without a float32 ``batch x length x vocab`` tensor); other types run the whole model;
* ``n_bytes`` is the UTF-8 byte count of the whole document (bits per byte divides all scored
  nats by all bytes; without BOS the unscored first token's bytes are still counted).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qidlab.documents import tokenizer_fingerprint
from qidlab.errors import QidlabError

UNITS = ("nats_per_token", "bits_per_byte", "nats_per_ref_token")

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
    settings: dict = field(default_factory=dict)  # max_length, stride, bos, eval set hash

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
        reference counts), ``n_docs``, ``n_tokens``, ``n_bytes`` (and ``n_ref_tokens``)."""
        out = {"nats_per_token": self.loss("nats_per_token"), "bits_per_byte": self.loss("bits_per_byte")}
        if self.n_ref_tokens is not None:
            out["nats_per_ref_token"] = self.loss("nats_per_ref_token")
            out["n_ref_tokens"] = int(self.n_ref_tokens.sum())
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


def _scored_nll(model, parts, input_ids, mask, scored):
    """-log p(target) in float32 at each scored position, in ``scored.nonzero()`` order: targets
    ``input_ids[:, 1:][scored]`` predicted at positions ``[:, :-1][scored]``."""
    import torch
    import torch.nn.functional as F

    targets = input_ids[:, 1:][scored]  # (K,)
    if parts is None:  # the whole model: (B, T, V) logits, then only the scored rows in float32
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1][scored].float(), targets, reduction="none")
    body, head = parts
    hidden = body(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    hidden = hidden[:, :-1][scored]  # (K, H): no logits at padding or unscored context
    rows = max(1, LOGIT_CHUNK_ELEMENTS // (getattr(head, "out_features", None) or model.config.vocab_size))
    nll = torch.empty(len(targets), dtype=torch.float32, device=targets.device)
    for start in range(0, len(targets), rows):
        # float32 logits of these rows; cross_entropy: logsumexp minus the target's logit
        logits = head(hidden[start:start + rows]).float()
        nll[start:start + rows] = F.cross_entropy(logits, targets[start:start + rows], reduction="none")
        del logits
    return nll


def score(model, tokenizer, eval_set, *, max_length: int | None = None, stride: int | None = None,
          batch_size: int = 8, reference_tokenizer=None) -> DocScores:
    """Score every document of ``eval_set`` (an ``EvalSet`` or a list of strings) with ``model``.

    See the module docstring for exactly what is scored. ``stride`` defaults to
    ``max_length // 2`` and must lie in ``[1, max_length - 1]``. Windows are batched
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
    stride = width // 2 if stride is None else int(stride)
    if not 1 <= stride < width:
        raise QidlabError(f"stride must be between 1 and max_length - 1 = {width - 1}, got {stride}")
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = next((t for t in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None), bos)
                if t is not None), 0)
    count_ref = _ref_counter(reference_tokenizer)

    n = len(docs)
    nll = np.zeros(n, dtype=np.float64)
    n_tokens = np.zeros(n, dtype=np.int64)
    n_bytes = np.array([len(d.encode("utf-8")) for d in docs], dtype=np.int64)
    n_ref = np.array([count_ref(d) for d in docs], dtype=np.int64) if count_ref else None
    items = []  # (doc index, token ids of the window, index of its first scored target)
    for i, ids in enumerate(_encoded(tokenizer, eval_set, docs)):
        if bos is not None:
            ids = np.concatenate([[bos], ids])
        for begin, end, first in score_windows(len(ids), width, stride):
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
                token_nll = _scored_nll(model, parts, input_ids, mask, scored)  # (K,) float32
                rows = scored.nonzero()[:, 0]  # (K,) batch row of each scored target
                row_nll = torch.zeros(len(batch), dtype=torch.float64, device=device)
                row_nll = row_nll.index_add_(0, rows, token_nll.double()).cpu().numpy()
                for row, (doc_index, _, _) in enumerate(batch):
                    nll[doc_index] += row_nll[row]
    finally:
        model.train(was_training)
    settings = {"max_length": width, "stride": stride, "bos": bos is not None,
                "eval_set_hash": getattr(eval_set, "content_hash", None)}
    return DocScores(nll_sum=nll, n_tokens=n_tokens, n_bytes=n_bytes, n_ref_tokens=n_ref, settings=settings)


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
