"""The model, the optimizer and one training update: shared by the suite loop, the learning-rate sweep
and ``bench/train_speed.py``, so the speed measured is the trainer's.

Devices (``resolve_device``): ``"auto"`` is CUDA when torch sees a GPU, else the CPU. On CUDA the
forward pass runs under bf16 autocast (fp32 master weights and optimizer state), AdamW is torch's
fused kernel, batches are copied from pinned memory without blocking, attention is PyTorch's SDPA
(also on CPU, transformers' default there), and ``compile=True`` wraps the forward pass in
``torch.compile``. ``update(batch, lr)`` returns the loss as a 0-d tensor on the device, so the
loop can run ahead of the GPU; it reads it back only where it logs. On the CPU nothing of this
applies (fp32, no autocast): the same suite file gives the same, bit-identical weights as before.
"""

from __future__ import annotations

import contextlib
import time

from qidlab.errors import QidlabError

BETAS = (0.9, 0.95)  # AdamW, as Pythia
EPS = 1e-8
SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 2}  # qidlab.train.data's BPE: BOS = EOS


def resolve_device(name: str = "auto"):
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` -> ``torch.device``; CUDA without a GPU is an error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise QidlabError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise QidlabError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise QidlabError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU (use device = \"cpu\")")
    return device


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def build_model(spec, vocab_size: int, seq_len: int, seed: int, tokenizer=None):
    """A freshly initialised ``GPTNeoXForCausalLM`` (fp32, no dropout, untied head, SDPA attention) on
    the CPU, after ``manual_seed(seed)``; a low-bit ``spec`` gets its fake-quantized forward
    (``lowbit.apply_qat``). ``tokenizer`` gives the special token ids (default: 0, 1, 2)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    ids = SPECIAL_IDS if tokenizer is None else {k: getattr(tokenizer, k) for k in SPECIAL_IDS}
    cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                        max_position_embeddings=seq_len, hidden_dropout=0.0, attention_dropout=0.0,
                        tie_word_embeddings=False, attn_implementation="sdpa", **ids)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg).float()
    if spec.qat is not None:
        from qidlab.train.lowbit import apply_qat

        apply_qat(model, spec.qat)
    return model


def make_optimizer(model, lr: float, weight_decay: float, device=None):
    """AdamW; weight decay on matrices only (not biases and LayerNorm gains), as nanoGPT; fused on CUDA."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, **fused)


def autocast(device):
    """bf16 autocast on CUDA; nothing on the CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch, device):
    """A CPU batch on ``device``; to CUDA from pinned memory, without blocking the host."""
    if device.type == "cpu":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def make_update(model, opt, device, *, grad_clip: float, compile: bool = False):
    """``update(batch, lr) -> loss``: one AdamW step at learning rate ``lr`` on ``batch`` (token ids
    ``(B, T)``, on the CPU), gradient norm clipped at ``grad_clip`` (0: not clipped). ``loss``: the
    mean cross-entropy of the batch before the step (nats/token), a detached 0-d tensor on the device."""
    import torch

    forward = torch.compile(model) if compile else model

    def update(batch, lr: float):
        for g in opt.param_groups:
            g["lr"] = lr
        batch = to_device(batch, device)
        with autocast(device):
            loss = forward(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return loss.detach()

    return update


class Clock:
    """Seconds between ``start()`` and ``stop()`` calls, summed; CUDA work is waited for at each."""

    def __init__(self, device):
        self.device, self.seconds, self._t0 = device, 0.0, None
        self.first = 0.0  # seconds of the first update, when the caller records it

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._t0
