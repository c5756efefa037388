"""``train_suite``: train every model of a suite file on the shared data, saving Pythia-style checkpoints.

Layout written under ``<out>/<suite>/``::

    qidlab-suite.toml            suite name, tokens_per_step, per-model sizes (qidlab.checkpoints.discover);
                                 low-bit models also precision = "...", twin = "...", qat = { bits, a_bits, ... }
    _data/                       tokenizer, token file, data.json (qidlab.train.data)
    <model>/step<N>/             config.json, model.safetensors, tokenizer, qidlab.json
    <model>/trainer_state.pt     the state at the newest saved step: optimizer, torch RNG, step, config hash
                                 (tensors and plain types only: torch.load(weights_only=True) reads it)
    <model>/train-log.csv        step,tokens,loss,lr: the training loss (nats/token) as it went (records.py)
    <model>/weight-dynamics.json weight changes between saved checkpoints (Ouyang et al. Fig. 12; dynamics.py)
    <model>/train-stats.json     steps and tokens trained, seconds and tokens/s of the last call that trained
                                 (not deterministic; a call that finds the model finished leaves it)

``qidlab.json`` of ``step<N>``: ``tokens`` (= N * batch_size * seq_len, D), ``step``,
``tokens_per_step``, ``seed``, ``peak_lr``, ``lr`` (what update N uses), ``lr_schedule``,
``train_loss`` (of update N - 1; null at step 0), the data's hashes and the model's config hash; for a
low-bit model also ``precision``, ``qat`` (``QATSpec.to_dict()``) and ``twin``: its weights are the latent
full-precision ones, which ``lowbit.apply_qat`` rounds in the forward pass.

Determinism: the weights are initialised after ``torch.manual_seed(seed)``; the data order is a
pure function of the seed (``qidlab.train.data``); on CPU with a fixed thread count the same suite
file gives bit-identical weights. Resume: a model whose ``trainer_state.pt`` is older than the last
step restarts from that checkpoint (weights from its safetensors, optimizer state and RNG from the
state file) and reaches the same weights as an uninterrupted run; a finished model is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from qidlab.errors import QidlabError
from qidlab.train.config import ModelSpec, SuiteConfig, check_fits, load_suite_config
from qidlab.train.data import prepare_data
from qidlab.train.dynamics import change_summary
from qidlab.train.records import DYNAMICS_FILE, LOG_FILE, DynamicsLog, TrainLog
from qidlab.train.schedule import checkpoint_steps, lr_multiplier

STATE_FILE = "trainer_state.pt"
STATS_FILE = "train-stats.json"
SUITE_MANIFEST = "qidlab-suite.toml"
BETAS = (0.9, 0.95)  # AdamW, as Pythia
EPS = 1e-8


@contextlib.contextmanager
def _threads(n: int | None):
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _no_hf_progress_bars():
    """transformers draws a progress bar per save and load of even a tiny model: noise in a training log."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def build_model(spec: ModelSpec, vocab_size: int, seq_len: int, seed: int, tokenizer):
    """A freshly initialised ``GPTNeoXForCausalLM`` (fp32, no dropout, untied head), after ``manual_seed(seed)``;
    a low-bit ``spec`` gets its fake-quantized forward (``lowbit.apply_qat``)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                        max_position_embeddings=seq_len, hidden_dropout=0.0, attention_dropout=0.0,
                        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg).float()
    if spec.qat is not None:
        from qidlab.train.lowbit import apply_qat

        apply_qat(model, spec.qat)
    return model


def _optimizer(model, spec: ModelSpec, weight_decay: float):
    """AdamW; weight decay on matrices only (not biases and LayerNorm gains), as nanoGPT."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=BETAS, eps=EPS)


def _write_suite_manifest(config: SuiteConfig, suite_dir: Path, n_params: dict) -> None:
    lines = [f"suite = {json.dumps(config.name)}", f"tokens_per_step = {config.tokens_per_step}", ""]
    for m in config.models:
        lines += [f"[models.{json.dumps(m.name)}]", f"hidden = {m.hidden}", f"layers = {m.layers}",
                  f"heads = {m.heads}", f"intermediate = {m.intermediate}", f"lr = {m.lr!r}",
                  f"n_params = {n_params[m.name]}"]
        if m.qat is not None:
            columns = ", ".join(f"{k} = {v!r}" for k, v in m.qat.columns().items())
            lines += [f"precision = {json.dumps(m.precision)}", f"qat = {{ {columns} }}"]
        if m.twin is not None:
            lines += [f"twin = {json.dumps(m.twin)}"]
        lines += [""]
    (suite_dir / SUITE_MANIFEST).write_text("\n".join(lines))


def train_suite(config_path, out_dir, *, threads: int | None = None, on_step=None, log=None) -> list[Path]:
    """Train (or finish training) every model of the suite file; return every ``step<N>`` folder, in order.

    ``threads``: torch intra-op threads during the call (restored after); ``None`` keeps the current
    setting. ``on_step(event)`` is called after each update with a dict ``model``, ``step`` (the
    update's index: it took the model from step<N> to step<N+1>), ``loss``, ``lr`` and ``batch``
    (the (batch_size, seq_len) token ids); an exception it raises stops the run, which a later call
    resumes. ``log(line)`` receives progress lines (tokens/s at the end of each model).
    """
    config = config_path if isinstance(config_path, SuiteConfig) else load_suite_config(config_path)
    suite_dir = Path(out_dir).expanduser() / config.name
    suite_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, suite_dir, log)
    check_fits(config, data.n_tokens)
    save_steps = checkpoint_steps(config.steps, log_spaced_until=config.log_spaced_until, every=config.every)
    from qidlab.checkpoints.params import count_params

    n_params = {m.name: count_params(build_model(m, len(data.tokenizer), config.seq_len, config.seed,
                                                 data.tokenizer))[0] for m in config.models}
    _write_suite_manifest(config, suite_dir, n_params)
    paths = []
    with _threads(threads):
        for spec in config.models:
            paths += _train_model(config, spec, data, suite_dir, save_steps, on_step, log)
    return paths


def _train_model(config: SuiteConfig, spec: ModelSpec, data, suite_dir: Path, save_steps, on_step, log):
    import torch
    from transformers import GPTNeoXForCausalLM

    model_dir = suite_dir / spec.name
    state_path = model_dir / STATE_FILE
    mhash = config.model_hash(spec)
    model = build_model(spec, len(data.tokenizer), config.seq_len, config.seed, data.tokenizer)
    start, state = 0, None
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["model_hash"] != mhash:
            raise QidlabError(f"{model_dir} was trained from another suite configuration; choose another --out "
                              "or delete it")
        start = int(state["step"])
        if start >= config.steps:
            if log:
                log(f"{spec.name}: already trained ({config.steps} steps)")
            return [model_dir / f"step{s}" for s in save_steps]
        folder = model_dir / f"step{start}"
        try:  # transformers renames some tensors when saving (GPT-NeoX: lm_head -> embed_out); it maps them back
            with _no_hf_progress_bars():
                saved = GPTNeoXForCausalLM.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                           dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise QidlabError(f"cannot resume {spec.name} from {folder}: {exc}") from None
        model.load_state_dict(saved.state_dict())
        del saved
    opt = _optimizer(model, spec, config.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if log:
            log(f"{spec.name}: resuming from step {start}")
    model.train()
    meta_common = {"suite": config.name, "model": spec.name, "tokens_per_step": config.tokens_per_step,
                   "seed": config.seed, "peak_lr": spec.lr, "lr_schedule": config.schedule_dict(),
                   "model_hash": mhash, "data": {k: data.info[k] for k in ("document_order_sha256", "n_tokens")}
                   | {"corpus_train_sha256": data.info["key"]["corpus_train_sha256"]},
                   "generator": "qidlab.train"}
    if spec.qat is not None:  # the weights saved are the latent ones; this says how the forward rounded them
        meta_common |= {"precision": spec.precision, "qat": spec.qat.to_dict(), "twin": spec.twin}
    mult = {"steps": config.steps, "schedule": config.schedule, "warmup": config.warmup,
            "min_lr_ratio": config.min_lr_ratio, "decay_fraction": config.decay_fraction}
    if start == 0:
        _save(model, opt, data.tokenizer, model_dir, 0, None, meta_common, spec, mult)
    dynamics = _Dynamics(DynamicsLog(model_dir / DYNAMICS_FILE, spec.name, start), model, start,
                         config.tokens_per_step)

    def checkpoint(step, loss):
        dynamics.record(step)  # before the trainer state, which marks the step as done
        _save(model, opt, data.tokenizer, model_dir, step, loss, meta_common, spec, mult)

    with TrainLog(model_dir / LOG_FILE, start) as train_log:
        trained, seconds, last_loss = _run_updates(config, spec, data, model, opt, start, mult, set(save_steps),
                                                   train_log, on_step, checkpoint)
    tokens = trained * config.tokens_per_step
    stats = {"model": spec.name, "resumed_from": start, "steps_trained": trained, "tokens_trained": tokens,
             "seconds_in_updates": seconds, "tokens_per_s": tokens / seconds if seconds else None,
             "threads": torch.get_num_threads(), "final_loss": last_loss}
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / STATS_FILE).write_text(json.dumps(stats, indent=1) + "\n")
    if log:
        log(f"{spec.name}: {trained} steps, {tokens:,} tokens, {stats['tokens_per_s']:,.0f} tokens/s "
            f"({stats['threads']} threads)")
    return [model_dir / f"step{s}" for s in save_steps]


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


def _run_updates(config: SuiteConfig, spec: ModelSpec, data, model, opt, start: int, mult: dict, save_steps: set,
                 train_log: TrainLog, on_step, save) -> tuple[int, float, float | None]:
    """Updates ``start`` .. ``steps - 1``, a log row at every ``log_every``-th and at every checkpoint step,
    ``save(step, loss)`` at checkpoint steps; returns (updates done, seconds in updates, last loss)."""
    import torch

    trained, seconds, last_loss = 0, 0.0, None
    window, n_window = 0.0, 0  # summed losses since the last log row
    for step in range(start, config.steps):
        lr = spec.lr * lr_multiplier(step, **mult)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = data.batch(step, config.batch_size, config.seq_len, config.seed)  # (B, T)
        t0 = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        seconds += time.perf_counter() - t0
        trained += 1
        last_loss = float(loss.detach())
        window, n_window = window + last_loss, n_window + 1
        if on_step is not None:
            on_step({"model": spec.name, "step": step, "loss": last_loss, "lr": lr, "batch": batch})
        done = step + 1
        if done % config.log_every == 0 or done in save_steps or done == config.steps:
            train_log.append(done, done * config.tokens_per_step, window / n_window, lr)
            window, n_window = 0.0, 0
        if done in save_steps:
            train_log.flush()  # before the trainer state: a resume never finds rows missing
            save(done, last_loss)
    return trained, seconds, last_loss


def _save(model, opt, tokenizer, model_dir: Path, step: int, loss, meta_common: dict, spec, mult) -> None:
    """Write ``step<step>/`` (atomically, by renaming a finished temporary folder), then the trainer state."""
    import torch

    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / f"step{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step{step}-", dir=model_dir))
    try:
        with _no_hf_progress_bars():
            model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        meta = {"tokens": step * meta_common["tokens_per_step"], "step": step,
                "lr": spec.lr * lr_multiplier(step, **mult), "train_loss": loss, **meta_common}
        (tmp / "qidlab.json").write_text(json.dumps(meta, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state = {"step": step, "model_hash": meta_common["model_hash"], "optimizer": opt.state_dict(),
             "torch_rng": torch.get_rng_state()}
    tmp_state = model_dir / f".{STATE_FILE}.tmp"
    torch.save(state, tmp_state)
    os.replace(tmp_state, model_dir / STATE_FILE)
