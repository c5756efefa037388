"""``train_suite``: train every model of a suite file on the shared data, saving Pythia-style checkpoints.

Layout written under ``<out>/<suite>/``::

    qidlab-suite.toml            suite name, tokens_per_step, bos_is_eos (true: the tokenizer's BOS is its EOS,
                                 a token every model saw; false: an untrained <|bos|>, suites from before
                                 qidlab.train.data's BOS = EOS), per-model sizes (qidlab.checkpoints.discover);
                                 low-bit models also precision = "...", twin = "...", qat = { bits, a_bits, ... }
    _data/                       tokenizer, token file, data.json (qidlab.train.data)
    _data-seed<S>/               seed S's own token file, laid out like _data/ (seed_data = "documents", the default)
    <model>/step<N>/             config.json, model.safetensors, tokenizer, qidlab.json
    <model>/trainer_state.pt     the state at the newest saved step: optimizer, torch RNG, step, config hash
                                 (tensors and plain types only: torch.load(weights_only=True) reads it)
    <model>/train-log.csv        step,tokens,loss,lr: the training loss (nats/token) as it went (records.py)
    <model>/weight-dynamics.json weight changes between saved checkpoints (Ouyang et al. Fig. 12; dynamics.py)
    <model>/lr-sweep.json        with an lr sweep: the held-out loss of each learning rate tried (lr_sweep.py)
    <model>/train-stats.json     steps and tokens trained, seconds, tokens/s and MFU of the last call that trained
                                 (device, autocast, compile; not deterministic; a finished model's is left as is)
    <model>-seed<S>/             a seed run (``seeds``), laid out like <model>/ (``main_run = false``: these
                                 without <model>/, whose main run was trained before, elsewhere); its data
                                 _data-seed<S>/, or with seed_data = "sequences" the suite's, shuffled
    <run>-cool<b>/step<b+L>/     a cooldown branch's end (``branches``), with its own trainer state and logs
    <run>-lawa<k>/step<b>/       the weight average at branch point b
    <run>/_lawa/, <run>/_branches/   the run's weights at the averaged steps and its whole state at branch
                                 points, which the averages and branches are made from (branches.py)

``qidlab.json`` of ``step<N>``: ``tokens`` (= N * batch_size * seq_len, D), ``step``,
``tokens_per_step``, ``seed``, ``peak_lr``, ``lr`` (what update N uses), ``lr_schedule``,
``train_loss`` (of update N - 1; null at step 0), the data's hashes and the model's config hash; for a
low-bit model also ``precision``, ``qat`` (``QATSpec.to_dict()``) and ``twin``: its weights are the latent
full-precision ones, which ``lowbit.apply_qat`` rounds in the forward pass.

Every folder's manifest entry records ``batch_order``: "contiguous" (consecutive sequences of its
run's token file: main runs, and seed runs with ``seed_data = "documents"``) or "shuffled" (seed runs
with ``seed_data = "sequences"``), also for branches and averages; manifests written before carry
none (their seed runs were shuffled).

Determinism: the weights are initialised after ``torch.manual_seed(seed)``; the data order is a
pure function of the seed (``qidlab.train.data``); on CPU with a fixed thread count the same suite
file gives bit-identical weights. Resume: a model whose ``trainer_state.pt`` is older than the last
step restarts from that checkpoint (weights from its safetensors, optimizer state and RNG from the
state file) and reaches the same weights as an uninterrupted run; a finished model is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math

from dataclasses import replace
from pathlib import Path

from qidlab.checkpoints.params import count_params
from qidlab.errors import QidlabError, did_you_mean
from qidlab.files import building, open_atomic, write_json, write_text
from qidlab.torchenv import quiet_transformers, require_measure, torch_threads
from qidlab.train.averaging import SNAPSHOTS, write_average, write_snapshot
from qidlab.train.branches import (Trajectory, average_folder, branch_point_meta, run_sequences, trajectories, trajectory_hash,
                                   trajectory_meta)
from qidlab.train.config import ModelSpec, SuiteConfig, check_fits, check_no_sweep, data_seeds, load_suite_config
from qidlab.train.data import TokenData, prepare_data
from qidlab.train.dynamics import change_summary
from qidlab.train.engine import Clock, build_model, device_name, make_optimizer, make_update, resolve_device
from qidlab.train.lr_sweep import SWEEP_FILE, LRSweep, sweep_suite
from qidlab.train.records import DYNAMICS_FILE, LOG_FILE, DynamicsLog, TrainLog
from qidlab.train.schedule import branch_multiplier, checkpoint_steps, lr_multiplier
from qidlab.train.speed import flops_per_token, mfu, peak_flops

STATE_FILE = "trainer_state.pt"
STATS_FILE = "train-stats.json"
SUITE_MANIFEST = "qidlab-suite.toml"
BRANCH_STATES = "_branches"  # a run's whole state at its branch points, which its branches start from
RESUME_POINTS = 4  # a branch keeps its state (weights included) this many times on the way, to resume from


def _write_suite_manifest(config: SuiteConfig, suite_dir: Path, n_params: dict, sweeps: dict, tokenizer) -> None:
    bos_is_eos = tokenizer.bos_token_id is not None and tokenizer.bos_token_id == tokenizer.eos_token_id
    lines = [f"suite = {json.dumps(config.name)}", f"tokens_per_step = {config.tokens_per_step}",
             f"bos_is_eos = {json.dumps(bos_is_eos)}", ""]
    for m in config.models:
        if not m.main_run:  # its main run's folders are not this suite folder's: no entry claims them
            lines += _trajectory_entries(config, m, n_params[m.name])
            continue
        lines += [f"[models.{json.dumps(m.name)}]", f"hidden = {m.hidden}", f"layers = {m.layers}",
                  f"heads = {m.heads}", f"intermediate = {m.intermediate}", f"lr = {m.lr!r}",
                  f"n_params = {n_params[m.name]}", 'batch_order = "contiguous"']
        if m.qat is not None:
            columns = ", ".join(f"{k} = {v!r}" for k, v in m.qat.columns().items())
            lines += [f"precision = {json.dumps(m.precision)}", f"qat = {{ {columns} }}"]
        if m.twin is not None:
            lines += [f"twin = {json.dumps(m.twin)}"]
        if m.lr_of is not None:  # lr above: the reference's (swept) lr x the factor
            lines += [f"lr_of = {json.dumps(m.lr_of[0])}", f"lr_factor = {m.lr_of[1]!r}"]
        if m.name in sweeps:  # TOML writes inf and nan as Python's repr does
            lines += ["lr_sweep = { " + ", ".join(f"{k} = {v!r}" for k, v in sweeps[m.name].items()) + " }"]
        lines += [""] + _trajectory_entries(config, m, n_params[m.name])
    write_text(suite_dir / SUITE_MANIFEST, "\n".join(lines))


def _trajectory_entries(config: SuiteConfig, m: ModelSpec, n_params: int) -> list[str]:
    """Manifest entries of a model's other folders (``branches.py``): its shape and N, plus ``kind``
    ("run" | "branch" | "average"), ``base_model``, ``run``, ``batch_order`` (its run's: "contiguous"
    or "shuffled") and, for branches and averages, ``base`` (the run's folder) and ``branch_from``
    (the branch point's step). With ``main_run = false``, the seed runs' alone (``base_model`` still
    names the model)."""
    shape = [f"hidden = {m.hidden}", f"layers = {m.layers}", f"heads = {m.heads}",
             f"intermediate = {m.intermediate}", f"lr = {m.lr!r}", f"n_params = {n_params}",
             f"base_model = {json.dumps(m.name)}"]
    out = []
    k = m.branch_spec.average if m.branch_spec else 0
    for t in trajectories(m.name, config.seed, m.seeds, m.branches, m.main_run, config.seed_data):
        run = [f"run = {json.dumps(t.run)}"] if t.run else []
        run += [f"batch_order = {json.dumps(t.batch_order)}"]
        if t.branch is None and t.run is not None:
            out += [f"[models.{json.dumps(t.folder)}]", *shape, 'kind = "run"', *run, ""]
        if t.branch is not None:
            out += [f"[models.{json.dumps(t.folder)}]", *shape, 'kind = "branch"', *run,
                    f"base = {json.dumps(t.base)}", f"branch_from = {t.branch.start}", ""]
            if k and t.branch is m.branches[-1]:
                out += [f"[models.{json.dumps(average_folder(t.base, k))}]", *shape, 'kind = "average"', *run,
                        f"base = {json.dumps(t.base)}", f"average_k = {k}", ""]
    return out


def train_suite(config_path, out_dir, *, threads: int | None = None, device: str | None = None,
                compile: bool | None = None, peak_tflops: float | None = None, lr_sweep: bool | None = None,
                models: list[str] | None = None, data_only: bool = False, on_step=None, log=None) -> list[Path]:
    """Train (or finish training) every model of the suite file; return every ``step<N>`` folder, in order.

    ``models``: train only these models of the suite (by name), e.g. one per GPU job; the data
    order, tokenizer and manifest are the whole suite's, so jobs that train different models of
    one suite file make one suite. ``data_only``: make the tokenizer and the token file
    (``OUT/<suite>/_data``) and those of the seed runs of ``models`` (all by default) that read their
    own (``_data-seed<S>``, ``config.data_seeds``), check that the corpus is large enough, run the lr
    sweeps of ``models`` if sweeping, and stop, so that jobs started side by side on one machine
    afterwards share them instead of each tokenising the corpus.

    ``threads``: torch intra-op threads during the call (restored after); ``None`` keeps the current
    setting. ``device`` (``auto``/``cpu``/``cuda``/``cuda:N``) and ``compile`` override the suite
    file's; ``peak_tflops`` the accelerator peak that MFU is computed against (``speed.py``). ``lr_sweep``:
    True sweeps each model's learning rate first (``lr_sweep.py``; the suite file's settings or the
    defaults), False does not, None as the suite file says (a ``lr_sweep`` table turns it on).
    ``on_step(event)`` is called after each update with a dict ``model``, ``step`` (the update's index:
    it took the model from step<N> to step<N+1>), ``loss``, ``lr`` and ``batch`` (the (batch_size,
    seq_len) token ids); an exception it raises stops the run, which a later call resumes.
    ``log(line)`` receives progress lines (tokens/s at the end of each model).
    """
    config = config_path if isinstance(config_path, SuiteConfig) else load_suite_config(config_path)
    require_measure("training")
    config = replace(config, device=config.device if device is None else device,
                     compile=config.compile if compile is None else bool(compile),
                     lr_sweep=None if lr_sweep is False else (config.lr_sweep or (LRSweep() if lr_sweep else None)))
    if config.lr_sweep is not None:
        check_no_sweep(config.models, f"{config.path}: an lr sweep (lr_sweep or --lr-sweep)")
    run = {"device": resolve_device(config.device), "peak_tflops": peak_tflops}
    if peak_tflops is not None:
        peak_flops(None, peak_tflops)  # a bad override fails before any training
    chosen = _chosen(config, models)  # an unknown model name fails before anything is written
    suite_dir = Path(out_dir).expanduser() / config.name  # made by prepare_data once the corpus is read
    data = prepare_data(config, suite_dir, log)
    check_fits(config, data.n_tokens)
    datas = {config.seed: data} | {s: prepare_data(config, suite_dir, log, seed=s, suite_data=data)
                                   for s in data_seeds(config, chosen)}
    sweeps = {}
    if config.lr_sweep is not None:  # with data_only: only the chosen models' sweeps, kept for later calls
        with torch_threads(threads):
            config, sweeps = sweep_suite(config, data, run["device"], suite_dir, log,
                                         only=chosen if data_only else None)
    if data_only:
        return []
    save_steps = checkpoint_steps(config.steps, log_spaced_until=config.log_spaced_until, every=config.every,
                                  per_octave=config.per_octave)
    n_params = {m.name: count_params(build_model(m, len(data.tokenizer), config.seq_len, config.seed,
                                                 data.tokenizer))[0] for m in config.models}
    _write_suite_manifest(config, suite_dir, n_params, sweeps, data.tokenizer)
    paths = []
    with torch_threads(threads):
        for spec in config.models:
            if spec.name in chosen:
                paths += _train_model(config, spec, datas, suite_dir, save_steps, run, on_step, log)
    return paths


def _chosen(config: SuiteConfig, models) -> set[str]:
    names = [m.name for m in config.models]
    if models is None:
        return set(names)
    unknown = [m for m in models if m not in names]
    if unknown or not models:
        hint = did_you_mean(unknown[0], names, n=1, form="; did you mean {}?") if len(unknown) == 1 else ""
        raise QidlabError(f"suite {config.name!r} has no model(s) {', '.join(unknown) or '(none given)'}{hint} "
                          f"(it has: {', '.join(names)})")
    return set(models)


def _resume(spec: ModelSpec, model, model_dir: Path, mhash: str, steps: int):
    """The trainer state of an interrupted run (its weights loaded into ``model`` unless it reached
    ``steps``: a finished model is not loaded), or None. A branch's state between its checkpoints
    carries the weights itself (``model``)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    state_path = model_dir / STATE_FILE
    if not state_path.is_file():
        return None
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if state["model_hash"] != mhash:
        hint = (" (it was trained at the learning rate its lr sweep chose: sweep again with `lr_sweep`)"
                if (model_dir / SWEEP_FILE).is_file() else "")
        raise QidlabError(f"{model_dir} was trained from another suite configuration{hint}; choose another `out_dir` "
                          "or delete it", params=("out_dir", "lr_sweep"))
    if int(state["step"]) >= steps:
        return state
    if "model" in state:
        model.load_state_dict(state["model"])
        return state
    folder = model_dir / f"step{int(state['step'])}"
    try:  # transformers renames some tensors when saving (GPT-NeoX: lm_head -> embed_out); it maps them back
        with quiet_transformers():
            saved = GPTNeoXForCausalLM.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                       dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise QidlabError(f"cannot resume {spec.name} from {folder}: {exc}") from None
    model.load_state_dict(saved.state_dict())
    return state


def _meta_common(config: SuiteConfig, spec: ModelSpec, data, mhash: str, device, traj: Trajectory) -> dict:
    meta = {"suite": config.name, "model": spec.name, "tokens_per_step": config.tokens_per_step,
            "seed": traj.seed, "peak_lr": spec.lr, "lr_schedule": config.schedule_dict(),
            "model_hash": mhash, "data": {k: data.info[k] for k in ("document_order_sha256", "n_tokens")}
            | {"corpus_train_sha256": data.info["key"]["corpus_train_sha256"]},
            "generator": "qidlab.train"}
    if device.type != "cpu":
        meta["device"] = {"type": device.type, "autocast": "bfloat16"}
    if spec.qat is not None:  # the weights saved are the latent ones; this says how the forward rounded them
        meta |= {"precision": spec.precision, "qat": spec.qat.to_dict(), "twin": spec.twin}
    meta |= trajectory_meta(config, spec, traj)
    return meta


def _train_model(config: SuiteConfig, spec: ModelSpec, datas: dict[int, TokenData], suite_dir: Path, save_steps,
                 run: dict, on_step, log):
    """Every trajectory of ``spec`` (``branches.py``): its main run (as ever; not with ``main_run =
    false``), its seed runs, and each run's weight averages and cooldown branches; returns every
    checkpoint folder, in that order. ``datas``: seed -> its token data (the suite's under its seed)."""
    paths = []
    for traj in trajectories(spec.name, config.seed, spec.seeds, spec.branches, spec.main_run, config.seed_data):
        data = datas[config.seed if traj.shuffled else traj.seed]  # a shuffled seed run reads the suite's
        if traj.branch is not None and spec.branch_spec.average:
            paths.append(write_average(config, spec, traj, suite_dir, data, log))
        steps = list(save_steps) if traj.branch is None else [traj.branch.end]
        if traj.branch is None:
            steps = sorted(set(steps) | {b.start for b in spec.branches})
        paths += _train_trajectory(config, spec, traj, data, suite_dir, steps, run, on_step, log)
    return paths


def _start(config: SuiteConfig, spec: ModelSpec, traj: Trajectory, suite_dir: Path, model, mhash: str):
    """(first update, trainer state or None) of a trajectory, its weights loaded into ``model``: resumed
    from its own state, or a branch from its run's checkpoint and optimizer state at the branch point."""
    import torch

    model_dir = suite_dir / traj.folder
    state = _resume(spec, model, model_dir, mhash, _end(config, traj))
    if state is not None or traj.branch is None:
        return (0 if state is None else int(state["step"])), state
    b = traj.branch.start
    kept = suite_dir / traj.base / BRANCH_STATES / f"step{b}.pt"
    if not kept.is_file():
        raise QidlabError(f"cannot branch {traj.folder}: {kept} is missing (the run {traj.base} passed step {b} "
                          "before this branch was asked for; train it again in a new `out_dir`)")
    state = torch.load(kept, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return b, state


def _end(config: SuiteConfig, traj: Trajectory) -> int:
    return config.steps if traj.branch is None else traj.branch.end


def _lr_at(config: SuiteConfig, spec: ModelSpec, traj: Trajectory):
    """``lr(step)``: the peak lr times the suite's schedule, or a branch's decay to 0."""
    if traj.branch is None:
        mult = config.schedule_dict()
        return lambda step: spec.lr * lr_multiplier(step, **mult)
    b = traj.branch
    return lambda step: spec.lr * branch_multiplier(step, start=b.start, length=b.length)


def _batch_at(config: SuiteConfig, data, traj: Trajectory):
    """``batch(step)``: consecutive sequences of the run's token file ``data`` (the suite's, or a
    seed run's own: ``batch_indices`` with the run's seed), or a shuffled seed run's own order of the
    suite's sequences (each row read through ``data.batch`` as the first pass's sequence of that number)."""
    if not traj.shuffled:
        return lambda step: data.batch(step, config.batch_size, config.seq_len, traj.seed)
    import torch

    n_seqs = data.n_tokens // config.seq_len

    def batch(step):
        rows = run_sequences(step, config.batch_size, n_seqs, traj.seed)
        return torch.cat([data.batch(int(i), 1, config.seq_len, config.seed) for i in rows])

    return batch


def _train_trajectory(config: SuiteConfig, spec: ModelSpec, traj: Trajectory, data, suite_dir: Path, save_steps,
                      run: dict, on_step, log):
    import torch

    model_dir = suite_dir / traj.folder
    mhash = trajectory_hash(config.model_hash(spec), traj)
    device = run["device"]
    end = _end(config, traj)
    model = build_model(spec, len(data.tokenizer), config.seq_len, traj.seed, data.tokenizer)
    start, state = _start(config, spec, traj, suite_dir, model, mhash)
    if start >= end:
        if log:
            log(f"{traj.folder}: already trained ({end} steps)")
        return [model_dir / f"step{s}" for s in save_steps]
    model_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = make_optimizer(model, spec.lr, config.weight_decay, device)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if log and start > (0 if traj.branch is None else traj.branch.start):
            log(f"{traj.folder}: resuming from step {start}")
    model.train()
    meta_common = _meta_common(config, spec, data, mhash, device, traj)
    lr_at = _lr_at(config, spec, traj)
    points = {b.start: b for b in spec.branches} if traj.branch is None else {}
    if start == 0:
        _save(model, opt, data.tokenizer, model_dir, 0, None, meta_common, lr_at(0))
    dynamics = _Dynamics(DynamicsLog(model_dir / DYNAMICS_FILE, traj.folder, start), model, start,
                         config.tokens_per_step)

    def checkpoint(step, loss):
        dynamics.record(step)  # before the trainer state, which marks the step as done
        extra = branch_point_meta(spec, traj, points[step]) if step in points else {}
        _save(model, opt, data.tokenizer, model_dir, step, loss, meta_common | extra, lr_at(step))

    keeper = _keeper(spec, traj, model, opt, model_dir, mhash)
    update = make_update(model, opt, device, grad_clip=config.grad_clip, compile=config.compile)
    clock = Clock(device)
    with TrainLog(model_dir / LOG_FILE, start) as train_log:
        trained, last_loss = _run_updates(config, traj, _batch_at(config, data, traj), update, start, end, lr_at,
                                          set(save_steps), train_log, clock, on_step, checkpoint, keeper)
    stats = _stats(config, spec, model, start, trained, clock, last_loss, run) | {"model": traj.folder}
    write_json(model_dir / STATS_FILE, stats)
    if log:
        mfu = f", MFU {stats['mfu']:.1%}" if stats["mfu"] is not None else ""
        log(f"{traj.folder}: {trained} steps, {stats['tokens_trained']:,} tokens, {stats['tokens_per_s'] or 0:,.0f} "
            f"tokens/s{mfu} ({stats['device']}, {stats['threads']} threads)")
    return [model_dir / f"step{s}" for s in save_steps]


def _keeper(spec: ModelSpec, traj: Trajectory, model, opt, model_dir: Path, mhash: str):
    """``(steps, keep)``: ``keep(step)`` is called after the updates that reach ``steps``, before any
    checkpoint of that step. A run keeps its weights at the averaged steps
    (``_lawa/step<N>.safetensors``) and its weights, optimizer state and RNG at branch points
    (``_branches/step<N>.pt``), which its branches start from; a branch keeps its whole state (weights
    included) at a few steps between its start and end, to resume from."""
    if traj.branch is not None:
        b = traj.branch
        every = max(1, math.ceil(b.length / RESUME_POINTS))
        return set(range(b.start + every, b.end, every)), lambda step: _write_state(model_dir / STATE_FILE, step,
                                                                                   mhash, opt, model)
    averaged = {s for b in spec.branches for s in b.average_steps}
    points = {b.start for b in spec.branches}

    def keep(step):
        if step in averaged:
            write_snapshot(model, model_dir / SNAPSHOTS / f"step{step}.safetensors")
        if step in points:
            _write_state(model_dir / BRANCH_STATES / f"step{step}.pt", step, mhash, opt, model)

    return averaged | points, keep


def _write_state(path: Path, step: int, mhash: str, opt, model) -> None:
    import torch

    state = {"step": step, "model_hash": mhash, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path, "wb") as fh:
        torch.save(state, fh)


def _stats(config: SuiteConfig, spec: ModelSpec, model, start: int, trained: int, clock: Clock, last_loss,
           run: dict) -> dict:
    """``train-stats.json``: speed of this call's updates (checkpointing and logging not counted); tokens/s
    and MFU leave out the call's first update (CUDA start-up, compilation), timed as ``seconds_first_update``."""
    import torch

    device = run["device"]
    tokens = trained * config.tokens_per_step
    first, steady = clock.first, clock.seconds - clock.first  # steady: every update after the first
    tokens_per_s = (trained - 1) * config.tokens_per_step / steady if trained > 1 and steady > 0 else None
    fpt = flops_per_token(count_params(model)[0], model.config.vocab_size, spec.hidden, spec.layers, config.seq_len)
    peak = peak_flops(device_name(device), run["peak_tflops"]) if device.type == "cuda" else None
    return {"model": spec.name, "resumed_from": start, "steps_trained": trained, "tokens_trained": tokens,
            "seconds_in_updates": clock.seconds, "seconds_first_update": first, "tokens_per_s": tokens_per_s,
            "threads": torch.get_num_threads(), "final_loss": last_loss, "device": device_name(device),
            "autocast": "bfloat16" if device.type == "cuda" else None, "compile": config.compile,
            "flops_per_token": fpt, "peak_tflops": None if peak is None else peak / 1e12,
            "mfu": mfu(tokens_per_s, fpt, peak)}


class _Dynamics:
    """Weight changes of the blocks' linears between saved checkpoints (``qidlab.train.dynamics``)."""

    def __init__(self, log: DynamicsLog, model, step: int, tokens_per_step: int):
        from qidlab.quantize.model import select_linears

        self.log, self.tokens_per_step = log, tokens_per_step
        self.linears = select_linears(model, None)  # name -> nn.Linear inside the decoder blocks
        self.prev, self.prev_step = self._weights(), step

    def _weights(self) -> dict:
        return {n: m.weight.detach().float().cpu().numpy().copy() for n, m in self.linears.items()}

    def record(self, step: int) -> None:
        now = self._weights()
        summary = change_summary([now[n] - self.prev[n] for n in now])
        self.log.add({"step": step, "tokens": step * self.tokens_per_step, "prev_step": self.prev_step, **summary})
        self.prev, self.prev_step = now, step


class _PendingRows:
    """Log rows whose loss is still a device tensor: read back (one host sync) only when written."""

    def __init__(self, train_log: TrainLog, limit: int = 64):
        self.log, self.limit, self.rows = train_log, limit, []

    def add(self, step: int, tokens: int, loss, lr: float) -> None:
        self.rows.append((step, tokens, loss, lr))
        if len(self.rows) >= self.limit:
            self.write()

    def write(self) -> None:
        for step, tokens, loss, lr in self.rows:
            self.log.append(step, tokens, float(loss), lr)
        self.rows = []
        self.log.flush()


def _run_updates(config: SuiteConfig, traj: Trajectory, batch_at, update, start: int, end: int, lr_at,
                 save_steps: set, train_log: TrainLog, clock: Clock, on_step, checkpoint,
                 keeper) -> tuple[int, float | None]:
    """Updates ``start`` .. ``end - 1``: a log row at every ``log_every``-th and every checkpoint step,
    ``keep(step)`` after the updates of ``keeper = (steps, keep)``, then ``checkpoint(step, loss)`` at
    checkpoint steps; returns (updates done, last loss). ``clock`` times the updates alone."""
    keep_steps, keep = keeper
    pending = _PendingRows(train_log)
    trained, loss = 0, None
    window, n_window = None, 0  # summed losses (a device tensor) since the last log row
    clock.start()
    try:
        for step in range(start, end):
            lr = lr_at(step)
            batch = batch_at(step)  # (B, T), on the CPU
            loss = update(batch, lr)
            trained += 1
            if trained == 1:  # the first update of a call (CUDA start-up, torch.compile) is timed apart
                clock.stop()
                clock.first = clock.seconds
                clock.start()
            window, n_window = (loss.double() if window is None else window + loss), n_window + 1
            if on_step is not None:
                on_step({"model": traj.folder, "step": step, "loss": float(loss), "lr": lr, "batch": batch})
            done = step + 1
            if done % config.log_every == 0 or done in save_steps or done == end:
                pending.add(done, done * config.tokens_per_step, window / n_window, lr)
                window, n_window = None, 0
            if done in keep_steps:
                clock.stop()
                pending.write()  # before the state it may write, as at checkpoints
                keep(done)
                clock.start()
            if done in save_steps:
                clock.stop()
                pending.write()  # before the trainer state: a resume never finds rows missing
                checkpoint(done, float(loss))
                clock.start()
    except BaseException:
        with contextlib.suppress(Exception):
            pending.write()  # what was computed; a resume drops the rows after its checkpoint
        raise
    clock.stop()
    pending.write()
    return trained, None if loss is None else float(loss)


def _save(model, opt, tokenizer, model_dir: Path, step: int, loss, meta_common: dict, lr: float) -> None:
    """Write ``step<step>/`` (atomically, by renaming a finished temporary folder), then the trainer state."""
    import torch

    with building(model_dir / f"step{step}") as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        meta = {"tokens": step * meta_common["tokens_per_step"], "step": step,
                "lr": lr, "train_loss": loss, **meta_common}
        (tmp / "qidlab.json").write_text(json.dumps(meta, indent=1) + "\n")
    state = {"step": step, "model_hash": meta_common["model_hash"], "optimizer": opt.state_dict(),
             "torch_rng": torch.get_rng_state()}
    with open_atomic(model_dir / STATE_FILE, "wb") as fh:
        torch.save(state, fh)
