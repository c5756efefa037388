"""qidlab: quantization scaling laws — measure, fit, predict and invert QiD.

The package mirrors the pipeline (docs/architecture.md): ``laws`` (registry, fitting, inversion,
analyses), ``store`` (the SQLite measurement store), ``tables`` (the data contract), ``data``
(bundled data sets), ``cli`` (the ``qidlab`` command). Importing ``qidlab`` loads nothing heavy.
"""

__version__ = "0.1.0"
