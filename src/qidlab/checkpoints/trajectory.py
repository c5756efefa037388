"""What a trained checkpoint is within its model's training, from its ``qidlab.json`` (written by
``qidlab.train``: train/branches.py): a run's checkpoint (main run or seed run), a cooldown branch's
end, or a weight average. For a store: a stored checkpoint's path leads to its folder.
"""

from __future__ import annotations

from pathlib import Path

from qidlab.checkpoints.load import read_metadata

KINDS = ("run", "branch", "average")


def trajectory_info(folder: str | Path) -> dict:
    """``{"kind", "run", "base", "branch_from", "branch_point", "lr"}`` of a checkpoint folder:
    ``kind`` "run" (also for folders without a ``qidlab.json`` or written before branches existed),
    "branch" (a cooldown's end: ``branch_from`` the step it left, ``base`` the run's folder) or
    "average" (``branch_from`` the branch point it averages up to); ``run`` "seed<S>" or None (the
    main run); ``branch_point`` whether branches leave from this run checkpoint (before); ``lr`` the
    learning rate the checkpoint was reached with (None when not recorded)."""
    meta = read_metadata(Path(folder))
    traj = meta.get("trajectory") or {}
    kind = traj.get("kind", "run") if traj.get("kind") in KINDS else "run"
    branch_from = (meta.get("branch") or {}).get("from_step") if kind == "branch" else (
        meta.get("step") if kind == "average" else None)
    return {"kind": kind, "run": meta.get("run"), "base": traj.get("base"), "branch_from": branch_from,
            "branch_point": "branch_point" in meta, "lr": meta.get("lr")}
