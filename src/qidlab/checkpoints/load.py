"""Load one Hugging Face checkpoint folder (or a Hub revision, ``hf://REPO@REVISION``), safely, with N,
D and a content hash."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qidlab.checkpoints import hub
from qidlab.checkpoints.metadata import read_metadata
from qidlab.checkpoints.params import count_params
from qidlab.errors import QidlabError
from qidlab.files import read_json_object
from qidlab.torchenv import quiet_transformers

#: Files whose bytes are the checkpoint's weights, by format.
SAFETENSORS_GLOB = "*.safetensors"
PICKLE_GLOBS = ("*.bin", "*.pt", "*.pth")
#: Files a transformers Trainer leaves beside the weights: never weights, never loaded.
TRAINER_STATE = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_STEP_DIR = re.compile(r"^step(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    ``n_params`` is N, the non-embedding parameter count (see ``count_params``);
    ``n_params_total`` counts everything, tied embeddings once. ``tokens`` is D, the training
    tokens seen (``None`` when nothing says). ``content_hash`` is the sha256 of ``config.json``
    and the weight files (see ``content_hash``).
    """

    model: Any
    tokenizer: Any | None
    path: Path
    n_params: int
    n_params_total: int
    tokens: int | None
    step: int | None
    content_hash: str
    config: dict = field(repr=False)
    weight_format: str = "safetensors"  # or "pickle"
    #: a checkpoint quantized by another tool: ``{"tool": quant_method, "config": quantization_config}``
    #: as its config.json says (None: an ordinary float checkpoint)
    quantization: dict | None = None


def content_hash(folder: str | Path, weight_files: list[Path] | None = None) -> str:
    """sha256 over ``config.json`` and the weight files of a checkpoint folder.

    Files are taken in order: ``config.json``, then the weight files sorted by name; for each,
    the digest is fed ``name``, a NUL byte, the size as 8 little-endian bytes, then the file's
    bytes. Tokenizer files and metadata are not included (the weights and architecture define
    the model whose loss is measured).
    """
    folder = Path(folder)
    files = [folder / "config.json"] + sorted(weight_files if weight_files is not None else _weight_files(folder)[1])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _weight_files(folder: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "pickle" | "none", files) found at the top of ``folder``."""
    st = sorted(folder.glob(SAFETENSORS_GLOB))
    if st:
        return "safetensors", st
    pk = sorted({f for g in PICKLE_GLOBS for f in folder.glob(g) if not TRAINER_STATE.match(f.name)})
    return ("pickle", pk) if pk else ("none", [])


def _check_safetensors(files: list[Path]) -> None:
    """Open each file's header with the safetensors library: rejects corrupt and truncated files."""
    from safetensors import safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # SafetensorError, OSError
            raise QidlabError(f"corrupt or truncated safetensors file {f}: {exc}") from None


def _load_pickle_model(folder: Path, files: list[Path], config, dtype):
    """Build the model from its config and load pickled weights with ``weights_only=True``."""
    import pickle

    import torch
    from transformers import AutoModelForCausalLM

    state: dict = {}
    for f in files:
        try:
            part = torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QidlabError(f"cannot load {f} with torch.load(weights_only=True): {first}") from None
        if not isinstance(part, dict):
            raise QidlabError(f"{f} does not hold a state dict (got {type(part).__name__})")
        state.update(part)
    # older GPT-NeoX checkpoints call the output head `embed_out`
    state = {("lm_head." + k[len("embed_out."):] if k.startswith("embed_out.") else k): v for k, v in state.items()}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    result = model.load_state_dict(state, strict=False)
    # a missing key is fine only when it names a tensor shared with a loaded one (tied embeddings)
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    loaded = set(state)
    missing = [k for k in result.missing_keys
               if not any(other in loaded for g in groups.values() if k in g for other in g)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise QidlabError(f"{folder}: weights missing for {len(missing)} tensors ({shown})")
    return model


def _check_finite(model, folder: Path) -> None:
    import torch

    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise QidlabError(f"{folder}: tensor {name} has {n_bad} NaN/inf values")


def _load_tokenizer(folder: Path):
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise QidlabError(f"{folder}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from None


PICKLE_HINT = "pass allow_pickle=True"


def check_checkpoint(path, *, allow_pickle: bool = False, pickle_hint: str = PICKLE_HINT):
    """What can be checked of a checkpoint folder without torch, before any work: the folder,
    ``config.json`` (parsed), the weight format and files (safetensors headers opened; pickled weights
    refused unless ``allow_pickle``, the refusal saying how to allow them: ``pickle_hint``, e.g. a
    command's flag or a study key), ``qidlab.json``. Returns (folder, config dict, format, weight files);
    a ``QidlabError`` with a one-line message otherwise."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise QidlabError(f"checkpoint path does not exist: {folder}")
    if not folder.is_dir():
        raise QidlabError(f"checkpoint path is not a folder: {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise QidlabError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    config_dict = read_json_object(config_path)
    fmt, files = _weight_files(folder)
    if fmt == "none":
        raise QidlabError(f"{folder} has no weight files (*.safetensors, or pickled *.bin/*.pt)")
    if fmt == "pickle" and not allow_pickle:
        names = ", ".join(f.name for f in files[:3])
        raise QidlabError(f"{folder} holds only pickled weights ({names}); convert them to safetensors, "
                          f"or {pickle_hint} to load them with torch.load(weights_only=True)")
    if fmt == "safetensors":
        _check_safetensors(files)
    read_metadata(folder)
    return folder, config_dict, fmt, files


def load_checkpoint(path, *, allow_pickle: bool = False, dtype=None, device: str = "cpu",
                    pickle_hint: str = PICKLE_HINT) -> Checkpoint:
    """Load a Hugging Face causal-LM folder (``config.json`` + weights [+ tokenizer]).

    ``path`` is a folder, a ``CheckpointRef`` from ``discover`` or ``hub.hub_refs`` (its ``tokens``
    and ``step`` are used unless the folder's ``qidlab.json`` gives them), or a Hub location
    ``hf://REPO@REVISION`` (``hf://REPO``: main), resolved into the Hugging Face cache by
    ``hub.resolve`` (downloaded when missing; offline, from the cache) with its step read from a
    ``step<N>`` in the revision's name. Weights must be safetensors;
    pickled weights (``pytorch_model.bin``, ``*.pt``) are refused unless ``allow_pickle=True``,
    and even then are read with ``torch.load(weights_only=True)`` (the refusal says how to allow them:
    ``pickle_hint``). ``dtype`` defaults to
    float32 on CPU and bfloat16 on CUDA. Every problem (missing folder or ``config.json``,
    corrupt or truncated safetensors, NaN/inf weights, a tokenizer larger than the embedding)
    raises ``QidlabError`` with a one-line message.

    Tokens D: ``qidlab.json``'s ``tokens`` > the ``CheckpointRef``'s > ``None``. Step: likewise,
    then a ``step<N>`` folder name.
    """
    ref_tokens = ref_step = None
    if hasattr(path, "path") and hasattr(path, "tokens"):  # a CheckpointRef
        if path.path is None and getattr(path, "repo", None):  # a Hub ref not yet resolved
            path = hub.resolve_ref(path, allow_pickle=allow_pickle)
        ref_tokens, ref_step, path = path.tokens, path.step, path.path
    elif isinstance(path, str) and path.startswith(hub.HUB_PREFIX):
        repo, revision = hub.parse_location(path)
        ref_step = hub.revision_step(revision)
        path = hub.resolve(repo, revision, allow_pickle=allow_pickle)
    folder, config_dict, fmt, files = check_checkpoint(path, allow_pickle=allow_pickle, pickle_hint=pickle_hint)
    meta = read_metadata(folder)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if fmt == "safetensors":
            with quiet_transformers(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*quantization_config.*")
                model = AutoModelForCausalLM.from_pretrained(str(folder), config=config, local_files_only=True,
                                                             use_safetensors=True, dtype=dtype,
                                                             **_quantized_load(config_dict))
        else:
            model = _load_pickle_model(folder, files, config, dtype)
    except QidlabError:
        raise
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError for bad folders
        first = (str(exc).strip().splitlines() or [""])[0]
        raise QidlabError(f"{folder}: transformers cannot load it ({type(exc).__name__}: {first})") from None
    model.to(device)
    model.eval()
    bnb_exact_cpu(model)
    _check_finite(model, folder)

    tokenizer = _load_tokenizer(folder)
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer is not None and len(tokenizer) > rows:
        raise QidlabError(f"{folder}: tokenizer/model mismatch: the tokenizer has {len(tokenizer)} tokens "
                          f"but the embedding only {rows} rows")

    n_params, n_total = count_params(model)
    step = meta.get("step", ref_step)
    if step is None and (m := _STEP_DIR.match(folder.name)):
        step = int(m.group(1))
    return Checkpoint(model=model, tokenizer=tokenizer, path=folder, n_params=n_params, n_params_total=n_total,
                      tokens=meta.get("tokens", ref_tokens), step=step,
                      content_hash=content_hash(folder, files), config=config_dict, weight_format=fmt,
                      quantization=quantization_of(config_dict))


def quantization_of(config_dict: dict) -> dict | None:
    """``{"tool": ..., "config": ...}`` of a checkpoint quantized elsewhere, from config.json's
    ``quantization_config`` (compressed-tensors / llm-compressor, GPTQ, AWQ, bitsandbytes); else None."""
    qc = config_dict.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    return {"tool": str(qc.get("quant_method", "unknown")), "config": qc}


def bnb_exact_cpu(model) -> int:
    """Make bitsandbytes' ``Linear4bit`` layers of ``model`` compute in their compute dtype on the CPU:
    on a CPU with AVX512-BF16, bitsandbytes (0.50) repacks the weights at the first inference call and
    multiplies in bfloat16 with bfloat16 absmax, whatever ``bnb_4bit_compute_dtype`` says
    (docs/interop.md). Returns the number of layers switched; call before the first forward."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _quantized_load(config_dict: dict) -> dict:
    """Extra ``from_pretrained`` arguments for a quantized folder. compressed-tensors 0.20.1 writes an
    asymmetric ``pack-quantized`` zero point packed (rows / (32 / bits)) but builds the module to load
    it into unpacked, so transformers refuses the size; such a folder is loaded with
    ``dequantize=True`` (the same dequantized weights, dense from the start)."""
    qc = config_dict.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "compressed-tensors":
        return {}
    groups = (qc.get("config_groups") or {}).values()
    asym = any(isinstance(g, dict) and isinstance(g.get("weights"), dict) and g["weights"].get("symmetric") is False
               and (g.get("format") or qc.get("format")) == "pack-quantized" for g in groups)
    if not asym:
        return {}
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}
