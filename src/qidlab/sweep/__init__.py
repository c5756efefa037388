"""Sweeps: a study file expands to checkpoints x quantization configs x eval sets, measured into
the store, resumable, locally or on Ray. Public verb: ``run_study(load_study(path))``."""

from .run import run_study
from .study import Study, load_study

__all__ = ["Study", "load_study", "run_study"]
