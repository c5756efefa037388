"""Trajectories of one model beyond its main run: seed runs, cooldown branches, weight averages (pure).

A ``[[models]]`` entry may ask for more than its one main run::

    seeds = [1, 2]                     # more runs of this model, each with its own initialisation and
                                       #   data order (run "seed1" in folder <model>-seed1, ...)
    branches = { points = 5, first = 64, fraction = 0.15, average = 5, average_span = 0.1 }
                                       # or at = [64, 128, 256, 512, 1024] instead of points/first

A seed run ``S`` follows its main run's procedure with its own seed when the suite's ``seed_data``
is "documents" (the default): initialisation after ``manual_seed(S)``, the train documents laid
into a token file of its own in ``document_order(n_docs, S)`` (``data.py``, ``_data-seed<S>/``) and
read in consecutive batches by ``batch_indices(..., S)`` (``batch_order`` "contiguous", as a main
run's). With ``seed_data = "sequences"`` it reads the suite's own token file in a permutation of its
sequences drawn from ``(S, 2, epoch)`` (``run_sequences``; ``batch_order`` "shuffled"): each batch
holds windows from across the corpus, far more diverse than a main run's, so such a seed run is not
the main run with another seed (issue 17: lower loss, larger QiD); kept so the seed runs trained
that way stay reproducible and identifiable.

``branches`` needs a stable phase (``schedule = "wsd"`` or ``"constant"``). Each branch point ``b``
(``points`` steps log-spaced from ``first`` to the last stable step, or the steps ``at``) is a saved
checkpoint of every trajectory of the model (main run and seed runs), and:

* a **cooldown branch** continues from checkpoint ``b`` (its weights and optimizer state) on the
  trajectory's own next batches for ``L = round(fraction * b)`` updates, decaying the learning rate
  linearly from the peak to 0 (``schedule.branch_multiplier``); its end is the checkpoint
  ``<trajectory>-cool<b>/step<b + L>/`` (D = (b + L) tokens_per_step);
* a **weight average** (LAWA, Kaddour 2022): the mean, in float32, of the trajectory's weights at
  the ``average`` steps ``round(b * (1 - average_span * j / (average - 1)))``, j = 0 .. average-1 (the
  last ``average`` stable-phase snapshots, spaced evenly over the last ``average_span`` of the steps
  to ``b``), saved in the model's dtype as the checkpoint ``<trajectory>-lawa<k>/step<b>/``
  (D = b tokens_per_step). ``average = 0`` writes none.

``main_run = false`` (with ``seeds``) trains the seed runs, their branches and averages only: for a
model whose main run was trained before, elsewhere (a GPU run is not reproducible bit for bit, so
training it again would give another model under the same (suite, model, step)). A seed run's
weights and hash do not depend on it: its initialisation, data order and updates never read the
main run.

Each folder's ``qidlab.json`` says what it is (``trajectory``: ``{"kind": "run" | "branch" |
"average", ...}``) and, for a seed run and everything made from it, ``run`` ("seed1"); the main run's
folders have no ``run`` (today's identity) and, at branch points only, ``branch_point``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from qidlab.errors import QidlabError
from qidlab.tomlfile import Key, check_table
from qidlab.train.schedule import log_spaced

SEED_DATA = ("documents", "sequences")  # the suite's seed_data values (module docstring)
BATCH_ORDERS = ("contiguous", "shuffled")  # a run's batch_order: consecutive sequences, or drawn from across the corpus
BRANCH_KEYS = {"at": Key(), "points": Key("int", min=1), "first": Key("int", min=1),
               "fraction": Key("number", min=0, max=1, above=True), "average": Key("int", min=0),
               "average_span": Key("number", min=0, max=1, above=True)}
DEFAULT_POINTS = 5
DEFAULT_FRACTION = 0.15  # a branch decays over 15% more tokens than its branch point has seen (10-20%)
DEFAULT_AVERAGE = 5  # LAWA's k (Kaddour 2022 averages the last ~5-10 checkpoints)
DEFAULT_SPAN = 0.1  # the k snapshots cover the last 10% of the steps to the branch point


@dataclass(frozen=True)
class BranchSpec:
    """A model's ``branches`` table (module docstring)."""

    at: tuple[int, ...] | None = None
    points: int = DEFAULT_POINTS
    first: int | None = None  # None: the last stable step / 16
    fraction: float = DEFAULT_FRACTION
    average: int = DEFAULT_AVERAGE
    average_span: float = DEFAULT_SPAN


@dataclass(frozen=True)
class Branch:
    """One branch point of a trajectory: cooldown ``start`` .. ``end`` and the average's steps."""

    start: int  # b, the stable-phase checkpoint the branch leaves from
    length: int  # L, the decay's updates
    average_steps: tuple[int, ...]  # ascending; () when no average is written

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Trajectory:
    """A trained sequence of checkpoints in folder ``<suite>/<folder>/``: a model's main run (``run``
    None), a seed run, or a cooldown branch of either (``branch`` set; ``base`` its run's folder)."""

    folder: str
    model: str  # the [[models]] name
    run: str | None  # "seed1"; None: the main run (today's identity)
    seed: int  # initialisation and data order
    shuffled: bool  # the data order is this seed's permutation of the suite's sequences (seed_data "sequences")
    base: str | None = None  # a branch: the folder of the run it leaves
    branch: Branch | None = None

    @property
    def batch_order(self) -> str:
        """"shuffled" (a permutation of the suite's sequences) or "contiguous" (consecutive sequences
        of the run's token file: main runs, and seed runs with ``seed_data = "documents"``)."""
        contiguous, shuffled = BATCH_ORDERS
        return shuffled if self.shuffled else contiguous


def parse_seeds(value, suite_seed: int, where: str) -> tuple[int, ...]:
    """A model's ``seeds``: distinct non-negative integers other than the suite's ``seed``."""
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    if not ok or len(set(value)) != len(value):
        raise QidlabError(f"{where} seeds must be a list of distinct non-negative integers, got {value!r}")
    if suite_seed in value:
        raise QidlabError(f"{where} seeds must not repeat the suite's seed ({suite_seed}): that run is the main one")
    return tuple(value)


def parse_branches(table, where: str) -> BranchSpec:
    """A model's ``branches`` table; one ``QidlabError`` naming the key otherwise."""
    if not isinstance(table, dict):
        raise QidlabError(f"{where} branches must be a table {{ points = 5, first = 64, fraction = 0.15 }}")
    check_table(table, BRANCH_KEYS, where, "branches", label="branches.")
    at = table.get("at")
    if at is not None:
        if any(k in table for k in ("points", "first")):
            raise QidlabError(f"{where} branches takes at, or points and first, not both")
        ok = isinstance(at, list) and at and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in at)
        if not ok or len(set(at)) != len(at):
            raise QidlabError(f"{where} branches.at must be a list of distinct positive steps, got {at!r}")
        at = tuple(sorted(at))
    average = table.get("average", DEFAULT_AVERAGE)
    if average == 1:
        raise QidlabError(f"{where} branches.average must be 0 (no average) or at least 2 checkpoints, got 1")
    return BranchSpec(at=at, points=table.get("points", DEFAULT_POINTS), first=table.get("first"),
                      fraction=float(table.get("fraction", DEFAULT_FRACTION)), average=average,
                      average_span=float(table.get("average_span", DEFAULT_SPAN)))


def stable_end(schedule: str, steps: int, decay_fraction: float) -> int | None:
    """The last step of the stable phase (the lr still at its peak); None for a schedule without one."""
    if schedule == "constant":
        return steps
    if schedule == "wsd":
        return math.floor(steps - decay_fraction * steps)
    return None


def plan_branches(spec: BranchSpec, *, schedule: str, steps: int, warmup: int, decay_fraction: float,
                  where: str) -> tuple[Branch, ...]:
    """The branch points of a model (module docstring), checked against the suite's schedule: every
    branch point and every averaged snapshot in the stable phase (after warmup), every branch end
    within the suite's ``steps`` (the data the suite was sized for)."""
    last_stable = stable_end(schedule, steps, decay_fraction)
    if last_stable is None:
        raise QidlabError(f"{where} branches need a stable phase: schedule \"wsd\" or \"constant\", not {schedule!r}")
    last = min(last_stable, math.floor(steps / (1 + spec.fraction)))  # its branch ends by `steps`
    if spec.at is not None:
        points = list(spec.at)
    else:
        first = spec.first if spec.first is not None else max(1, last // 16)
        if first > last:
            raise QidlabError(f"{where} branches.first ({first}) is after the last step a branch can leave "
                              f"from ({last}: stable phase, and its end within steps = {steps})")
        points = log_spaced(first, last, spec.points)
    out = []
    for b in points:
        length = max(1, round(spec.fraction * b))
        avg = _average_steps(b, spec.average, spec.average_span)
        if b > last_stable or b + length > steps:
            raise QidlabError(f"{where} branch point {b} (cooldown to step {b + length}) leaves the stable phase "
                              f"(to step {last_stable}) or ends after steps = {steps}")
        if b <= warmup or (avg and avg[0] <= warmup):
            raise QidlabError(f"{where} branch point {b}" + (f" (averaging from step {avg[0]})" if avg else "")
                              + f" is not after the warmup ({warmup} steps); choose a later first point or a "
                              "smaller average_span")
        out.append(Branch(start=b, length=length, average_steps=avg))
    return tuple(out)


def _average_steps(b: int, k: int, span: float) -> tuple[int, ...]:
    if k == 0:
        return ()
    steps = sorted({round(b * (1 - span * j / (k - 1))) for j in range(k)})
    return tuple(steps)


def trajectories(model: str, seed: int, seeds: tuple[int, ...], branches: tuple[Branch, ...],
                 main_run: bool = True, seed_data: str = "documents") -> list[Trajectory]:
    """Every trajectory of a model, runs first (main, then seed runs), each followed by its branches;
    ``main_run`` False: the seed runs and theirs only (the main run trained elsewhere, before).
    ``seed_data`` (``SEED_DATA``): "sequences" makes the seed runs ``shuffled`` (module docstring)."""
    if seed_data not in SEED_DATA:
        raise QidlabError(f"seed_data must be one of {', '.join(SEED_DATA)}, not {seed_data!r}")
    runs = [Trajectory(model, model, None, seed, False)] if main_run else []
    runs += [Trajectory(f"{model}-seed{s}", model, f"seed{s}", s, seed_data == "sequences") for s in seeds]
    out = []
    for r in runs:
        out.append(r)
        out += [Trajectory(branch_folder(r.folder, b), model, r.run, r.seed, r.shuffled, base=r.folder, branch=b)
                for b in branches]
    return out


def model_folders(model: str, seed: int, seeds: tuple[int, ...], branches: tuple[Branch, ...],
                  average: int, main_run: bool = True) -> list[str]:
    """Every folder a model's training writes under the suite folder: its runs, their branches and,
    with ``average`` k > 0 and branches, their ``-lawa<k>`` folders; the main run's first (none of
    the main run's with ``main_run`` False)."""
    out = [t.folder for t in trajectories(model, seed, seeds, branches, main_run)]
    if branches and average:
        out += [average_folder(t.folder, average) for t in trajectories(model, seed, seeds, (), main_run)]
    return out


def branch_folder(run_folder: str, branch: Branch) -> str:
    return f"{run_folder}-cool{branch.start}"


def average_folder(run_folder: str, k: int) -> str:
    return f"{run_folder}-lawa{k}"


def trajectory_hash(model_hash: str, traj: Trajectory) -> str:
    """The hash a trajectory's trainer state is checked against: the model's for its main run (as
    today); otherwise the sha256 of the sorted-keys JSON of ``model_hash``, ``run``, ``seed``,
    ``shuffled`` and ``branch`` (null, or its ``start`` and ``length``). ``shuffled`` is true for a
    seed run of ``seed_data = "sequences"`` (the hashes of those trained before seed_data existed) and
    false for one of "documents", whose hash thus differs."""
    if traj.run is None and traj.branch is None:
        return model_hash
    doc = {"model_hash": model_hash, "run": traj.run, "seed": traj.seed, "shuffled": traj.shuffled,
           "branch": None if traj.branch is None else {"start": traj.branch.start, "length": traj.branch.length}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def sequence_order(n_seqs: int, seed: int, epoch: int):
    """A ``seed_data = "sequences"`` seed run's order of the suite's ``n_seqs`` sequences in pass
    ``epoch``: a permutation drawn from ``(seed, 2, epoch)`` (the suite's own data order draws
    ``(seed, 0)`` and ``(seed, 1, epoch)``)."""
    import numpy as np

    return np.random.default_rng([seed, 2, epoch]).permutation(n_seqs)


def run_sequences(step: int, batch_size: int, n_seqs: int, seed: int):
    """The sequence numbers (first-pass order of the suite's token file) of a ``seed_data = "sequences"``
    seed run's batch ``step``."""
    import numpy as np

    g = step * batch_size + np.arange(batch_size)
    epoch, within = g // n_seqs, g % n_seqs
    out = within.copy()
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = sequence_order(n_seqs, seed, int(e))[within[sel]]
    return out


def trajectory_meta(config, spec, traj: Trajectory) -> dict:
    """What a trajectory adds to each of its checkpoints' ``qidlab.json``: nothing for a main run
    (today's files); ``run`` and ``trajectory`` for a seed run; for a branch also ``branch``: where it
    left (``from``, ``from_step``, ``from_tokens``), its decay (``decay_steps``, ``decay_tokens``,
    ``fraction``, ``decay`` "linear") and the lr it reached (``lr_reached``, 0)."""
    if traj.run is None and traj.branch is None:
        return {}
    out = {"run": traj.run} if traj.run is not None else {}
    if traj.branch is None:
        return out | {"trajectory": {"kind": "run", "model": spec.name}}
    b, tps = traj.branch, config.tokens_per_step
    return out | {"trajectory": {"kind": "branch", "model": spec.name, "base": traj.base},
                  "branch": {"from": traj.base, "from_step": b.start, "from_tokens": b.start * tps,
                             "decay_steps": b.length, "decay_tokens": b.length * tps,
                             "fraction": spec.branch_spec.fraction, "decay": "linear", "lr_reached": 0.0}}


def branch_point_meta(spec, traj: Trajectory, branch: Branch) -> dict:
    """``branch_point`` of a run's checkpoint that branches leave from: the folders of its cooldown
    branch (after) and weight average (null when none)."""
    k = spec.branch_spec.average
    return {"branch_point": {"cooldown": branch_folder(traj.folder, branch),
                             "average": average_folder(traj.folder, k) if k else None}}


def average_meta(spec, traj: Trajectory, run_meta: dict) -> dict:
    """The ``qidlab.json`` of the weight average at ``traj``'s branch point, from that run checkpoint's
    ``run_meta``: its D, step, lr, ``run``, plus ``average`` (the steps averaged, k, span) and
    ``trajectory`` kind "average"; ``train_loss`` null (no update made these weights)."""
    b = traj.branch
    meta = {k: v for k, v in run_meta.items() if k not in ("branch_point", "trajectory", "train_loss")}
    return meta | {"train_loss": None,
                   "trajectory": {"kind": "average", "model": spec.name, "base": traj.base},
                   "average": {"of": traj.base, "steps": list(b.average_steps), "k": spec.branch_spec.average,
                               "span": spec.branch_spec.average_span, "method": "LAWA",
                               "accumulated_in": "float32"}}
