"""Per-size learning-rate sweep: short runs over a grid of peak learning rates, the best one trains the model.

Enabled by ``qidlab train SUITE --lr-sweep`` or by a table in the suite file::

    [suite]
    lr_sweep = { factors = [0.25, 0.5, 1, 2, 4], steps = 200, eval_batches = 4 }

For every model: a run of ``steps`` updates per learning rate ``lr * factor`` (``lr``: the model's
own, from its ``[[models]]`` entry; ``lrs = [...]`` instead gives absolute rates), each from the
model's seeded initialisation, on the first ``steps`` batches of the suite's data order, with the
suite's schedule shape compressed to ``steps`` (warmup scaled alike); then the mean cross-entropy
(nats/token) on the next ``eval_batches`` batches of the data order, which the short runs did not
see (held out). The lowest held-out loss wins (a diverged run counts as infinite; ties go to the
smaller rate). A model with ``lr_of`` is not swept: it takes its reference's chosen rate times its
``lr_factor`` (the same size at other peak rates, all else fixed). The full run then trains with it; the suite manifest's ``[models."NAME"]`` records
``lr`` (the chosen rate) and ``lr_sweep = { base_lr, lrs, heldout_loss, chosen, steps, eval_batches }``.

Each model's result is kept in ``<model>/lr-sweep.json`` (with what it was computed from, and
``chosen_at_edge``: true when the rate chosen is the grid's smallest or largest, so the optimum was
not bracketed; a log line says so too) and
reused by a later call with the same settings, so an interrupted suite does not sweep again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from qidlab.errors import QidlabError
from qidlab.tomlfile import Key, check_table
from qidlab.files import write_json
from qidlab.train.engine import autocast, build_model, make_optimizer, make_update, to_device
from qidlab.train.schedule import lr_multiplier

if TYPE_CHECKING:
    from qidlab.train.config import ModelSpec

SWEEP_FILE = "lr-sweep.json"
DEFAULT_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # a log2 grid around the model's lr
SWEEP_KEYS = {"factors": Key(), "lrs": Key(), "steps": Key("int", min=1),  # factors, lrs: _positive_list
              "eval_batches": Key("int", min=1)}


@dataclass(frozen=True)
class LRSweep:
    """The sweep's settings (module docstring); ``steps`` None: a tenth of the suite's steps."""

    factors: tuple[float, ...] = DEFAULT_FACTORS
    lrs: tuple[float, ...] | None = None  # absolute rates for every model, instead of factors
    steps: int | None = None
    eval_batches: int = 4


def parse_lr_sweep(table, where: str) -> LRSweep:
    """The ``[suite] lr_sweep`` table; one ``QidlabError`` naming the key otherwise."""
    if not isinstance(table, dict):
        raise QidlabError(f"{where} lr_sweep must be a table {{ factors = [0.5, 1, 2], steps = 100 }}")
    check_table(table, SWEEP_KEYS, where, "lr_sweep", label="lr_sweep.")
    if "factors" in table and "lrs" in table:
        raise QidlabError(f"{where} lr_sweep takes factors or lrs, not both")
    grid = {k: _positive_list(table[k], where, k) for k in ("factors", "lrs") if k in table}
    steps, evals = table.get("steps"), table.get("eval_batches", 4)
    return LRSweep(factors=grid.get("factors", DEFAULT_FACTORS), lrs=grid.get("lrs"), steps=steps, eval_batches=evals)


def _positive_list(values, where: str, key: str) -> tuple[float, ...]:
    ok = isinstance(values, list) and values and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in values)
    if not ok:
        raise QidlabError(f"{where} lr_sweep.{key} must be a non-empty list of positive numbers, got {values!r}")
    return tuple(sorted({float(v) for v in values}))


def lr_grid(lr: float, sweep: LRSweep) -> list[float]:
    """The peak learning rates tried for a model whose own is ``lr``, ascending."""
    return list(sweep.lrs) if sweep.lrs is not None else sorted({lr * f for f in sweep.factors})


def pick(lrs: list[float], losses: list[float]) -> float:
    """The rate of the lowest finite loss (ties: the smaller rate); ``QidlabError`` if every run diverged."""
    finite = [(loss, lr) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    if not finite:
        raise QidlabError(f"every learning rate of the sweep diverged ({', '.join(f'{x:g}' for x in lrs)}); "
                          "try smaller rates")
    return min(finite)[1]


def sweep_steps(config, sweep: LRSweep) -> int:
    return sweep.steps if sweep.steps is not None else max(1, config.steps // 10)


def _check_held_out(config, sweep: LRSweep, steps: int, n_seqs: int) -> None:
    need = (steps + sweep.eval_batches) * config.batch_size
    if need > n_seqs:
        raise QidlabError(f"{config.path}: the lr sweep needs {need:,} distinct sequences ({steps} steps + "
                          f"{sweep.eval_batches} held-out batches of {config.batch_size}) but the corpus has "
                          f"{n_seqs:,}; use fewer lr_sweep steps or eval_batches")


def heldout_loss(model, data, config, first_step: int, n_batches: int, device) -> float:
    """Mean cross-entropy (nats/token) of ``model`` on the batches ``first_step ..`` of the data order."""
    import torch

    model.eval()
    total = None
    with torch.no_grad(), autocast(device):
        for i in range(n_batches):
            batch = to_device(data.batch(first_step + i, config.batch_size, config.seq_len, config.seed), device)
            loss = model(input_ids=batch, labels=batch).loss.double()
            total = loss if total is None else total + loss
    model.train()
    value = float(total) / n_batches
    return value if math.isfinite(value) else math.inf


def short_run(config, spec, lr: float, data, steps: int, sweep: LRSweep, device) -> float:
    """Train a fresh copy of ``spec`` for ``steps`` updates at peak ``lr``; its held-out loss."""
    model = build_model(spec, len(data.tokenizer), config.seq_len, config.seed, data.tokenizer).to(device)
    opt = make_optimizer(model, lr, config.weight_decay, device)
    update = make_update(model, opt, device, grad_clip=config.grad_clip, compile=config.compile)
    mult = config.schedule_dict(steps)
    model.train()
    for step in range(steps):
        update(data.batch(step, config.batch_size, config.seq_len, config.seed), lr * lr_multiplier(step, **mult))
    return heldout_loss(model, data, config, steps, sweep.eval_batches, device)


def sweep_model(config, spec, data, sweep: LRSweep, device, model_dir, log=None) -> dict:
    """The sweep of one model (module docstring), computed or read back from ``<model>/lr-sweep.json``."""
    steps = sweep_steps(config, sweep)
    key = {"model_hash": config.model_hash(spec), "lrs": lr_grid(spec.lr, sweep), "steps": steps,
           "eval_batches": sweep.eval_batches, "device": device.type}
    path = model_dir / SWEEP_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}  # unreadable: swept again
        if old.get("key") == key:
            if log:
                log(f"{spec.name}: lr sweep done before: lr = {old['result']['chosen']:g}")
            return old["result"]
    _check_held_out(config, sweep, steps, data.n_tokens // config.seq_len)
    losses = []
    for lr in key["lrs"]:
        losses.append(short_run(config, spec, lr, data, steps, sweep, device))
        if log:
            log(f"{spec.name}: lr {lr:g}: held-out loss {losses[-1]:.4f} after {steps} steps")
    result = {"base_lr": spec.lr, "lrs": key["lrs"], "heldout_loss": losses, "chosen": pick(key["lrs"], losses),
              "steps": steps, "eval_batches": sweep.eval_batches}
    model_dir.mkdir(parents=True, exist_ok=True)
    edge = at_edge(key["lrs"], result["chosen"])
    write_json(path, {"key": key, "result": result, "chosen_at_edge": edge})
    if log and edge:
        log(f"{spec.name}: the lr sweep chose {result['chosen']:g}, the edge of its grid: the optimum is not "
            "bracketed (widen factors or lrs)")
    return result


def at_edge(lrs: list[float], chosen: float) -> bool:
    """Whether ``chosen`` is the smallest or largest rate tried (the sweep did not bracket the optimum);
    a grid of one or two rates always is."""
    return len(lrs) < 3 or chosen in (min(lrs), max(lrs))


def sweep_suite(config, data, device, suite_dir, log=None, only=None):
    """Sweep every model (or those named in ``only``: e.g. one GPU job each, side by side, before
    the jobs that train read every model's sweep back); returns ``(config with each swept model's
    chosen lr, {model: result})``."""
    sweep = config.lr_sweep or LRSweep()
    results, models = {}, []
    for spec in config.models:
        if (only is not None and spec.name not in only) or spec.lr_of is not None:
            models.append(spec)
            continue
        results[spec.name] = sweep_model(config, spec, data, sweep, device, suite_dir / spec.name, log)
        models.append(replace(spec, lr=results[spec.name]["chosen"]))
    return replace(config, models=resolve_lr_of(tuple(models), config.path)), results


def resolve_lr_of(specs: tuple[ModelSpec, ...], path) -> tuple[ModelSpec, ...]:
    """Give every model with ``lr_of`` its reference's lr times its factor; the reference must be another
    model of the suite, of the same shape, without ``lr_of`` itself (one learning rate, scaled, with
    everything else equal: the learning-rate magnitude study)."""
    by_name = {m.name: m for m in specs}
    out = []
    for m in specs:
        if m.lr_of is not None:
            ref = by_name.get(m.lr_of[0])
            shape = ("hidden", "layers", "heads", "intermediate")
            if ref is None or ref is m or ref.lr_of is not None or any(getattr(m, k) != getattr(ref, k) for k in shape):
                raise QidlabError(f"{path}: model {m.name!r} lr_of {m.lr_of[0]!r} must be another model of the suite, "
                                  "of the same shape, with an lr of its own")
            m = replace(m, lr=ref.lr * m.lr_of[1])
        out.append(m)
    return tuple(out)
