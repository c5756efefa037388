"""Parameter counts of a causal LM: N (non-embedding, Kaplan et al.) and the total."""

from __future__ import annotations


def count_params(model) -> tuple[int, int]:
    """``(n_params_nonembedding, n_params_total)`` of a transformers causal LM, exactly.

    * total: every distinct parameter tensor once, so tied input/output embeddings count once;
    * non-embedding N (Kaplan et al. 2020; Pythia's size names): the total less the input
      embedding matrix, the output head (``lm_head``; ``embed_out`` in older GPT-NeoX code) and any
      other ``nn.Embedding`` (learned position embeddings, as in GPT-2). Layer norms, biases and
      every attention/MLP weight count.

    Works for any model exposing ``get_input_embeddings``/``get_output_embeddings``
    (GPTNeoXForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM, ...).
    """
    import torch

    distinct = {id(p): p for p in model.parameters()}  # shared (tied) tensors once
    total = sum(p.numel() for p in distinct.values())
    excluded_modules = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            excluded_modules.append(module)
    excluded = {id(p): p for m in excluded_modules for p in m.parameters()}
    embedding = sum(p.numel() for p in excluded.values())
    return total - embedding, total
