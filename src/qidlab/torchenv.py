"""Process-wide torch/transformers settings held for the length of a block (used by the trainer,
the checkpoint loader and the demo), and the check that the ``measure`` extra is installed."""

from __future__ import annotations

import contextlib
import importlib.util
import os

from .errors import QidlabError

MEASURE_EXTRA = ("torch", "transformers", "safetensors", "tokenizers")  # pyproject's `measure` extra


def require_measure(what: str) -> None:
    """A ``QidlabError`` saying what to install when a module of the ``measure`` extra is missing
    (``what`` names the job that needs it); checked before anything is written."""
    missing = [m for m in MEASURE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise QidlabError(f"{what} needs the measure extra (missing: {', '.join(missing)}): "
                          f"pip install -c constraints.txt 'qidlab[measure]'")


def idle_cores() -> int:
    """The CPU cores this process may use (its affinity mask) less the 1-minute load average,
    rounded, at least 1: the default thread count of ``qidlab demo``, ``train`` and ``sweep``.
    torch's own default is every core, and its threads spin waiting for each other: on a machine
    already busy that costs more CPU and time than fewer threads (issue 18: 2.3x the CPU of a quiet
    run under a load of 6)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


#: The --threads help of the commands that run torch.
THREADS_HELP = ("torch threads (default: the cores not busy now, i.e. usable cores less the load average, at "
                "least 1; on a shared machine give a number)")


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
