"""A suite file (TOML): one corpus, one tokenizer, one data order, several model sizes.

    [suite]
    name = "stdlib-tiny"
    corpus = "corpus"                  # a folder from `qidlab corpus build`, relative to this file
    seed = 0                           # model init and data order
    tokenizer = 8192                   # vocab size of a byte-level BPE trained on the train split,
                                       #   or a path to a tokenizer.json (relative to this file)
    seq_len = 256                      # tokens per sequence
    batch_size = 16                    # sequences per step; tokens_per_step = batch_size * seq_len
    steps = 2000                       # optimizer steps, the same for every model
    schedule = "cosine"                # "cosine" | "constant" | "wsd"
    warmup = 100                       # linear warmup steps
    min_lr_ratio = 0.1                 # final lr / peak lr (cosine and wsd; Pythia: 0.1)
    decay_fraction = 0.2               # wsd: the last fraction of steps that decays
    epochs = 1                         # passes over the train tokens allowed (> 1: repetition)
    weight_decay = 0.01                # AdamW (Pythia: 0.01)
    grad_clip = 1.0                    # max gradient norm (0 = no clipping)
    checkpoints = { log_spaced_until = 512, every = 1000 }   # Pythia: 0, 1, 2, 4, ..., 512, then every 1000
                                       #   (per_octave = 3: three log-spaced steps per doubling, default 1)
    log_every = 1                      # a train-log.csv row every this many updates (and at every checkpoint)
    device = "auto"                    # "auto" (CUDA when torch sees a GPU) | "cpu" | "cuda" | "cuda:N"
    compile = false                    # torch.compile the forward pass (CUDA: bf16 autocast either way)
    lr_sweep = { factors = [0.25, 0.5, 1, 2, 4], steps = 200 }   # optional: choose each model's lr (lr_sweep.py)
    seed_data = "documents"            # the data of the models' seed runs (seeds, below; branches.py):
                                       #   "documents" (default): each seed S its own token file, the train
                                       #   documents in document_order(n_docs, S) (_data-seed<S>/), read in
                                       #   consecutive batches like a main run of this suite with seed = S;
                                       #   "sequences": a permutation drawn from S of this suite's sequences
                                       #   (each batch B windows from across the corpus: the seed runs
                                       #   trained before this key, e.g. Campaign 2's seeds 1, 2 of c2-en)

    [[models]]                         # one GPT-NeoX per entry
    name = "h64-l2"                    # folder name: <out>/<suite>/<model>/step<N>/
    hidden = 64
    layers = 2
    heads = 4
    lr = 3e-3                          # peak learning rate of this size
    intermediate = 256                 # optional; default 4 * hidden
    lr_of = "h64-l2"                   # instead of lr: that model's lr (after its lr sweep) x lr_factor,
    lr_factor = 0.5                    #   not swept itself (the same size at another peak lr)
    twin = "h64-l2-bf16"               # low-bit models: the 16-bit model of the same shape they compare with
    precision = "bitnet-b1.58"         # low-bit training: this shorthand, or a [models.qat] table (precision.py)
    seeds = [1, 2]                     # optional: more runs with these seeds (init and data order; branches.py)
    main_run = false                   # optional (default true): train only the seed runs (with their branches
                                       #   and averages), not the main run: for a model whose main run was
                                       #   trained before, elsewhere (GPU runs are not reproducible bit for
                                       #   bit: a second main run would be another model under the same
                                       #   (suite, model, step)). Needs seeds; lr is the main run's (the rate
                                       #   its lr sweep chose), so the suite takes no lr sweep (lr_sweep
                                       #   table or --lr-sweep: refused). The seed runs' weights and hashes
                                       #   are the same as beside the main run.
    branches = { points = 5, first = 64, fraction = 0.15, average = 5 }   # optional: cooldown branches and
                                       #   weight averages from the stable phase (wsd/constant; branches.py)

Every problem is one ``QidlabError`` naming the file and key. That the corpus is large enough
(``steps * batch_size * seq_len`` <= ``epochs`` * the train tokens) is checked once the corpus is
tokenised, by ``check_fits``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from qidlab.errors import QidlabError
from qidlab.tomlfile import Key, check_table, read_toml
from qidlab.train.branches import (SEED_DATA, Branch, BranchSpec, model_folders, parse_branches, parse_seeds,
                                   plan_branches)
from qidlab.train.lr_sweep import LRSweep, parse_lr_sweep, resolve_lr_of
from qidlab.train.precision import BITNET_LR_FACTOR, QATSpec, parse_qat
from qidlab.train.schedule import SCHEDULES

SECTIONS = {"suite", "models"}
# one schema per table (tokenizer, schedule, device, lr_sweep, precision and qat: checked where they are read)
SUITE_KEYS = {"name": Key("str", required=True), "corpus": Key("str", required=True), "seed": Key("int", min=0),
              "tokenizer": Key(), "seq_len": Key("int", min=1, required=True),
              "batch_size": Key("int", min=1, required=True), "steps": Key("int", min=1, required=True),
              "schedule": Key(), "warmup": Key("int", min=0), "min_lr_ratio": Key("number", min=0, max=1),
              "decay_fraction": Key("number", min=0, max=1, above=True), "epochs": Key("number", min=0, above=True),
              "weight_decay": Key("number", min=0), "grad_clip": Key("number", min=0), "checkpoints": Key(),
              "log_every": Key("int", min=1), "device": Key(), "compile": Key("bool"), "lr_sweep": Key(),
              "seed_data": Key("str", choices=SEED_DATA)}
# settings of how a run is executed or recorded, not in model_hash (CUDA's bf16 autocast changes the
# weights reached, which each checkpoint's qidlab.json records as "device"); seed_data changes only
# the seed runs, whose trajectory_hash (branches.py) says which data they read
RUN_KEYS = ("log_every", "device", "compile", "lr_sweep", "seed_data")  # a sweep's choice enters the hash as the lr
CHECKPOINT_KEYS = {"log_spaced_until": Key("int", min=0), "every": Key("int", min=1), "per_octave": Key("int", min=1)}
MODEL_KEYS = {"name": Key("str", required=True), "hidden": Key("int", min=1, required=True),
              "layers": Key("int", min=1, required=True), "heads": Key("int", min=1, required=True),
              "lr": Key("number", min=0, above=True), "intermediate": Key("int", min=1), "twin": Key(),
              "precision": Key(), "qat": Key(), "seeds": Key(), "branches": Key(),
              "lr_of": Key("str"), "lr_factor": Key("number", min=0, above=True), "main_run": Key("bool")}
# ModelSpec fields that add trajectories beside the main run without changing it: not in model_hash
TRAJECTORY_FIELDS = ("seeds", "branch_spec", "branches", "lr_of", "main_run")  # lr_of: the lr it gives is hashed
DEFAULT_VOCAB = 8192
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden: int
    layers: int
    heads: int
    lr: float  # peak learning rate
    intermediate: int  # MLP width
    twin: str | None = None  # the 16-bit model of the same shape this low-bit model compares with
    qat: QATSpec | None = None  # low-bit training (precision.py); None: 16-bit
    seeds: tuple[int, ...] = ()  # more runs of this model with these seeds (branches.py)
    branch_spec: BranchSpec | None = None  # its branches table, as written
    branches: tuple[Branch, ...] = ()  # the branch points planned from it (branches.plan_branches)
    lr_of: tuple[str, float] | None = None  # (model, factor): lr = that model's lr x factor, not swept
    main_run: bool = True  # False: only the seed runs (and their branches, averages) are trained

    @property
    def precision(self) -> str | None:
        """The low-bit precision's label (``bitnet-b1.58``, ``w4g32-a8``, ...); None for a 16-bit model."""
        return None if self.qat is None else self.qat.label()


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    path: Path  # the suite file
    corpus: Path
    seed: int
    vocab_size: int | None  # train a BPE of this size on the train split ...
    tokenizer_path: Path | None  # ... or use this tokenizer.json
    seq_len: int
    batch_size: int
    steps: int
    schedule: str
    warmup: int
    min_lr_ratio: float
    decay_fraction: float
    epochs: float
    weight_decay: float
    grad_clip: float
    log_spaced_until: int
    every: int
    models: tuple[ModelSpec, ...]
    per_octave: int = 1  # log-spaced checkpoints per doubling of the step (schedule.checkpoint_steps)
    log_every: int = 1  # train-log.csv: a row every this many updates
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" (engine.resolve_device)
    compile: bool = False  # torch.compile the forward pass
    lr_sweep: LRSweep | None = None  # choose each model's peak lr by short runs first (lr_sweep.py)
    seed_data: str = "documents"  # a seed run's data: its own document order, or "sequences" (branches.py)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def schedule_dict(self, steps: int | None = None) -> dict:
        """The lr schedule: ``lr_multiplier``'s keywords, as stored in each checkpoint's ``qidlab.json``
        (peak lr per model apart). ``steps``: the schedule of a shorter run of that many updates
        (an lr sweep's), its warmup scaled by ``steps / self.steps``."""
        warmup = self.warmup if steps is None else min(steps, round(self.warmup * steps / self.steps))
        return {"schedule": self.schedule, "steps": self.steps if steps is None else steps, "warmup": warmup,
                "min_lr_ratio": self.min_lr_ratio, "decay_fraction": self.decay_fraction}

    def model_hash(self, model: ModelSpec) -> str:
        """sha256 of everything that determines a model's training (not its name or the file's path)."""
        doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
               if k not in ("name", "path", "models", "corpus", "tokenizer_path", *RUN_KEYS)}
        if doc["per_octave"] == 1:  # the default: absent, so hashes of older suites stay what they were
            del doc["per_octave"]
        doc["model"] = {k: v for k, v in asdict(model).items()
                        if k not in ("name", "twin", "qat", *TRAJECTORY_FIELDS)}
        if model.qat is not None:  # absent for 16-bit models, so their hashes stay what they were
            doc["model"]["qat"] = model.qat.to_dict()
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def load_suite_config(path) -> SuiteConfig:
    """Parse and validate a suite file; one ``QidlabError`` naming the file and key otherwise."""
    path = Path(path)
    raw = read_toml(path, "suite")
    unknown = sorted(set(raw) - SECTIONS)
    if unknown:
        raise QidlabError(f"{path}: unknown section {unknown[0]!r} (known: [suite], [[models]])")
    s = raw.get("suite")
    if not isinstance(s, dict):
        raise QidlabError(f"{path}: needs a [suite] table")
    check_table(s, SUITE_KEYS, path, "[suite]")
    name = s["name"]
    if not _NAME.match(name):
        raise QidlabError(f"{path}: [suite] name must be a folder name (letters, digits, . _ -), got {name!r}")
    where = f"{path}: [suite]"
    steps = s["steps"]
    schedule = s.get("schedule", "cosine")
    if schedule not in SCHEDULES:
        raise QidlabError(f"{where} unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    warmup = s.get("warmup", 0)
    if warmup > steps:
        raise QidlabError(f"{where} warmup ({warmup}) is longer than steps ({steps})")
    tok = s.get("tokenizer", DEFAULT_VOCAB)
    vocab_size = tokenizer_path = None
    if isinstance(tok, str):
        tokenizer_path = path.parent / tok
    elif isinstance(tok, int) and not isinstance(tok, bool) and 259 <= tok <= 2 ** 32:
        vocab_size = tok  # 256 bytes + 3 special tokens at least
    else:
        raise QidlabError(f"{where} tokenizer must be a vocab size (an integer >= 259) or a path to a "
                          f"tokenizer.json, got {tok!r}")
    ck = s.get("checkpoints", {})
    if not isinstance(ck, dict):
        raise QidlabError(f"{where} checkpoints must be a table {{ log_spaced_until = 512, every = 1000 }}")
    check_table(ck, CHECKPOINT_KEYS, path, "[suite] checkpoints", label="[suite] checkpoints.")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise QidlabError(f"{path}: needs at least one [[models]] entry (name, hidden, layers, heads, lr)")
    seed = s.get("seed", 0)
    specs = tuple(_model(m, path, i) for i, m in enumerate(models))
    specs = tuple(_trajectories(m, path, seed=seed, schedule=schedule, steps=steps, warmup=warmup,
                                decay_fraction=float(s.get("decay_fraction", 0.2)), raw=models[i])
                  for i, m in enumerate(specs))
    names = [m.name for m in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QidlabError(f"{path}: model name {dup[0]!r} is used twice")
    specs = resolve_lr_of(_resolve_twins(specs, path), path)
    _check_folders(specs, path)
    if "lr_sweep" in s:
        check_no_sweep(specs, f"{path}: [suite] lr_sweep")
    return SuiteConfig(
        name=name, path=path, corpus=path.parent / s["corpus"], seed=seed,
        vocab_size=vocab_size, tokenizer_path=tokenizer_path, seq_len=s["seq_len"], batch_size=s["batch_size"],
        steps=steps, schedule=schedule, warmup=warmup, min_lr_ratio=float(s.get("min_lr_ratio", 0.1)),
        decay_fraction=float(s.get("decay_fraction", 0.2)), epochs=float(s.get("epochs", 1)),
        weight_decay=float(s.get("weight_decay", 0.01)), grad_clip=float(s.get("grad_clip", 1.0)),
        log_spaced_until=ck.get("log_spaced_until", 512), every=ck.get("every", 1000),
        per_octave=ck.get("per_octave", 1), models=specs, log_every=s.get("log_every", 1),
        device=_device(s.get("device", "auto"), where), compile=s.get("compile", False),
        lr_sweep=parse_lr_sweep(s["lr_sweep"], where) if "lr_sweep" in s else None,
        seed_data=s.get("seed_data", "documents"))


def _device(value, where) -> str:
    if not isinstance(value, str) or not re.match(r"^(auto|cpu|cuda(:\d+)?)$", value):
        raise QidlabError(f"{where} device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {value!r}")
    return value


def _model(m, path, i) -> ModelSpec:
    where = f"{path}: models[{i}]"
    if not isinstance(m, dict):
        raise QidlabError(f"{where} must be a table")
    check_table(m, MODEL_KEYS, path, f"models[{i}]")
    name = m["name"]
    if not _NAME.match(name):
        raise QidlabError(f"{where} name must be a folder name (letters, digits, . _ -), got {name!r}")
    where = f"{path}: model {name!r}"
    hidden, heads = m["hidden"], m["heads"]
    if hidden % heads:
        raise QidlabError(f"{where} hidden ({hidden}) must be a multiple of heads ({heads})")
    qat = parse_qat(m.get("precision"), m.get("qat"), where)
    twin = m.get("twin")
    if twin is not None and (not isinstance(twin, str) or qat is None):
        raise QidlabError(f"{where} twin must name the 16-bit model of a low-bit model (one with precision or "
                          f"[models.qat]), got twin = {twin!r}")
    lr_of = _lr_of(m, where)
    if "lr" not in m and lr_of is None and not (qat is not None and qat.preset and twin):
        raise QidlabError(f"{where} needs 'lr' (only precision = \"bitnet-b1.58\" with a twin, or lr_of with "
                          "lr_factor, may leave it out)")
    lr = float(m["lr"]) if "lr" in m else None  # None: from the twin or lr_of
    return ModelSpec(name=name, hidden=hidden, layers=m["layers"], heads=heads, lr=lr, lr_of=lr_of,
                     intermediate=m.get("intermediate", 4 * hidden), twin=twin, qat=qat)


def _trajectories(m: ModelSpec, path, *, seed: int, schedule: str, steps: int, warmup: int, decay_fraction: float,
                  raw: dict) -> ModelSpec:
    """``m`` with its ``seeds`` and planned ``branches`` (``branches.py``), checked against the schedule."""
    where = f"{path}: model {m.name!r}"
    seeds = parse_seeds(raw["seeds"], seed, where) if "seeds" in raw else ()
    main_run = raw.get("main_run", True)
    if not main_run and not seeds:
        raise QidlabError(f"{where} main_run = false needs seeds (the runs it trains instead of the main run), "
                          "e.g. seeds = [1, 2]")
    m = replace(m, main_run=main_run)
    if "branches" not in raw:
        return replace(m, seeds=seeds)
    spec = parse_branches(raw["branches"], where)
    planned = plan_branches(spec, schedule=schedule, steps=steps, warmup=warmup, decay_fraction=decay_fraction,
                            where=where)
    return replace(m, seeds=seeds, branch_spec=spec, branches=planned)


def data_seeds(config: SuiteConfig, models=None) -> list[int]:
    """The seeds with a token file of their own (``_data-seed<S>``, ``data.py``): those of the seed runs
    of ``models`` (names; all by default) when ``seed_data`` is "documents"; none with "sequences"."""
    if config.seed_data != "documents":
        return []
    return sorted({s for m in config.models if models is None or m.name in models for s in m.seeds})


def folders_of(m: ModelSpec, seed: int = 0) -> list[str]:
    """Every folder model ``m``'s training writes (``branches.model_folders``); the main run's first
    (with ``main_run = false``: the seed runs' folders only)."""
    return model_folders(m.name, seed, m.seeds, m.branches, m.branch_spec.average if m.branch_spec else 0,
                         m.main_run)


def check_no_sweep(specs: tuple[ModelSpec, ...], what: str) -> None:
    """``QidlabError`` when a model has ``main_run = false``: its seed runs train at the lr given, the
    one its main run was trained at, which a new lr sweep could change."""
    off = [m.name for m in specs if not m.main_run]
    if off:
        raise QidlabError(f"{what}: model {off[0]!r} has main_run = false, so its seed runs must train at its "
                          "main run's lr (given as lr), not at a new lr sweep's; drop the sweep", params=("lr_sweep",))


def _check_folders(specs: tuple[ModelSpec, ...], path) -> None:
    """No two trajectories (main runs, seed runs, branches, averages) share a folder."""
    seen = {}
    for m in specs:
        for f in folders_of(m):
            if f in seen:
                raise QidlabError(f"{path}: models {seen[f]!r} and {m.name!r} both write the folder {f!r} "
                                  "(seed runs are <model>-seed<S>, branches <run>-cool<step>, averages <run>-lawa<k>); "
                                  "rename one")
            seen[f] = m.name


def _lr_of(m: dict, where: str) -> tuple[str, float] | None:
    """``(model, factor)`` of ``lr_of`` and ``lr_factor``: this model's peak lr is that model's (after
    its lr sweep, if any) times the factor, and it is not swept itself (``lr_sweep.sweep_suite``)."""
    if "lr_of" not in m and "lr_factor" not in m:
        return None
    if "lr_of" not in m or "lr_factor" not in m or "lr" in m or not isinstance(m["lr_of"], str):
        raise QidlabError(f"{where} lr_of (another model's name) and lr_factor go together, instead of lr")
    return m["lr_of"], float(m["lr_factor"])


def _resolve_twins(specs: tuple[ModelSpec, ...], path) -> tuple[ModelSpec, ...]:
    """Check every ``twin`` (another 16-bit model of the suite, of the same shape) and give a
    preset model without ``lr`` its twin's lr times ``BITNET_LR_FACTOR``."""
    by_name = {m.name: m for m in specs}
    out = []
    for m in specs:
        if m.twin is not None:
            t = by_name.get(m.twin)
            if t is None or t is m or t.qat is not None:
                raise QidlabError(f"{path}: model {m.name!r} twin {m.twin!r} must be another, 16-bit model of the "
                                  f"suite (16-bit models: {', '.join(n for n, s in by_name.items() if s.qat is None)})")
            shape = ("hidden", "layers", "heads", "intermediate")
            if any(getattr(m, k) != getattr(t, k) for k in shape):
                raise QidlabError(f"{path}: model {m.name!r} and its twin {t.name!r} differ in shape (" + ", ".join(
                    f"{k} {getattr(m, k)} vs {getattr(t, k)}" for k in shape if getattr(m, k) != getattr(t, k)) + ")")
            if m.lr is None:
                m = replace(m, lr=t.lr * BITNET_LR_FACTOR)
        out.append(m)
    return tuple(out)


def check_fits(config: SuiteConfig, n_tokens: int) -> int:
    """The number of whole sequences in ``n_tokens``; ``QidlabError`` when the suite needs more tokens
    than ``epochs`` passes over them give."""
    n_seqs = n_tokens // config.seq_len
    need = config.steps * config.tokens_per_step
    have = int(config.epochs * n_seqs * config.seq_len)
    if n_seqs == 0 or need > have:
        raise QidlabError(
            f"{config.path}: the models are too big for the corpus: {config.steps} steps x {config.batch_size} x "
            f"{config.seq_len} = {need:,} tokens, but {config.corpus} has {n_seqs * config.seq_len:,} train tokens "
            f"in whole sequences (x epochs = {config.epochs:g}: {have:,}); use fewer steps, a larger corpus, or "
            f"set epochs to allow repetition")
    return n_seqs
