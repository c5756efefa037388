"""Running a study: checkpoints x quantization configs x eval sets into the store.

The unit of work sent to an executor is one checkpoint (`measure_checkpoint`): it loads the
model once, scores the 16-bit model once per eval set, then for each configuration restores the
16-bit weights, quantizes, and scores again. It never touches the store: it yields results, and
the driver (`run_study`) writes each one in its own transaction. A job already in the store is
skipped, so after a crash the same command finishes the study with no lost and no duplicated rows.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import documents, provenance, quantize
from ..checkpoints import check_checkpoint, discover, hub, load_checkpoint
from ..documents import CALIBRATION_SAMPLER, CalibrationSpec, calibration_identity
from ..errors import QidlabError, did_you_mean
from ..evaluate import load_eval_set, paired_bootstrap_qid, score
from ..evaluate.tasks import check_tasks
from ..files import building
from ..hubdata import DatasetSource, NotCached
from ..output import dump_json
from ..quantize.config import QuantConfig, Reference16, config_from_dict
from ..quantize.formats import save_quantized
from ..store import Measurement, Store, config_hash, stored_jobs, stored_task_jobs
from ..torchenv import require_measure
from .external import ExternalConfig, check_paired, paired
from .progress import Progress
from .ray_executor import run_on_ray
from .slurm_executor import SlurmExecutor
from .study import Study, job_label
from .tasks import (
    TaskResult,
    reference_scores,
    task_identity,
    task_measurement,
    task_results,
)


@dataclass
class Result:
    """One measured (config, eval set) of a checkpoint, or the error that stopped it."""

    config: QuantConfig
    eval_set: str
    loss16: float = float("nan")
    loss: float = float("nan")
    qid: float = float("nan")
    qid_ci: tuple[float, float] | None = None
    n_tokens: int = 0
    docs: tuple = ()
    error: str | None = None
    quantization: dict | None = None  # what the quantizer reported (shared-Hessian GPTQ: damp, fallback)


@dataclass
class CheckpointInfo:
    """What loading a checkpoint tells: N (non-embedding), total parameters, D, content hash."""

    n_params: int
    n_params_total: int
    tokens: int | None
    content_hash: str
    device: str | None = None  # the hardware that measured (provenance.device_name)


@dataclass
class Summary:
    measured: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    task_results: int = 0  # [[tasks]] metrics written (task_results rows)


def measurement_config(cfg: QuantConfig | dict[str, Any], study: Study) -> dict[str, Any]:
    """Everything that defines a measurement besides checkpoint and eval set (hashed for resume).
    ``cfg``: a config, or a method's config as ``to_dict()`` writes it."""
    cfg = cfg if isinstance(cfg, QuantConfig) else config_from_dict(cfg)
    scoring = scoring_identity(study.scoring)
    if "reference_tokenizer" in scoring:  # the file's content, not where it lies
        scoring["reference_tokenizer"] = _file_identity(study.path.parent / scoring["reference_tokenizer"])
    out = {"quantization": cfg.to_dict(), "scoring": scoring}
    if _blockwise(cfg) and study.hessian_precision != "float32":  # the default adds nothing: old rows match
        out["hessian_precision"] = study.hessian_precision
    if cfg.needs_calibration and study.calibration is not None:
        c = study.calibration
        out["calibration"] = {"content_hash": calibration_identity(c), "n_samples": c.n_samples,
                              "seq_len": c.seq_len, "seed": c.seed, "sampler": CALIBRATION_SAMPLER}
    return out


#: Scoring options that, set to these values, score what a study without them scores: left out of
#: the identity, so stores measured before the options existed still match.
SCORING_DEFAULTS = {"prefix": "bos", "windows": "sliding"}


def scoring_identity(scoring: dict[str, Any]) -> dict[str, Any]:
    """The ``[scoring]`` options as a measurement's identity holds them: as written, less
    ``SCORING_DEFAULTS``. (``prefix = "bos"`` is what an unset prefix scores wherever it can run:
    the tokenizer has a BOS. ``"eos"`` and ``"none"`` enter even where they happen to score the same,
    BOS = EOS or no BOS: a re-measurement at worst, never two scorings under one identity.)"""
    return {k: v for k, v in scoring.items() if SCORING_DEFAULTS.get(k, object()) != v}


def score_options(scoring: dict[str, Any], tokenizer) -> dict[str, Any]:
    """``prefix`` and ``windows`` for ``evaluate.score`` from the ``[scoring]`` options. An unset
    prefix is BOS when the tokenizer has one, else ``"none"`` (the first token unscored), as qidlab
    scored before the option existed, so a study's numbers keep their identity; lm-evaluation-harness
    prefixes EOS instead: ``prefix = "eos"``."""
    prefix = scoring.get("prefix")
    if prefix is None:
        prefix = "bos" if getattr(tokenizer, "bos_token_id", None) is not None else "none"
    return {"prefix": prefix, "windows": scoring.get("windows", "sliding")}


def _file_identity(path: Path) -> str:
    if not Path(path).is_file():
        raise QidlabError(f"reference tokenizer does not exist: {path}")
    return "sha256:" + provenance.file_sha256(path)


#: Calibration windows per (tokenizer, spec, source file version), for the length of the process.
_CALIBRATION_CACHE: dict = {}


def calibration_ids(tokenizer, spec: CalibrationSpec):
    """``qidlab.documents.calibration_ids`` through this process's cache: the checkpoints of one
    suite (same tokenizer, same calibration) share one draw."""
    return documents.calibration_ids(tokenizer, spec, cache=_CALIBRATION_CACHE)


def _blockwise(cfg: QuantConfig) -> bool:
    """Shared-Hessian GPTQ: measured block by block, every bit width at once (``_shared_gptq``)."""
    return getattr(cfg, "shared_hessian", False)


def _shared_gptq(model, cfg: QuantConfig, configs: list[QuantConfig], calib, study: Study, cache: dict):
    """Shared-Hessian GPTQ config ``cfg`` applied to ``model`` (which holds its 16-bit weights);
    returns what the quantizer reported (``{"damp": {layer: relative damping}, "fallback": {layer:
    why}}``). The first call for a config runs ``gptq_shared_blockwise`` once for every config of
    ``configs`` that differs from it only in ``bits`` (its ``sibling_key``): the calibration windows
    pass the decoder blocks one at a time, each block's Hessians serve every bit width in one column
    pass, and the weights wait in host memory; later calls take theirs from ``cache``."""
    key = cfg.sibling_key()
    if key not in cache:
        bits = sorted({c.bits for c in configs if c.sibling_key() == key})
        cache[key] = quantize.gptq_shared_blockwise(model, cfg, bits, calib, precision=study.hessian_precision,
                                                    on_failure=study.on_gptq_failure)
    done = cache[key]
    quantize.restore_weights(model, done.weights.pop(cfg.bits))
    return {"damp": dict(done.damp), "fallback": dict(done.fallback)}


def measure_checkpoint(path: str, eval_sets: list, configs: list[QuantConfig], study: Study) -> Iterator:
    """Yield a ``CheckpointInfo``, then one ``Result`` per (config, eval set).

    ``configs`` holds only the jobs still to do; the 16-bit reference (``Reference16``, which rounds
    no weights) may be among them. A failing configuration yields Results with ``error`` set; the
    rest go on."""
    import torch

    device = study.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = _local_folder(path, study)
    ckpt = load_checkpoint(folder, device=device, allow_pickle=study.allow_pickle, pickle_hint=STUDY_PICKLE_HINT)
    yield CheckpointInfo(n_params=ckpt.n_params, n_params_total=ckpt.n_params_total, tokens=ckpt.tokens,
                         content_hash=ckpt.content_hash, device=provenance.device_name(device))
    model, tok = ckpt.model, ckpt.tokenizer
    scoring = {k: v for k, v in study.scoring.items() if k in ("max_length", "stride", "batch_size")}
    scoring.update(score_options(study.scoring, tok))
    if "reference_tokenizer" in study.scoring:
        scoring["reference_tokenizer"] = str(study.path.parent / study.scoring["reference_tokenizer"])
    unit = study.scoring.get("unit", "nats_per_token")
    n_boot = int(study.scoring.get("bootstrap", 1000))
    state16 = quantize.snapshot_state(model)  # host memory (pinned on CUDA), not a second device copy
    ref_scores = {es.name: score(model, tok, es, **scoring) for es in eval_sets}
    ref_tasks = reference_scores(model, tok, study.tasks) if study.tasks else {}
    calib = None
    siblings: dict = {}  # shared-Hessian GPTQ: the weights of every bit width of a config, from one pass
    for cfg in configs:
        if not cfg.rounds_weights:
            for es in eval_sets:
                s = ref_scores[es.name]
                loss16 = s.loss(unit)
                yield Result(cfg, es.name, loss16, loss16, 0.0, (0.0, 0.0), int(s.n_tokens.sum()),
                             (s.nll_sum, s.n_tokens, s.n_bytes))
            yield from task_results(cfg, model, tok, study.tasks, ref_tasks)
            continue
        try:
            if cfg.needs_calibration:
                if study.calibration is None:
                    raise QidlabError(f"method {cfg.method} needs a [calibration] section in the study")
                calib = calib if calib is not None else calibration_ids(tok, study.calibration)
            if isinstance(cfg, ExternalConfig):
                yield from _measure_external(cfg, tok, eval_sets, ref_scores, scoring, unit, n_boot, device)
                continue
            model.load_state_dict(state16)
            report = None
            if _blockwise(cfg):
                report = _shared_gptq(model, cfg, configs, calib, study, siblings)
            else:
                done = quantize.quantize_(model, cfg, calibration=calib if cfg.needs_calibration else None)
                report = _keep(model, tok, done, cfg, path, study)
            for es in eval_sets:
                sq = score(model, tok, es, **scoring)
                s16 = ref_scores[es.name]
                qid, lo, hi = paired_bootstrap_qid(s16, sq, n_boot=n_boot, seed=0, unit=unit)
                yield Result(cfg, es.name, s16.loss(unit), sq.loss(unit), qid, (lo, hi), int(sq.n_tokens.sum()),
                             (sq.nll_sum, sq.n_tokens, sq.n_bytes), quantization=report)
        except Exception as exc:  # one failing job must not stop the others
            detail = str(exc) if isinstance(exc, QidlabError) else traceback.format_exc(limit=3)
            for es in eval_sets:
                yield Result(cfg, es.name, error=f"{type(exc).__name__}: {detail}")
            continue
        yield from task_results(cfg, model, tok, study.tasks, ref_tasks)  # on the quantized weights
    with torch.no_grad():
        model.load_state_dict(state16)
    if study.hub is not None and not study.hub.keep and path.startswith(hub.HUB_PREFIX):
        del ckpt, model, state16
        hub.forget(folder)


def _measure_external(cfg: ExternalConfig, tok, eval_sets, ref_scores, scoring, unit, n_boot, device) -> Iterator:
    """Results of a folder quantized elsewhere, scored with the 16-bit checkpoint's tokenizer against its scores."""
    ext = load_checkpoint(cfg.path, device=device)
    rows = ext.model.get_input_embeddings().weight.shape[0]
    if tok is not None and len(tok) > rows:
        raise QidlabError(f"{cfg.path}: its embedding has {rows} rows, fewer than the 16-bit checkpoint's "
                          f"{len(tok)} tokens: not made from that checkpoint")
    report = {"tool": cfg.tool, "path": cfg.path, "n_params_loaded": ext.n_params}
    for es in eval_sets:
        sq = score(ext.model, tok, es, **scoring)
        s16 = ref_scores[es.name]
        qid, lo, hi = paired_bootstrap_qid(s16, sq, n_boot=n_boot, seed=0, unit=unit)
        yield Result(cfg, es.name, s16.loss(unit), sq.loss(unit), qid, (lo, hi), int(sq.n_tokens.sum()),
                     (sq.nll_sum, sq.n_tokens, sq.n_bytes), quantization=report)
    del ext


def _keep(model, tok, report, cfg: QuantConfig, path: str, study: Study) -> dict | None:
    """``[output]``: save the quantized model as ``<dir>/<model>/step<N>/<job label>/`` in the study's
    format (Hub checkpoints: ``<dir>/<repo name>/<revision>/<job label>/``; a folder already there is
    kept: a resumed sweep writes nothing twice). A model the format cannot hold (AWQ scales with no
    layer to fold into) is measured all the same: ``{"output": "not kept: why"}`` goes into the row's
    quantization report; None otherwise."""
    if study.output is None:
        return None
    if path.startswith(hub.HUB_PREFIX):
        repo, revision = hub.parse_location(path)
        model_dir, step_dir = repo.rsplit("/", 1)[-1], revision
    else:
        model_dir, step_dir = Path(path).parent.name, Path(path).name
    out = study.output.dir / model_dir / step_dir / _label(cfg, study)
    if out.exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with building(out) as tmp:
            save_quantized(model, report, tmp, study.output.format)
            if tok is not None:
                tok.save_pretrained(tmp)
            doc = {"format": study.output.format, "source": path, "quantization": report.to_dict()}
            (tmp / "qidlab-quantization.json").write_text(dump_json(doc) + "\n")
    except QidlabError as exc:
        return {"output": f"not kept: {exc}"}
    return None


def _local_folder(path: str, study: Study) -> str:
    """The checkpoint folder of ``path``: a Hub location (``hf://REPO@REVISION``) is resolved into the
    Hugging Face cache (downloaded when missing), a folder is itself."""
    if not path.startswith(hub.HUB_PREFIX):
        return path
    repo, revision = hub.parse_location(path)
    return str(hub.resolve(repo, revision, allow_pickle=study.allow_pickle))


def study_refs(study: Study, *, check: bool = True) -> list:
    """The study's checkpoints, filtered by its models and steps, coarse to fine per model. Hub
    checkpoints are checked first unless ``check`` is false (each repo and revision must be
    available: ``hub.check_available``)."""
    def chosen(r) -> bool:  # a Hub checkpoint may be chosen by its repo id (its suite) too
        names = (r.model, r.suite) if study.hub is not None else (r.model,)
        return ((study.models is None or any(n in study.models for n in names))
                and (study.steps is None or r.step in study.steps))

    if study.hub is not None:
        refs = [r for r in study.hub.refs() if chosen(r)]
        if check:
            refs = hub.check_available(refs, allow_pickle=study.allow_pickle)
    else:
        found = discover(study.checkpoint_root)
        refs = [r for r in found if chosen(r)]
        _name_unknown_models(study, found)
    if not refs:
        raise QidlabError(f"no checkpoints under {study.checkpoint_root or 'the study repos'} match the study")
    return coarse_to_fine(refs)


def _name_unknown_models(study: Study, found: list) -> None:
    """``QidlabError`` naming the study's (or ``--models``') models that the suite folder lacks."""
    have = sorted({r.model for r in found})
    missing = [m for m in study.models or () if m not in have]
    if missing:
        hint = did_you_mean(missing[0], have) if len(missing) == 1 else ""
        raise QidlabError(f"no model(s) {', '.join(missing)} under {study.checkpoint_root}"
                          f"{hint or ' (it has: ' + ', '.join(have) + ')'}")


#: How a study allows pickled weights (the refusal of a pickle-only checkpoint says it).
STUDY_PICKLE_HINT = "set `[checkpoints] allow_pickle = true` in the study file"


def check_local_checkpoints(refs: list, study: Study) -> None:
    """Check each local checkpoint folder before anything is measured or written (``config.json``,
    weight files, pickle policy: ``checkpoints.check_checkpoint``): a corrupt or refused checkpoint
    is one error up front, not a failed job after the others have run."""
    for ref in refs:
        if not str(ref.location).startswith(hub.HUB_PREFIX):
            check_checkpoint(ref.location, allow_pickle=study.allow_pickle, pickle_hint=STUDY_PICKLE_HINT)


def run_study(study: Study, *, executor: str | SlurmExecutor = "local", address: str | None = None,
              progress=True) -> Summary:
    """Measure every job of ``study`` that the store lacks; return counts and failures."""
    if executor == "local":  # Ray and Slurm measure on their workers
        require_measure("measuring (a local sweep)")
    refs = study_refs(study)
    check_tasks(study.tasks)
    check_paired(study.quantized, refs)
    eval_sets, configs, hashes = _jobs(study)
    check_local_checkpoints(refs, study)
    summary = Summary()
    with Store(study.store) as store:
        es_ids = {es.name: store.eval_set_id(name=es.name, content_hash=es.content_hash, n_docs=len(es.docs),
                                             source=_eval_source(spec))
                  for es, spec in zip(eval_sets, study.eval_sets)}
        plan = []
        for ref in refs:
            mine, mine_hashes = _with_paired(ref, configs, hashes, study)
            task_hashes = _task_hashes(configs, study)  # [[tasks]] run on the study's own configs
            if task_hashes:
                task_hashes += [[] for _ in mine[len(configs):]]
            todo = _todo(store, ref, mine, mine_hashes, es_ids, task_hashes)
            summary.skipped += (len(mine) - len(todo)) * len(eval_sets)
            if todo:
                plan.append((ref, todo))
        meter = Progress(plan, len(eval_sets), enabled=progress)
        streams = _execute(plan, eval_sets, study, executor, address)
        try:
            for ref, stream in streams:
                _write(store, ref, stream, study, es_ids, summary, meter)
                meter.checkpoint_done(ref)
        finally:
            meter.close()
    return summary


def _eval_source(spec) -> dict:
    """What the store records as an eval set's source: its path (or data set), n_docs, seed."""
    where = spec.source.describe() if isinstance(spec.source, DatasetSource) else {"path": str(spec.source)}
    if spec.text_field != "text":
        where["text_field"] = spec.text_field
    return {**where, "n_docs": spec.n_docs, "seed": spec.seed}


@dataclass
class PlannedCheckpoint:
    """One checkpoint of a dry run: what is stored, what is left, what must be downloaded (bytes)."""

    suite: str
    model: str
    step: int
    tokens: int | None  # D, training tokens seen
    location: str  # folder or hf://REPO@REVISION
    stored: int  # measurements (config x eval set) already in the store
    todo: int  # measurements left
    cached: bool | None = None  # Hub: whether the cache holds the revision (None: a local folder)
    download_bytes: int | None = None  # Hub: bytes on disk when cached, to download when not (None: unknown offline)
    tasks_stored: int = 0  # [[tasks]] runs (config x task) whose rows the store holds
    tasks_todo: int = 0  # [[tasks]] runs left (the 16-bit model and each of the study's configs)


@dataclass
class DryRun:
    """``plan_study``: checkpoints x configs x eval sets, and what of it the store holds."""

    checkpoints: list[PlannedCheckpoint]
    configs: list[str]  # progress labels, the 16-bit reference first
    eval_sets: list[str]
    store: str
    offline: bool = False
    unavailable: list[str] = field(default_factory=list)  # inputs not to be had here (offline, not cached)
    tasks: list[str] = field(default_factory=list)  # the [[tasks]] that would run, described

    @property
    def total(self) -> int:  # per checkpoint: [[quantized]] folders pair with one checkpoint each
        return sum(c.stored + c.todo for c in self.checkpoints)


def plan_study(study: Study) -> DryRun:
    """What ``run_study(study)`` would measure, writing nothing (no store is created): every checkpoint
    x config (16-bit + the study's) x eval set, how many the store already holds, and for Hub
    checkpoints whether the cache holds them and their size (bytes; unknown offline when not cached).
    Inputs that cannot be had here (offline: a data set not cached, a reference tokenizer file not yet
    fetched) are listed in ``unavailable`` instead of stopping the plan; the measurements that depend on
    them count as not stored. ``[[tasks]]`` are checked as the sweep checks them (lm_eval installed, every
    task known) and listed, with the runs (config x task) stored and left per checkpoint."""
    refs = study_refs(study, check=not (study.hub is not None and hub.is_offline()))
    check_tasks(study.tasks)
    unavailable: list[str] = []
    eval_sets = [_planned(lambda e=e: _eval_set(e), unavailable) for e in study.eval_sets]
    configs = [Reference16(), *study.methods]
    if study.calibration is not None and any(c.needs_calibration for c in configs):
        _planned(lambda: calibration_identity(study.calibration), unavailable, "[calibration]: ")
    tokenizer = study.scoring.get("reference_tokenizer")
    if tokenizer is not None and not (study.path.parent / tokenizer).is_file():
        unavailable.append(f"reference tokenizer {study.path.parent / tokenizer}: not found (fetch it, or point "
                           f"[scoring] reference_tokenizer at a local tokenizers JSON)")
        hashes = [None] * len(configs)
    else:
        hashes = [_planned(lambda c=c: config_hash(measurement_config(c, study)), unavailable) for c in configs]
    task_hashes = (_planned(lambda: _task_hashes(configs, study), unavailable, "[[tasks]]: ") or []) if study.tasks else []
    stored, stored_tasks = stored_jobs(study.store), stored_task_jobs(study.store)
    rows = []
    for ref in refs:
        done = stored.get((ref.suite, ref.model, ref.step), set())
        _, mine = _with_paired(ref, configs, hashes, study)
        n = sum((es.content_hash, h) in done for es in eval_sets if es is not None for h in mine if h is not None)
        cached, size = (hub.download_sizes(ref, allow_pickle=study.allow_pickle) if ref.repo
                        else (None, None))
        t_done = stored_tasks.get((ref.suite, ref.model, ref.step), set())
        nt = sum(h in t_done for per_config in task_hashes for h in per_config)
        rows.append(PlannedCheckpoint(ref.suite, ref.model, ref.step, ref.tokens, ref.location, n,
                                      len(mine) * len(eval_sets) - n, cached, size,
                                      nt, len(configs) * len(study.tasks) - nt))
    return DryRun(rows, [_label(c, study) for c in [*configs, *study.quantized]], [e.name for e in study.eval_sets],
                  str(study.store), offline=study.hub is not None and hub.is_offline(),
                  unavailable=list(dict.fromkeys(unavailable)), tasks=[_describe_task(t) for t in study.tasks])


def _describe_task(spec) -> str:
    """A ``[[tasks]]`` table in one phrase: its name and the options given."""
    opts = [f"{k} {v}" for k, v in (("include", spec.include), ("num_fewshot", spec.num_fewshot),
                                    ("limit", spec.limit)) if v is not None]
    if spec.metrics is not None:
        opts.append("metrics " + ", ".join(spec.metrics))
    return spec.name + (f" ({'; '.join(opts)})" if opts else "")


def _planned(make, unavailable: list[str], what: str = ""):
    """``make()``, or None with the reason added to ``unavailable`` when its input is not cached offline."""
    try:
        return make()
    except NotCached as exc:
        unavailable.append(what + str(exc))
        return None


def _jobs(study: Study) -> tuple[list, list[QuantConfig], list[str]]:
    """The study's eval sets (loaded), its configs (the 16-bit reference first) and their
    measurement hashes (which checks the configs' input files up front)."""
    eval_sets = [_eval_set(e) for e in study.eval_sets]
    configs = [Reference16(), *study.methods]
    return eval_sets, configs, [config_hash(measurement_config(c, study)) for c in configs]


def _eval_set(spec):
    """The eval set of a study's ``EvalSpec``; an error names it."""
    try:
        return load_eval_set(spec.source, n_docs=spec.n_docs, seed=spec.seed, name=spec.name,
                             max_chars=spec.max_chars, text_field=spec.text_field)
    except QidlabError as exc:
        raise type(exc)(f"eval set {spec.name!r}: {exc}", params=exc.params) from None


def _with_paired(ref, configs: list, hashes: list, study: Study) -> tuple[list, list]:
    """The study's configs and hashes, plus the [[quantized]] folders made from checkpoint ``ref``."""
    mine = paired(study.quantized, ref)
    return configs + mine, hashes + [config_hash(measurement_config(c, study)) for c in mine]


def coarse_to_fine(refs: list) -> list:
    """``refs`` model by model (in first-seen order), each model's checkpoints coarse to fine: the
    last and the first step, then the middle one, then the middles of the halves, ... So a sweep
    stopped early (a GPU job's deadline) has measured checkpoints across the whole range of D,
    not only the first ones."""
    by_model: dict = {}
    for r in refs:
        by_model.setdefault((r.suite, r.model), []).append(r)
    out = []
    for group in by_model.values():
        group.sort(key=lambda r: r.step)
        n = len(group)
        order, spans = ([n - 1, 0] if n > 1 else [0]), [(0, n - 1)]
        while spans:
            a, b = spans.pop(0)
            if b - a >= 2:
                m = (a + b) // 2
                order.append(m)
                spans += [(a, m), (m, b)]
        out += [group[i] for i in order]
    return out


def _todo(store: Store, ref, configs, hashes, es_ids, task_hashes=None) -> list[QuantConfig]:
    """The configs of ``ref`` with an eval set, or a [[tasks]] entry (``task_hashes``: per config,
    the identity hash of each task), not yet in the store."""
    done = store.measured(suite=ref.suite, model=ref.model, step=ref.step)
    tasks_done = {h for _, h in store.tasks_measured(suite=ref.suite, model=ref.model, step=ref.step)} if task_hashes else set()
    return [c for i, (c, h) in enumerate(zip(configs, hashes))
            if not all((e, h) in done for e in es_ids.values())
            or (task_hashes and not all(t in tasks_done for t in task_hashes[i]))]


def _task_hashes(configs: list[QuantConfig], study: Study) -> list[list[str]] | None:
    """Per config, the identity hash of its row of each [[tasks]] entry (None: the study has none)."""
    if not study.tasks:
        return None
    return [[config_hash(task_identity(measurement_config(c, study), t)) for t in study.tasks] for c in configs]


def _write(store: Store, ref, stream, study: Study, es_ids, summary: Summary, meter) -> None:
    """Write a checkpoint's results as they come; a checkpoint that fails as a whole is reported."""
    try:
        _write_results(store, ref, stream, study, es_ids, summary, meter)
    except Exception as exc:  # e.g. a corrupt checkpoint: report it, go on with the others
        detail = str(exc) if isinstance(exc, QidlabError) else f"{type(exc).__name__}: {exc}"
        summary.failed.append(f"{ref.model}/step{ref.step}: {detail}")
        meter.measured(ref, "none", f"FAILED ({detail})", failed=True, jobs=0)


def _write_results(store: Store, ref, stream, study: Study, es_ids, summary: Summary, meter) -> None:
    ckpt_id = versions = revision = None
    for item in stream:
        if isinstance(item, CheckpointInfo):
            versions, revision = provenance.versions(), provenance.code_revision()  # torch is imported now
            tokens = ref.tokens if ref.tokens is not None else item.tokens
            if tokens is None:
                raise QidlabError(f"{ref.location}: tokens seen (D) unknown: give tokens_per_step in the suite manifest")
            ckpt_id = store.checkpoint_id(suite=ref.suite, model=ref.model, step=ref.step, path=ref.location,
                                          n_params=item.n_params, n_params_total=item.n_params_total,
                                          tokens=int(tokens), content_hash=item.content_hash,
                                          run=None if ref.info.get("run") is None else str(ref.info["run"]))
            if item.device:
                store.record_device(item.device)
            continue
        if isinstance(item, TaskResult):
            _write_task(store, ckpt_id, ref, item, study, versions, revision, summary)
            continue
        label = f"{ref.model}/step{ref.step} {_label(item.config, study)} {item.eval_set}"
        shown = _label(item.config, study) + (f" {item.eval_set}" if len(es_ids) > 1 else "")
        if item.error:
            summary.failed.append(f"{label}: {item.error}")
            meter.measured(ref, item.config.method, f"{shown}: FAILED ({item.error})", failed=True)
            continue
        nll, ntok, nbytes = item.docs
        cols = item.config.columns()
        new = store.add_measurement(Measurement(
            checkpoint_id=ckpt_id, eval_set_id=es_ids[item.eval_set], method=cols["method"], bits=cols["bits"],
            config=measurement_config(item.config, study), loss16=item.loss16, loss=item.loss, qid=item.qid,
            qid_ci=item.qid_ci, n_tokens=item.n_tokens, versions=versions, code_revision=revision,
            doc_nll=list(nll), doc_tokens=list(ntok), doc_bytes=list(nbytes), group_size=cols.get("group_size"),
            exp_bits=cols.get("exp_bits"), man_bits=cols.get("man_bits"), block_size=cols.get("block_size"),
            quantization=item.quantization))
        if new is None:
            summary.skipped += 1
        else:
            summary.measured += 1
        if item.config.method == "none":
            meter.measured(ref, "none", f"{shown} loss {item.loss16:.3f}")
        else:
            meter.measured(ref, item.config.method, f"{shown} qid {item.qid:.4f}", qid=item.qid, label=shown)


def _write_task(store: Store, ckpt_id, ref, item: TaskResult, study: Study, versions, revision, summary) -> None:
    """One [[tasks]] metric as a ``task_results`` row (a failed task is reported)."""
    label = f"{ref.model}/step{ref.step} {_label(item.config, study)} task {item.spec}"
    if item.error:
        summary.failed.append(f"{label}: {item.error}")
        return
    spec = next(t for t in study.tasks if t.name == item.spec)
    identity = task_identity(measurement_config(item.config, study), spec)
    if store.add_task_result(task_measurement(item, ckpt_id, identity, versions, revision)) is not None:
        summary.task_results += 1


def _label(cfg: QuantConfig, study: Study) -> str:
    """The job's progress label: as the study file spelt it, else from the config's fields."""
    return study.labels.get(cfg) or job_label(cfg.to_dict())


def _execute(plan, eval_sets, study, executor, address):
    """(ref, stream of results) per checkpoint of ``plan``. ``executor``: "local", "ray", "slurm"
    (``SlurmExecutor()``), or an executor object, called with the plan and handed this module's
    ``measure_checkpoint`` and ``run_study`` (``SlurmExecutor(...)`` with options)."""
    if executor == "local":
        return [(ref, measure_checkpoint(ref.location, eval_sets, todo, study)) for ref, todo in plan]
    if executor == "ray":
        return run_on_ray(measure_checkpoint, plan, eval_sets, study, address)
    if executor == "slurm":
        executor = SlurmExecutor()
    if callable(executor):
        return executor(plan, eval_sets, study, measure=measure_checkpoint, sweep=run_study)
    raise QidlabError(f"unknown executor {executor!r} (use local, ray or slurm)")
