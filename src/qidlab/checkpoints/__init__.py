"""Checkpoints stage: find a suite's checkpoints, load them safely, know their N and D.

* ``discover(root)`` -> ``list[CheckpointRef]``: the Pythia layout ``<suite>/<model>/step<N>/``
  plus an optional manifest (``qidlab-suite.toml``) giving tokens per step;
* ``load_checkpoint(path_or_ref)`` -> ``Checkpoint``: model, tokenizer, N, D, content hash;
* ``load_suite(root)``: ``load_checkpoint`` over ``discover(root)``, one at a time;
* ``count_params(model)`` -> ``(n_params_nonembedding, n_params_total)``;
* ``trajectory_info(folder)``: run checkpoint, cooldown branch end or weight average, and which run
  (``trajectory.py``, from the folder's ``qidlab.json``);
* ``suites.py``: suite folders as a store remembers them (from stored checkpoint paths), their
  manifests as they are, and the vocabulary size of their checkpoints' config.json.

Importing this package does not import torch or transformers; loading does.
"""

from __future__ import annotations

from collections.abc import Iterator

from qidlab.checkpoints.discover import CheckpointRef, discover, read_manifest
from qidlab.checkpoints.load import Checkpoint, check_checkpoint, content_hash, load_checkpoint
from qidlab.checkpoints.params import count_params
from qidlab.checkpoints.trajectory import trajectory_info


def load_suite(root, **load_kw) -> Iterator[Checkpoint]:
    """Yield ``load_checkpoint(ref, **load_kw)`` for each ``ref`` of ``discover(root)``, in order.

    Lazy: one model is in memory at a time if the caller drops the previous one.
    """
    for ref in discover(root):
        yield load_checkpoint(ref, **load_kw)


__all__ = ["Checkpoint", "CheckpointRef", "check_checkpoint", "content_hash", "count_params", "discover",
           "load_checkpoint", "load_suite", "read_manifest", "trajectory_info"]
