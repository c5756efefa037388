"""Model plumbing for quantization: finding decoder blocks and the linears to quantize, and
capturing block inputs from calibration data (the IST-DASLab/gptq "catcher" trick).

Works on any causal LM whose decoder blocks sit in one ``nn.ModuleList`` (GPT-NeoX/Pythia
``gpt_neox.layers``, Llama/Qwen2 ``model.layers``) under transformers 4.45+ and 5.x.
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from qidlab.errors import QidlabError


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` of decoder blocks: of the ModuleLists whose items all contain an
    ``nn.Linear``, the one holding the most parameters. Returns ``(name, blocks)``."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if not all(any(isinstance(m, nn.Linear) for m in b.modules()) for b in mod):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if best is None or n > best[0]:
            best = (n, name, mod)
    if best is None:
        raise QidlabError(f"no decoder blocks found in {type(model).__name__}: "
                          "expected an nn.ModuleList of blocks containing nn.Linear layers")
    return best[1], best[2]


def select_linears(model: nn.Module, patterns: tuple[str, ...] | None) -> dict[str, nn.Linear]:
    """Linears to quantize, by full name in model order. ``None``: every ``nn.Linear`` inside
    the decoder blocks; else those matching any ``fnmatch`` pattern."""
    if patterns is None:
        prefix, _ = find_blocks(model)
        chosen = {n: m for n, m in model.named_modules()
                  if isinstance(m, nn.Linear) and n.startswith(prefix + ".")}
    else:
        chosen = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)
                  and any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not chosen:
        raise QidlabError(f"no nn.Linear of {type(model).__name__} matches modules={patterns!r}")
    return chosen


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_calibration(calibration: Any, method: str) -> torch.Tensor:
    """Token ids ``(n_samples, seq_len)``, integer dtype; anything else is one clear error."""
    if calibration is None:
        raise QidlabError(f"method '{method}' needs calibration: a LongTensor of token ids "
                          "shaped (n_samples, seq_len)")
    if not isinstance(calibration, torch.Tensor) or calibration.dim() != 2 \
            or calibration.dtype.is_floating_point or calibration.numel() == 0:
        desc = (f"{calibration.dtype} tensor of shape {tuple(calibration.shape)}"
                if isinstance(calibration, torch.Tensor) else type(calibration).__name__)
        raise QidlabError(f"calibration must be integer token ids shaped (n_samples, seq_len), "
                          f"got {desc}")
    return calibration.long()


def batches(calibration: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, calibration.shape[0], batch_size):
        yield calibration[i:i + batch_size]


class _Stop(Exception):
    pass


@contextlib.contextmanager
def stop_after(module: nn.Module | None):
    """Inside the block, a forward pass ends (silently) once ``module`` has run; ``None``: no-op."""
    if module is None:
        yield
        return

    def hook(*_):
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        yield
    except _Stop:
        pass
    finally:
        handle.remove()


@dataclass
class BlockInputs:
    """Hidden states entering a block, one tensor ``(batch, seq, hidden)`` per calibration
    batch, and the keyword arguments the model passed to the block for that batch (attention
    mask, position ids / embeddings, ...)."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, block: nn.Module) -> "BlockInputs":
        """Run ``block`` on every batch; returns its outputs as the next block's inputs."""
        out = BlockInputs(kwargs=self.kwargs)
        for h, kw in zip(self.hidden, self.kwargs):
            y = block(h, **kw)
            out.hidden.append(y[0] if isinstance(y, (tuple, list)) else y)
        return out


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, calibration: torch.Tensor,
                         batch_size: int) -> BlockInputs:
    """Run the model on each calibration batch until the first block, record what it receives
    (forward pre-hook with kwargs) and stop there by raising."""
    got = BlockInputs()

    def hook(_mod, args, kwargs):
        kwargs = dict(kwargs)
        h = args[0] if args else kwargs.pop("hidden_states")
        got.hidden.append(h)
        got.kwargs.append(kwargs)
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    dev = model_device(model)
    try:
        for ids in batches(calibration, batch_size):
            try:
                model(input_ids=ids.to(dev), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def linears_in_order(block: nn.Module, names: dict[nn.Module, str],
                     inputs: BlockInputs) -> list[list[str]]:
    """Quantizable linears of ``block`` in execution order, grouped by shared input (q/k/v,
    gate/up): a list of groups of full names. Runs the first calibration batch once."""
    seen: list[tuple[str, torch.Tensor]] = []  # holding the inputs keeps their memory unshared

    def hook(mod, args):
        if mod in names and names[mod] not in {n for n, _ in seen}:
            seen.append((names[mod], args[0]))

    handles = [m.register_forward_pre_hook(hook) for m in block.modules() if m in names]
    try:
        BlockInputs(inputs.hidden[:1], inputs.kwargs[:1]).run(block)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    last = None
    for name, x in seen:
        if groups and last is not None and x.data_ptr() == last.data_ptr() \
                and x.shape == last.shape:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = x
    missing = [n for m, n in names.items() if any(m is x for x in block.modules())
               and n not in {s for s, _ in seen}]
    if missing:  # never called in forward: quantize them last, without inputs order
        groups.append(missing)
    return groups
