"""Pure schedules: the learning rate at a step and the steps at which checkpoints are saved.

Step ``s`` (0-based) is the update that takes the model from checkpoint ``step s`` to ``step s+1``;
``lr_multiplier(s)`` is the factor of the peak learning rate that this update uses. Every schedule
warms up linearly over ``warmup`` updates (``(s + 1) / warmup``, reaching 1 at ``s = warmup - 1``),
then, for ``s`` from ``warmup`` to ``steps``:

* ``cosine``: ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p = (s - warmup) / (steps - warmup)``;
  it is ``r = min_lr_ratio`` at ``s = steps`` (Pythia: cosine to 10% of the peak);
* ``constant``: 1;
* ``wsd`` (warmup-stable-decay): 1 until the last ``decay_fraction`` of the steps, then linear
  down to ``r`` at ``s = steps``.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant", "wsd")


def lr_multiplier(step: int, *, steps: int, schedule: str = "cosine", warmup: int = 0, min_lr_ratio: float = 0.1,
                  decay_fraction: float = 0.2) -> float:
    """The factor of the peak learning rate used by update ``step`` (module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    r = min_lr_ratio
    if schedule == "cosine":
        p = min(1.0, (step - warmup) / max(1, steps - warmup))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    decay_start = steps - decay_fraction * steps
    if step <= decay_start:
        return 1.0
    p = min(1.0, (step - decay_start) / max(1e-12, steps - decay_start))
    return 1.0 - (1.0 - r) * p


def checkpoint_steps(steps: int, *, log_spaced_until: int = 512, every: int = 1000, per_octave: int = 1) -> list[int]:
    """The steps whose checkpoints are saved, sorted: like Pythia's, 0, 1, 2, 4, ..., up to
    ``log_spaced_until``, then every ``every`` steps; the last step (``steps``) always.
    ``per_octave`` > 1 puts that many log-spaced steps in each doubling (``round(2 ** (j / per_octave))``,
    duplicates once), e.g. 3: 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, ..."""
    out = {0, steps}
    j = 0
    while (p := round(2 ** (j / per_octave))) <= min(log_spaced_until, steps):
        out.add(p)
        j += 1
    out.update(range(every, steps + 1, every))
    return sorted(out)


def branch_multiplier(step: int, *, start: int, length: int) -> float:
    """A cooldown branch (``branches.py``): update ``step`` of a branch that leaves the stable phase at
    checkpoint ``start`` and decays linearly to 0 over ``length`` updates: ``1 - (step - start) / length``
    (1 at ``step = start``, 0 at ``step = start + length``, the branch's end, which no update uses)."""
    return max(0.0, 1.0 - (step - start) / length)


def log_spaced(first: int, last: int, n: int) -> list[int]:
    """``n`` integer steps from ``first`` to ``last`` (inclusive), spaced evenly in log(step), rounded;
    fewer when rounding makes two equal."""
    if n == 1 or first == last:
        return [last]
    ratio = (last / first) ** (1.0 / (n - 1))
    return sorted({round(first * ratio ** i) for i in range(n)} | {last})
