"""Sweeps: a study file expands to checkpoints x quantization configs x eval sets, measured into
the store, resumable, locally, on Ray (one GPU per checkpoint task) or as Slurm jobs (submitit).
Public verb: ``run_study(load_study(path))``."""

from .preset import preset_names, write_preset
from .run import DryRun, plan_study, run_study
from .slurm_executor import SlurmExecutor
from .study import Study, load_study

__all__ = ["DryRun", "Study", "SlurmExecutor", "load_study", "plan_study", "preset_names", "run_study", "write_preset"]
