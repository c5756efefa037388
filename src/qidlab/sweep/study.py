"""A study file (TOML): which checkpoints, which quantization configs, which eval sets.

    [study]
    name = "tiny"
    store = "tiny.db"                  # relative to the study file
    device = "auto"                    # cuda when available (bf16 weights), else cpu (fp32)
    hessian_precision = "float32"      # shared-Hessian GPTQ's X^T X products: float32, tf32, bf16
    on_gptq_failure = "error"          # "rtn": a layer whose GPTQ fails (after raising damp x10 up to
                                       #   1.0) is rounded to nearest; recorded with the measurement

    [checkpoints]
    root = "suite"                     # Pythia layout <suite>/<model>/step<N>/ (qidlab.checkpoints.discover)
    models = ["m1", "m2"]              # optional filter
    steps = [64, 128]                  # optional filter
    allow_pickle = false               # true: pickle-only checkpoints load with torch.load(weights_only=True)

    Or checkpoints on the Hugging Face Hub (instead of root; qidlab.checkpoints.hub), Pythia's form:

    [checkpoints]
    repos = ["EleutherAI/pythia-160m", "EleutherAI/pythia-410m"]
    revision = "step{step}"            # how a step names its revision
    steps = [512, 1000, 2000]
    tokens_per_step = 2097152          # D = step x tokens_per_step (Pythia: 1024 x 2048 tokens)
    allow_pickle = false               # true: pickle-only revisions load with torch.load(weights_only=True)
    keep = true                        # false: delete a revision's files from the cache once measured

    or an explicit list of revisions, D read from each name (OLMo-2: "stage1-step1000-tokens5B" has
    seen 5e9 tokens; the step is the name's step<N>, else the list index):

    [checkpoints]
    repos = ["allenai/OLMo-2-1124-7B"]
    revisions = ["stage1-step1000-tokens5B", "stage1-step10000-tokens42B", "stage1-step100000-tokens420B"]
    tokens_from_revision = "tokens(\\d+)B"   # a regex; its first group x tokens_unit = D
    tokens_unit = 1e9

    huggingface_hub honours HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE=1 and HF_TOKEN. The store records
    suite = the repo id, model = the repo name, path = "hf://REPO@REVISION".

    [[eval_sets]]
    name = "heldout"
    source = "eval.txt"                # file, folder, JSONL or Parquet
    text_field = "text"                # JSONL / Parquet: the field holding the text
    n_docs = 1000
    seed = 0
    max_chars = 4000                   # optional: cut each document to its first 4000 characters

    or a data set read by Hugging Face ``datasets`` (instead of source; qidlab.hubdata, needs the
    ``hub`` extra; honours HF_DATASETS_CACHE, HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1, HF_TOKEN):

    [[eval_sets]]
    name = "refinedweb"
    dataset = "tiiuae/falcon-refinedweb"   # a Hub dataset id; or "parquet" / "json" / "text" with data_files
    split = "train"
    text_field = "content"
    n_docs = 1000
    seed = 0
    streaming = true                   # a seeded sample without downloading the whole set: the shards'
                                       #   order shuffled with seed, then n_docs drawn from a buffer of
                                       #   shuffle_buffer (10000) documents (qidlab.hubdata)

    WikiText-2 in its document level form, as lm-evaluation-harness's wikitext task reads it (its test
    split, 62 Wikipedia articles, field "page"; the harness detokenizes before scoring, qidlab scores the
    raw page):

    [[eval_sets]]
    name = "wikitext2"
    dataset = "EleutherAI/wikitext_document_level"
    config = "wikitext-2-raw-v1"
    split = "test"
    text_field = "page"
    n_docs = 62

    Local files through ``datasets``: dataset = "parquet", data_files = ["eval/*.parquet"] (relative
    to the study file).

    [calibration]                      # for GPTQ / AWQ
    source = "train.txt"               # or dataset = ... as in [[eval_sets]] (then n_docs documents
    n_samples = 128                    #   are sampled first, with seed; streaming needs n_docs)
    seq_len = 512
    seed = 0

    [[methods]]                        # each list expands to every combination
    method = "gptq"
    bits = [2, 3, 4]
    group_size = [128]                 # "channel" = one scale per output channel

    [[tasks]]                          # optional: lm-evaluation-harness tasks (the `tasks` extra) run on the
    name = "hellaswag"                 #   16-bit and each quantized model in memory; stored in task_results
    include = "tasks"                  # optional: a folder of task YAML files (lm_eval include_path)
    num_fewshot = 0                    # optional; default: the task's
    limit = 500                        # optional: the first 500 documents
    metrics = ["acc", "acc_norm"]      # optional; default: every metric the task reports
    batch_size = 8

    [scoring]
    max_length = 2048                  # context; longer documents are scored in windows
    bootstrap = 1000                   # paired bootstrap replicates for the QiD CI
    unit = "nats_per_token"            # or "bits_per_byte", "nats_per_word" (log of lm-eval's word
                                       #   perplexity), "nats_per_ref_token" (the paper's:
    reference_tokenizer = "llama3.json"  #  nats per Llama-3 token; needs this tokenizers JSON)
    prefix = "bos"                     # what the first document token is predicted from: "bos", "eos"
                                       #   (lm-eval's when the tokenizer has no BOS) or "none" (left
                                       #   unscored); unset: BOS, or "none" without a BOS, as always
    windows = "sliding"                # longer documents: "sliding" (overlapping, stride = max_length/2
                                       #   unless stride = ...) or "disjoint" (lm-eval's loglikelihood_rolling)

    The scoring options enter a measurement's identity as written, except ``prefix = "bos"`` and
    ``windows = "sliding"``, which score what a study without them scores (``sweep.run.measurement_config``).

    [output]                           # optional: keep every quantized model the sweep measured
    format = "compressed-tensors"      # or "fake" (qidlab's dequantized weights + integer codes)
    dir = "quantized"                  # <dir>/<model>/step<N>/<job label>/, relative to the study file

    [[quantized]]                      # optional: checkpoints quantized elsewhere (sweep/external.py)
    path = "w4-gptq"                   # a folder with quantization_config in config.json
    model = "m1"                       # paired with this 16-bit checkpoint of [checkpoints]
    step = 128
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoints.hub import HubSource, named_revisions, step_revisions
from ..documents import CalibrationSpec
from ..errors import QidlabError
from ..evaluate.score import PREFIXES, WINDOWS
from ..evaluate.score import UNITS as SCORE_UNITS
from ..evaluate.tasks import TaskSpec
from ..hubdata import DatasetSource
from ..quantize.config import QuantConfig, config_from_dict, parse_group_size
from ..quantize.formats import FORMATS, check_format
from ..tomlfile import Key, check_table, read_toml
from .external import ExternalConfig, parse_quantized

SECTIONS = {"study", "checkpoints", "eval_sets", "calibration", "methods", "scoring", "tasks", "output", "quantized"}
UNITS = SCORE_UNITS  # nats_per_token, bits_per_byte, nats_per_ref_token, nats_per_word

# one schema per table (the [[methods]] tables are checked by quantize.config.config_from_dict)
STUDY_KEYS = {"name": Key("str"), "store": Key("str"), "device": Key("str"),
              "hessian_precision": Key(choices=("float32", "tf32", "bf16")),
              "on_gptq_failure": Key(choices=("error", "rtn"))}
CHECKPOINT_KEYS = {"root": Key("str"), "models": Key("list", items="str"),
                   "steps": Key("list", items="int", min=0),
                   # checkpoints from the Hugging Face Hub (their parser checks the values)
                   "repos": Key(), "revision": Key(), "revisions": Key(), "tokens_per_step": Key(),
                   "tokens_from_revision": Key(), "tokens_unit": Key(), "allow_pickle": Key("bool"),
                   "keep": Key()}
#: the keys of a ``datasets`` source, in [[eval_sets]] and [calibration] (instead of ``source``)
DATASET_KEYS = {"dataset": Key("str"), "config": Key("str"), "split": Key("str"), "data_files": Key(),
                "streaming": Key("bool"), "shuffle_buffer": Key("int", min=1)}
EVAL_SET_KEYS = {"name": Key("str", required=True), "source": Key("str"), "text_field": Key("str"),
                 "n_docs": Key("int", min=1), "seed": Key("int", min=0), "max_chars": Key("int", min=1),
                 **DATASET_KEYS}
CALIBRATION_KEYS = {"source": Key("str"), "text_field": Key("str"), "n_samples": Key("int", min=1),
                    "seq_len": Key("int", min=1), "seed": Key("int", min=0), "n_docs": Key("int", min=1),
                    **DATASET_KEYS}
TASK_KEYS = {"name": Key("str", required=True), "include": Key("str"), "num_fewshot": Key("int", min=0),
             "limit": Key("int", min=1), "metrics": Key("list", items="str"), "batch_size": Key("int", min=1)}
OUTPUT_KEYS = {"format": Key(choices=FORMATS, required=True), "dir": Key("str", required=True)}
SCORING_KEYS = {"max_length": Key("int", min=1), "stride": Key("int", min=1), "batch_size": Key("int", min=1),
                "bootstrap": Key("int", min=0), "unit": Key(choices=UNITS), "reference_tokenizer": Key("str"),
                "prefix": Key(choices=PREFIXES), "windows": Key(choices=WINDOWS)}


@dataclass(frozen=True)
class EvalSpec:
    name: str
    source: Path | DatasetSource  # a local file or folder, or a ``datasets`` data set
    n_docs: int = 1000
    seed: int = 0
    max_chars: int | None = None  # cut each document to its first max_chars characters
    text_field: str = "text"  # a local JSONL / Parquet source: the field holding the text


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    store: Path
    checkpoint_root: Path | None  # None when the checkpoints are on the Hub (``hub``)
    models: tuple[str, ...] | None
    steps: tuple[int, ...] | None
    eval_sets: tuple[EvalSpec, ...]
    methods: tuple[QuantConfig, ...]  # one quantization config per combination
    calibration: CalibrationSpec | None
    scoring: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    hessian_precision: str = "float32"  # shared-Hessian GPTQ's X^T X products: float32, tf32 or bf16
    on_gptq_failure: str = "error"  # "rtn": a layer whose GPTQ fails is rounded to nearest (recorded)
    labels: dict[QuantConfig, str] = field(default_factory=dict)  # progress label, as the file spells it
    hub: HubSource | None = None  # [checkpoints] repos = [...]: Hub repos x revisions
    allow_pickle: bool = False  # [checkpoints] allow_pickle: pickle-only checkpoints load (weights_only)
    tasks: tuple[TaskSpec, ...] = ()  # [[tasks]]: lm-evaluation-harness tasks on the 16-bit and each quantized model
    output: OutputSpec | None = None  # [output]: keep each quantized model measured, in this format
    quantized: tuple[ExternalConfig, ...] = ()  # [[quantized]]: folders quantized elsewhere, paired


@dataclass(frozen=True)
class OutputSpec:
    """``[output]``: where (``dir``) and how (``format``: fake, compressed-tensors) the sweep keeps
    each quantized model it measured."""

    format: str
    dir: Path


def load_study(path: str | Path) -> Study:
    """Parse and validate a study file; one ``QidlabError`` naming the file and key otherwise."""
    path = Path(path)
    raw = read_toml(path, "study")
    where = path.parent
    unknown = set(raw) - SECTIONS
    if unknown:
        raise QidlabError(f"{path}: unknown section(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SECTIONS))})")
    study = check_table(_table(raw, "study", path), STUDY_KEYS, path, "[study]")
    ckpts = _table(raw, "checkpoints", path)
    check_table(ckpts, CHECKPOINT_KEYS, path, "[checkpoints]")
    hub = _hub(ckpts, path)
    evals = raw.get("eval_sets")
    if not isinstance(evals, list) or not evals:
        raise QidlabError(f"{path}: needs at least one [[eval_sets]] with name and source (or dataset)")
    methods = raw.get("methods")
    if not isinstance(methods, list) or not methods:
        raise QidlabError(f"{path}: needs at least one [[methods]] entry")
    calib = raw.get("calibration")
    parsed = Study(
        name=str(study.get("name", path.stem)),
        path=path,
        store=where / str(study.get("store", f"{path.stem}.db")),
        device=_device(study.get("device", "auto"), path),
        hessian_precision=study.get("hessian_precision", "float32"),  # choices checked by STUDY_KEYS
        on_gptq_failure=study.get("on_gptq_failure", "error"),
        checkpoint_root=where / str(ckpts["root"]) if hub is None else None,
        hub=hub,
        allow_pickle=_flag(ckpts, "allow_pickle", False, path),
        models=tuple(ckpts["models"]) if "models" in ckpts else None,
        steps=tuple(int(s) for s in ckpts["steps"]) if "steps" in ckpts and hub is None else None,
        eval_sets=tuple(_eval_spec(e, where, path, i) for i, e in enumerate(evals)),
        **_methods(methods, path),
        calibration=_calibration(calib, where, path) if calib is not None else None,
        scoring=_scoring(raw.get("scoring", {}), path),
        tasks=_tasks(raw.get("tasks", []), where, path),
    )
    quantized = parse_quantized(raw.get("quantized"), where, path)
    labels = {**parsed.labels, **{x: f"external-{x.label or x.tool}-{Path(x.path).name}" for x in quantized}}
    return dataclasses.replace(parsed, output=_output(raw.get("output"), where, path, parsed.methods),
                               quantized=quantized, labels=labels)


def _output(table, where: Path, path, methods) -> OutputSpec | None:
    """The ``[output]`` table, checked against the study's methods (the format must store each)."""
    if table is None:
        return None
    check_table(table, OUTPUT_KEYS, path, "[output]")
    fmt = table["format"]
    for cfg in methods:
        try:
            check_format(cfg, fmt)
        except QidlabError as exc:
            raise QidlabError(f"{path}: [output] {exc}") from None
        if getattr(cfg, "shared_hessian", False):
            raise QidlabError(f"{path}: [output] keeps models quantized one config at a time: shared_hessian "
                              f"GPTQ computes every bit width in one pass and is not kept")
    return OutputSpec(format=fmt, dir=where / table["dir"])


def _tasks(entries, where, path) -> tuple[TaskSpec, ...]:
    """The [[tasks]] tables (lm-evaluation-harness tasks; ``include`` relative to the study file)."""
    if not isinstance(entries, list):
        raise QidlabError(f"{path}: tasks must be [[tasks]] tables")
    out = []
    for i, t in enumerate(entries):
        check_table(t, TASK_KEYS, path, f"tasks[{i}]")
        out.append(TaskSpec(name=t["name"], include=where / t["include"] if "include" in t else None,
                            num_fewshot=t.get("num_fewshot"), limit=t.get("limit"),
                            metrics=tuple(t["metrics"]) if "metrics" in t else None,
                            batch_size=t.get("batch_size", 8)))
    if len({t.name for t in out}) != len(out):
        raise QidlabError(f"{path}: a task is named twice in [[tasks]]")
    return tuple(out)


#: [checkpoints] keys of a local suite folder; the others of CHECKPOINT_KEYS name Hub checkpoints.
LOCAL_KEYS = {"root", "models", "steps", "allow_pickle"}


def _hub(ckpts: dict, path) -> HubSource | None:
    """[checkpoints] with ``repos``: the Hub source; with ``root``: None (a local suite folder)."""
    if "root" in ckpts and "repos" in ckpts:
        raise QidlabError(f"{path}: [checkpoints] has both 'root' and 'repos': keep root (a local suite folder) "
                          f"or repos (Hub repo ids)")
    if "repos" not in ckpts:
        if "root" not in ckpts:
            raise QidlabError(f"{path}: [checkpoints] needs 'root' (a suite folder in the Pythia layout) "
                              f"or 'repos' (Hugging Face Hub repo ids)")
        hub_only = sorted(set(ckpts) - LOCAL_KEYS)
        if hub_only:
            raise QidlabError(f"{path}: [checkpoints] {', '.join(hub_only)} only with 'repos' (Hub checkpoints), "
                              f"not with 'root'")
        return None
    repos = ckpts["repos"]
    if not isinstance(repos, list) or not repos or not all(isinstance(r, str) and "/" in r for r in repos):
        raise QidlabError(f"{path}: [checkpoints] repos must be a list of Hub repo ids like \"EleutherAI/pythia-160m\"")
    try:
        revisions = _revisions(ckpts, path)
    except QidlabError as exc:
        raise QidlabError(f"{path}: [checkpoints] {exc}", params=exc.params) from None
    return HubSource(repos=tuple(repos), revisions=tuple(revisions),
                     allow_pickle=_flag(ckpts, "allow_pickle", False, path), keep=_flag(ckpts, "keep", True, path))


def _revisions(ckpts: dict, path) -> list:
    """The Hub revisions of [checkpoints]: ``revision`` + ``steps``, or ``revisions``."""
    tps = ckpts.get("tokens_per_step")
    if tps is not None and (not isinstance(tps, int) or isinstance(tps, bool) or tps < 1):
        raise QidlabError(f"tokens_per_step must be a positive integer, not {tps!r}")
    if ("revisions" in ckpts) == ("revision" in ckpts):
        raise QidlabError("needs either revision (a template like \"step{step}\", with steps) or revisions (a list)")
    if "revisions" in ckpts:
        names = ckpts["revisions"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise QidlabError("revisions must be a non-empty list of revision names")
        out = named_revisions(names, ckpts.get("tokens_from_revision"), float(ckpts.get("tokens_unit", 1)), tps)
    else:
        steps = ckpts.get("steps")
        if not isinstance(steps, list) or not steps or not all(isinstance(s, int) and s >= 0 for s in steps):
            raise QidlabError("revision needs steps, a list of non-negative integers")
        out = step_revisions(str(ckpts["revision"]), steps, tps)
    if any(r.tokens is None for r in out):
        raise QidlabError("tokens seen (D) unknown: give tokens_per_step or tokens_from_revision")
    return out


def _flag(table: dict, key: str, default: bool, path) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise QidlabError(f"{path}: [checkpoints] {key} must be true or false, not {value!r}")
    return value


def _device(value, path) -> str:
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise QidlabError(f"{path}: [study] device must be auto, cpu, cuda or cuda:N, not {value!r}")
    return value


def _scoring(s, path) -> dict[str, Any]:
    check_table(s, SCORING_KEYS, path, "[scoring]")
    unit = s.get("unit", "nats_per_token")
    if unit == "nats_per_ref_token" and "reference_tokenizer" not in s:
        raise QidlabError(f"{path}: [scoring] unit nats_per_ref_token needs reference_tokenizer (a tokenizers JSON)")
    if s.get("windows") == "disjoint" and "stride" in s:
        raise QidlabError(f"{path}: [scoring] stride applies to sliding windows only; disjoint windows do not overlap")
    return dict(s)


def _table(raw, key, path) -> dict:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise QidlabError(f"{path}: needs a [{key}] table")
    return value


def _eval_spec(e, where, path, i) -> EvalSpec:
    if not isinstance(e, dict) or "name" not in e:
        raise QidlabError(f"{path}: eval_sets[{i}] needs 'name' and 'source' (or 'dataset')")
    check_table(e, EVAL_SET_KEYS, path, f"eval_sets[{i}]")
    source = _text_source(e, where, path, f"eval_sets[{i}]")
    return EvalSpec(name=e["name"], source=source, n_docs=e.get("n_docs", 1000), seed=e.get("seed", 0),
                    max_chars=e.get("max_chars"), text_field=e.get("text_field", "text"))


def _calibration(c, where, path) -> CalibrationSpec:
    if not isinstance(c, dict):
        raise QidlabError(f"{path}: [calibration] must be a table with 'source' (or 'dataset')")
    check_table(c, CALIBRATION_KEYS, path, "[calibration]")
    source = _text_source(c, where, path, "[calibration]")
    if "n_docs" in c and not isinstance(source, DatasetSource):
        raise QidlabError(f"{path}: [calibration] n_docs only with 'dataset' (a local source is read whole)")
    return CalibrationSpec(source=source, n_samples=c.get("n_samples", 128), seq_len=c.get("seq_len", 512),
                           seed=c.get("seed", 0), text_field=c.get("text_field", "text"), n_docs=c.get("n_docs"))


def _text_source(t: dict, where: Path, path, what: str) -> Path | DatasetSource:
    """The documents of an [[eval_sets]] or [calibration] table: ``source`` (a local path) or
    ``dataset`` (a ``DatasetSource``; ``data_files`` relative to the study file)."""
    if ("source" in t) == ("dataset" in t):
        raise QidlabError(f"{path}: {what} needs either 'source' (a local file or folder) or 'dataset' (a Hub "
                          f"dataset id, or \"parquet\" / \"json\" / \"text\" with data_files)")
    if "source" in t:
        extra = sorted(set(t) & set(DATASET_KEYS))
        if extra:
            raise QidlabError(f"{path}: {what} {', '.join(extra)} only with 'dataset', not with 'source'")
        return where / t["source"]
    files = t.get("data_files", [])
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise QidlabError(f"{path}: {what} data_files must be a path or a list of paths")
    files = tuple(f if "://" in f else str(where / f) for f in files)
    if t.get("streaming") and "n_docs" not in t and what == "[calibration]":
        raise QidlabError(f"{path}: {what} streaming needs n_docs (how many documents to take)")
    try:
        return DatasetSource(dataset=t["dataset"], split=t.get("split", "train"), text_field=t.get("text_field", "text"),
                             config=t.get("config"), data_files=files, streaming=t.get("streaming", False),
                             shuffle_buffer=t.get("shuffle_buffer", 10_000))
    except QidlabError as exc:
        raise QidlabError(f"{path}: {what}: {exc}", params=exc.params) from None


def _methods(entries: list, path) -> dict[str, Any]:
    """The study's ``methods`` (one config per combination) and their progress ``labels``."""
    jobs = [job for i, entry in enumerate(entries) for job in _expand(entry, path, i)]
    return {"methods": tuple(cfg for cfg, _ in jobs), "labels": dict(jobs)}


def _expand(entry, path, i) -> list[tuple[QuantConfig, str]]:
    """One (config, label) per combination of the list-valued keys of a [[methods]] entry."""
    if not isinstance(entry, dict) or "method" not in entry:
        raise QidlabError(f"{path}: methods[{i}] needs 'method'")
    keys = sorted(entry)
    axes = [entry[k] if isinstance(entry[k], list) else [entry[k]] for k in keys]
    if any(len(a) == 0 for a in axes):
        raise QidlabError(f"{path}: methods[{i}] has an empty list")
    out = []
    for combo in itertools.product(*axes):
        spelling = dict(zip(keys, combo))
        if "group_size" in spelling:
            spelling["group_size"] = parse_group_size(spelling["group_size"])
        try:
            out.append((config_from_dict(spelling), job_label(spelling)))
        except QidlabError as exc:
            raise QidlabError(f"{path}: methods[{i}]: {exc}") from None
    return out


def job_label(spelling: dict[str, Any]) -> str:
    """A job's label in the sweep's progress lines, from the keys the study gave: the method, its
    bits, its grouping, then the other keys sorted, e.g. ``rtn 4-bit g32``, ``gptq 3-bit per-channel
    shared_hessian``, ``fp e2m1 block 32``; the 16-bit reference is ``16-bit``."""
    rest = dict(spelling)
    method = rest.pop("method")
    if method == "none":
        return "16-bit"
    parts = [str(method)]
    if "bits" in rest:
        parts.append(f"{rest.pop('bits')}-bit")
    if "group_size" in rest:
        group = rest.pop("group_size")
        parts.append("per-channel" if group is None or group == "channel" else f"g{group}")
    if "exp_bits" in rest and "man_bits" in rest:
        parts.append(f"e{rest.pop('exp_bits')}m{rest.pop('man_bits')}")
    if "block_size" in rest:
        parts.append(f"block {rest.pop('block_size')}")
    for key, value in sorted(rest.items()):
        parts.append(key if value is True else f"no {key}" if value is False else f"{key} {value}")
    return " ".join(parts)
