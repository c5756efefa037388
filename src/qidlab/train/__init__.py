"""Train stage: controlled suites of small GPT-NeoX models on one corpus, one tokenizer, one data order.

* ``train_suite(config_path, out_dir)`` -> ``list[Path]``: every ``<out>/<suite>/<model>/step<N>/``
  (Pythia layout, ``qidlab.json`` with tokens D, a ``qidlab-suite.toml`` manifest); resumable;
* ``load_suite_config(path)`` -> ``SuiteConfig`` (the suite file is documented in ``config.py``);
* pure pieces: ``lr_multiplier``, ``checkpoint_steps`` (``schedule.py``), ``document_order``,
  ``batch_indices`` (``data.py``).

Importing this package does not import torch or transformers; training does.
"""

from qidlab.train.config import ModelSpec, SuiteConfig, check_fits, load_suite_config
from qidlab.train.data import batch_indices, document_order
from qidlab.train.loop import train_suite
from qidlab.train.schedule import SCHEDULES, checkpoint_steps, lr_multiplier

__all__ = ["SCHEDULES", "ModelSpec", "SuiteConfig", "batch_indices", "check_fits", "checkpoint_steps",
           "document_order", "load_suite_config", "lr_multiplier", "train_suite"]
