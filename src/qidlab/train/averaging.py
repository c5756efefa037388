"""Weight averages along a run (LAWA, Kaddour 2022), written as checkpoints (``branches.py`` says which).

A run keeps its weights at the averaged steps as ``<run>/_lawa/step<N>.safetensors`` (its
``state_dict``, in its dtype); at each branch point ``b``, ``write_average`` means them in float32,
casts the mean back to each tensor's dtype, and writes ``<run>-lawa<k>/step<b>/`` in the Pythia
layout of every checkpoint (config.json, model.safetensors, tokenizer, ``qidlab.json`` with
``average``: the steps averaged). Non-float tensors (none in GPT-NeoX's saved state) would be
taken from the newest snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

from qidlab.errors import QidlabError
from qidlab.files import building, open_atomic
from qidlab.torchenv import quiet_transformers
from qidlab.train.branches import average_folder, average_meta
from qidlab.train.engine import build_model

SNAPSHOTS = "_lawa"


def write_snapshot(model, path: Path) -> None:
    """The model's ``state_dict`` (on the CPU, in its dtype) as one safetensors file, atomically."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with open_atomic(path, "wb") as fh:
        fh.write(save(tensors))


def average_state(paths: list[Path]) -> dict:
    """The mean of the state dicts in ``paths`` (safetensors), accumulated in float32, each tensor
    cast back to its own dtype."""
    from safetensors.torch import load_file

    total, first = None, None
    for p in paths:
        sd = load_file(str(p))
        if total is None:
            first = sd
            total = {k: v.float().clone() for k, v in sd.items() if v.is_floating_point()}
        else:
            if sd.keys() != first.keys():
                raise QidlabError(f"{p}: its tensors differ from {paths[0]}'s; cannot average them")
            for k in total:
                total[k] += sd[k].float()
        last = sd
    return {k: (total[k] / len(paths)).to(v.dtype) if k in total else last[k] for k, v in first.items()}


def write_average(config, spec, traj, suite_dir: Path, data, log=None) -> Path:
    """The weight average at branch ``traj``'s start (``<base>-lawa<k>/step<b>/``); kept if written
    before. ``QidlabError`` when a snapshot it needs is missing (the run passed that step before the
    average was asked for)."""
    b = traj.branch
    out = suite_dir / average_folder(traj.base, spec.branch_spec.average) / f"step{b.start}"
    if (out / "qidlab.json").is_file():
        return out
    run_dir = suite_dir / traj.base
    paths = [run_dir / SNAPSHOTS / f"step{s}.safetensors" for s in b.average_steps]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise QidlabError(f"cannot average {traj.base} at step {b.start}: {missing[0]} is missing (the run passed "
                          "that step before the average was asked for; train it again in a new `out_dir`)")
    model = build_model(spec, len(data.tokenizer), config.seq_len, traj.seed, data.tokenizer)
    model.load_state_dict(average_state(paths))
    run_meta = json.loads((run_dir / f"step{b.start}" / "qidlab.json").read_text())
    with building(out) as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
        data.tokenizer.save_pretrained(tmp)
        (tmp / "qidlab.json").write_text(json.dumps(average_meta(spec, traj, run_meta), indent=1) + "\n")
    if log:
        log(f"{out.parent.name}: step {b.start}, the average of steps {', '.join(map(str, b.average_steps))}")
    return out
