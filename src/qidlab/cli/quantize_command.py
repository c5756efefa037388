"""``qidlab quantize CHECKPOINT --method ... --out DIR``: write a quantized checkpoint.

``--format fake`` (the default): DIR is an ordinary Hugging Face folder (config, tokenizer,
``model.safetensors`` holding the dequantized weights), so transformers and qidlab load it like any
other; beside it, ``quantized-codes.safetensors`` holds the integer codes, scales and zero points
(RTN, GPTQ, AWQ). ``--format compressed-tensors``: llm-compressor's ``pack-quantized`` folder, which
transformers and vLLM load as a quantized model (``qidlab.quantize.formats``). ``--format
bitsandbytes`` (nf4, fp4): bitsandbytes' 4-bit serialisation, as transformers saves a ``load_in_4bit``
model. Every way
``qidlab-quantization.json`` holds the config, per-layer errors and provenance."""

from __future__ import annotations

from pathlib import Path

from .. import provenance
from ..checkpoints import check_checkpoint, hub, load_checkpoint
from ..documents import CalibrationSpec, calibration_ids
from ..errors import QidlabError
from ..files import building, check_writable
from ..output import dump_json
from ..quantize.config import config_from_dict
from ..quantize.formats import FORMATS, check_format, save_quantized
from ..torchenv import quiet_transformers, require_measure
from .args import assignments, emit

PICKLE_HINT = "pass --allow-pickle"
OPTIONS = ("bits", "group_size", "block_size", "exp_bits", "man_bits")
OPTION_HELP = {"bits": "bits per weight", "group_size": "weights sharing one scale (rtn, gptq, awq; default: "
               "per channel)", "block_size": "weights per absmax block (nf4, fp4)",
               "exp_bits": "exponent bits (fp)", "man_bits": "mantissa bits (fp)"}


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize one checkpoint and save it (dequantized weights + integer codes)")
    p.add_argument("checkpoint", help="a Hugging Face checkpoint folder, or a Hub repo id ORG/NAME (a path that "
                   "does not exist), downloaded into the Hugging Face cache (HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN)")
    p.add_argument("--revision", help="the Hub revision of a repo id (a branch, tag or commit, e.g. step1000; "
                   "default main)")
    p.add_argument("--method", required=True, help="rtn, gptq, awq, nf4, fp4, fp, ternary, or a plug-in's "
                   "(register_method, or a qidlab.methods entry point of an installed package)")
    for name in OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name, help=OPTION_HELP[name])
    p.add_argument("--calibration", help="text file/folder/JSONL/Parquet for GPTQ and AWQ")
    p.add_argument("--n-samples", type=int, default=128, help="calibration sequences (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sequence (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default: %(default)s)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="any other field of the method's config, as in a study file: e.g. backend=autoawq "
                        "duo_scaling=true clip=true, symmetric=false, act_order=true")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickled (.bin/.pt) weights, weights_only")
    p.add_argument("--format", default="fake", choices=FORMATS,
                   help="fake: dequantized float weights + qidlab's integer codes (default); compressed-tensors: "
                        "pack-quantized int32 words, as llm-compressor writes (RTN, GPTQ; AWQ with its scales folded); "
                        "bitsandbytes: NF4/FP4 as transformers saves a load_in_4bit model")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_quantize)


def _toml_value(text: str):
    """A --set value as TOML reads it (true, 4, 0.01, "x"); anything else is the plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def run_quantize(args):
    require_measure("quantizing a checkpoint")
    from ..quantize.api import quantize_  # torch

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        raise QidlabError(f"{out} exists and is not empty")
    check_writable(out, folder=True)  # before the work
    extra = {k: _toml_value(v) for k, v in assignments(args.set).items()}
    cfg = config_from_dict({"method": args.method, **{k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None},
                            **extra})
    check_format(cfg, args.format)  # before loading or quantizing anything
    folder, source = _source(args)
    check_checkpoint(folder, allow_pickle=args.allow_pickle, pickle_hint=PICKLE_HINT)
    ckpt = load_checkpoint(folder, allow_pickle=args.allow_pickle, pickle_hint=PICKLE_HINT)
    calib = None
    if cfg.needs_calibration:
        if not args.calibration:
            raise QidlabError(f"--method {cfg.method} needs --calibration TEXT")
        spec = CalibrationSpec(Path(args.calibration), args.n_samples, args.seq_len, args.seed)
        calib = calibration_ids(ckpt.tokenizer, spec)
    report = quantize_(ckpt.model, cfg, calibration=calib)
    _save(out, ckpt, report, provenance.record(), source, args.format)
    doc = {"checkpoint": source or str(args.checkpoint), "out": str(out), **report.to_dict()}
    emit(args, doc, f"{cfg.key()}: {len(report.modules)} linears quantized, mean relative weight error "
         f"{report.mean_rel_error:.4g}; wrote {out}")


def _source(args) -> tuple[str, str | None]:
    """(local folder, Hub source or None): a Hub repo id (``ORG/NAME`` that is no path) is resolved into
    the Hugging Face cache at ``--revision`` and recorded as ``hf://REPO@REVISION``."""
    if not hub.looks_like_repo(args.checkpoint):
        if args.revision:
            raise QidlabError(f"--revision needs a Hub repo id (ORG/NAME), but {args.checkpoint} is a local path")
        return args.checkpoint, None
    folder = hub.resolve(args.checkpoint, args.revision, allow_pickle=args.allow_pickle)
    return str(folder), f"{hub.HUB_PREFIX}{args.checkpoint}@{args.revision or 'main'}"


def _save(out: Path, ckpt, report, prov, source: str | None, fmt: str = "fake") -> None:
    """Write everything into a temporary sibling folder, then rename: no half-written checkpoint."""
    try:
        with building(out) as tmp, quiet_transformers():
            _write(tmp, ckpt, report, prov, source, fmt)
    except (OSError, QidlabError):
        raise
    except Exception as exc:  # safetensors reports a full disk as SafetensorError ("I/O error: ...")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QidlabError(f"{out}: cannot write the quantized checkpoint ({first})") from None


def _write(tmp: Path, ckpt, report, prov, source: str | None, fmt: str) -> None:
    """The quantized checkpoint's files, into the folder ``tmp`` (``_save`` swaps it in)."""
    save_quantized(ckpt.model, report, tmp, fmt)
    if ckpt.tokenizer is not None:
        ckpt.tokenizer.save_pretrained(tmp)
    meta = {"format": fmt, "source": source or str(ckpt.path), "source_hash": ckpt.content_hash, "n_params": ckpt.n_params,
            "tokens": ckpt.tokens, "quantization": report.to_dict(), "provenance": prov}
    (tmp / "qidlab-quantization.json").write_text(dump_json(meta) + "\n")


