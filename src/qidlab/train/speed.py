"""Training speed as model FLOPs utilisation (MFU): pure arithmetic.

Model FLOPs per token of a training step (forward + backward = 3 x forward, a matrix product of
``m`` weights costing ``2m`` FLOPs per token forward; PaLM's appendix B accounting)::

    flops_per_token = 6 * N + 6 * V * h + 12 * L * h * T

``N``: non-embedding parameters (every block weight; ``qidlab.checkpoints.count_params``), ``V * h``:
the LM head (the input embedding is a lookup, no FLOPs), ``12 * L * h * T``: attention scores and
their weighted sum (``L`` layers, width ``h``, sequence length ``T``; causal masking is not
discounted). Recomputation, optimizer and fake-quantization work do not count: MFU measures the
model's arithmetic, not the hardware's.

``MFU = tokens_per_s * flops_per_token / peak``, with ``peak`` the accelerator's dense bf16 rate
(``peak_flops``); None when the peak is unknown (CPUs, unlisted GPUs without an override).
"""

from __future__ import annotations

from qidlab.errors import QidlabError

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s; first matching substring of the device name wins
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0))


def flops_per_token(n_nonembedding: int, vocab_size: int, hidden: int, layers: int, seq_len: int) -> float:
    """Training FLOPs per token: ``6 N + 6 V h + 12 L h T`` (module docstring)."""
    return 6.0 * n_nonembedding + 6.0 * vocab_size * hidden + 12.0 * layers * hidden * seq_len


def peak_flops(device_name: str | None, override_tflops: float | None = None) -> float | None:
    """The dense bf16 peak in FLOP/s of a CUDA device by its name (H100 SXM and H200: 989 TFLOP/s,
    H100 PCIe 756, H100 NVL 835, A100 312), or ``override_tflops``; None if unknown or no device."""
    if override_tflops is not None:
        if isinstance(override_tflops, bool) or not isinstance(override_tflops, (int, float)) or override_tflops <= 0:
            raise QidlabError(f"peak TFLOP/s must be a positive number, got {override_tflops!r}")
        return float(override_tflops) * 1e12
    for key, tflops in PEAK_BF16_TFLOPS:
        if device_name and key in device_name:
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float | None, flops_per_tok: float, peak: float | None) -> float | None:
    """Achieved model FLOP/s over the peak; None when either is unknown."""
    if not tokens_per_s or not peak:
        return None
    return tokens_per_s * flops_per_tok / peak
