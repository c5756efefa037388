"""Parameter counts of a causal LM: N (non-embedding, Kaplan et al.) and the total."""

from __future__ import annotations


def count_params(model) -> tuple[int, int]:
    """``(n_params_nonembedding, n_params_total)`` of a transformers causal LM, exactly.

    * total: every distinct parameter tensor once, so tied input/output embeddings count once;
    * non-embedding N (Kaplan et al. 2020; Pythia's size names): the total less the input
      embedding matrix, the output head (``lm_head``; ``embed_out`` in older GPT-NeoX code) and any
      other ``nn.Embedding`` (learned position embeddings, as in GPT-2). Layer norms, biases and
      every attention/MLP weight count.

    A linear that compressed-tensors quantized (it carries a ``quantization_scheme``) counts the
    weights it stands for, ``weight_shape``'s product while packed, and its bias: never the packed
    int32 words, scales, zero points or shapes (``dense_counts``), so a quantized model has the N of
    its 16-bit original. Likewise bitsandbytes' 4-bit weights (``Params4bit``: two codes per uint8)
    count their ``quant_state.shape``'s product.

    Works for any model exposing ``get_input_embeddings``/``get_output_embeddings``
    (GPTNeoXForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM, ...).
    """
    import torch

    counts = dense_counts(model)
    distinct = {id(p): p for p in model.parameters()}  # shared (tied) tensors once
    total = sum(counts.get(i, p.numel()) for i, p in distinct.items())
    excluded_modules = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            excluded_modules.append(module)
    excluded = {id(p): p for m in excluded_modules for p in m.parameters()}
    embedding = sum(counts.get(i, p.numel()) for i, p in excluded.items())
    return total - embedding, total


#: What compressed-tensors stores for the weight of a quantized module besides the weight itself.
_PACKED = "weight_packed"


def dense_counts(model) -> dict[int, int]:
    """``{id(parameter): weights it stands for}`` for the parameters of compressed-tensors' quantized
    modules: ``weight_packed`` counts ``prod(weight_shape)``, ``weight`` and ``bias`` their size, every
    other parameter of the module (scales, zero points, shapes, g_idx) 0; bitsandbytes' packed 4-bit
    ``weight`` (its absmax live in its ``quant_state``, no parameter) counts ``prod(quant_state.shape)``.
    Empty for other models."""
    import math

    out: dict[int, int] = {}
    for mod in model.modules():
        qs = getattr(getattr(mod, "weight", None), "quant_state", None)
        if getattr(qs, "shape", None) is not None:
            out[id(mod.weight)] = math.prod(int(d) for d in qs.shape)
        if getattr(mod, "quantization_scheme", None) is None:
            continue
        for name, p in mod.named_parameters(recurse=False):
            if name == _PACKED and getattr(mod, "weight_shape", None) is not None:
                out[id(p)] = math.prod(int(d) for d in mod.weight_shape.tolist())
            elif name not in ("weight", "bias"):
                out[id(p)] = 0
    return out
