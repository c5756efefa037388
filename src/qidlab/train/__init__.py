"""Train stage: controlled suites of small GPT-NeoX models on one corpus, one tokenizer, one data order.

* ``train_suite(config_path, out_dir)`` -> ``list[Path]``: every ``<out>/<suite>/<model>/step<N>/``
  (Pythia layout, ``qidlab.json`` with tokens D, a ``qidlab-suite.toml`` manifest), with each model's
  ``train-log.csv`` (``records.py``) and ``weight-dynamics.json`` (``dynamics.py``); resumable; on
  CPU or CUDA (``engine.py``), 16-bit or low-bit (``precision.py``, ``lowbit.py``), optionally after a
  per-model learning-rate sweep (``lr_sweep.py``);
* ``load_suite_config(path)`` -> ``SuiteConfig`` (the suite file is documented in ``config.py``);
  ``folders_of(model_spec)``: the folders its training writes (main run, seed runs, cooldown
  branches, weight averages: ``branches.py``, ``averaging.py``);
* pure pieces: ``lr_multiplier``, ``checkpoint_steps`` (``schedule.py``), ``document_order``,
  ``batch_indices`` (``data.py``), ``change_summary`` (``dynamics.py``), ``flops_per_token``
  (``speed.py``), ``parse_qat`` / ``QATSpec`` (``precision.py``).

Importing this package does not import torch or transformers; training does.
"""

from qidlab.train.config import ModelSpec, SuiteConfig, check_fits, folders_of, load_suite_config
from qidlab.train.data import batch_indices, document_order
from qidlab.train.dynamics import change_summary
from qidlab.train.loop import train_suite
from qidlab.train.lr_sweep import LRSweep
from qidlab.train.precision import QATSpec, parse_qat
from qidlab.train.schedule import SCHEDULES, checkpoint_steps, lr_multiplier
from qidlab.train.speed import flops_per_token

__all__ = ["SCHEDULES", "LRSweep", "ModelSpec", "QATSpec", "SuiteConfig", "batch_indices", "change_summary",
           "check_fits", "checkpoint_steps", "folders_of", "document_order", "flops_per_token", "load_suite_config",
           "lr_multiplier", "parse_qat", "train_suite"]
