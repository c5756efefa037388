"""Process-wide torch/transformers settings held for the length of a block (used by the trainer,
the checkpoint loader and the demo), and the check that the ``measure`` extra is installed."""

from __future__ import annotations

import contextlib
import importlib.util

from .errors import QidlabError

MEASURE_EXTRA = ("torch", "transformers", "safetensors", "tokenizers")  # pyproject's `measure` extra


def require_measure(what: str) -> None:
    """A ``QidlabError`` saying what to install when a module of the ``measure`` extra is missing
    (``what`` names the job that needs it); checked before anything is written."""
    missing = [m for m in MEASURE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise QidlabError(f"{what} needs the measure extra (missing: {', '.join(missing)}): "
                          f"pip install -c constraints.txt 'qidlab[measure]'")


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` for the block and restored after (``None``: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_transformers():
    """No transformers progress bars ("Loading weights", per save and load of even a tiny model):
    noise in a training log or a sweep, which have their own progress lines."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
