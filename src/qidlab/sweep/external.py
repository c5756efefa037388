"""Quantized checkpoints made elsewhere, paired with a 16-bit checkpoint of a study.

    [[quantized]]                      # one table per quantized folder
    path = "w4-gptq"                   # a Hugging Face folder with quantization_config in config.json
    model = "m1"                       # the 16-bit checkpoint it was made from: a model and step of
    step = 128                         #   the study's [checkpoints]
    label = "llmcompressor-gptq"       # optional: the stored method (default: the producing tool)

The sweep scores the folder beside its 16-bit checkpoint and stores its QiD as a measurement of that
checkpoint (so N and D are the 16-bit checkpoint's: N from its config and shapes, never from packed
storage). The row's config holds the producing tool (``quant_method``), its whole
``quantization_config`` and the folder's content hash; bits and group size are read from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..checkpoints.load import content_hash
from ..errors import QidlabError
from ..files import read_json_object
from ..quantize.config import QuantConfig
from ..tomlfile import Key, check_table

QUANTIZED_KEYS = {"path": Key("str", required=True), "model": Key("str", required=True),
                  "step": Key("int", min=0, required=True), "label": Key("str")}


@dataclass(frozen=True)
class ExternalConfig(QuantConfig):
    """A quantized folder measured as it is (nothing is rounded by qidlab). Identity: the tool, its
    config (canonical JSON) and the folder's content hash; ``path`` and the pairing are not part of it."""

    method: ClassVar[str] = "external"
    path: str = ""
    model: str = ""
    step: int = 0
    tool: str = ""
    label: str = ""
    tool_config: str = "{}"  # canonical JSON of config.json's quantization_config
    content_hash: str = ""
    bits: float = 0.0
    group_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "tool": self.tool, "label": self.label, "bits": self.bits,
                "group_size": self.group_size, "content_hash": self.content_hash,
                "tool_config": json.loads(self.tool_config)}

    @property
    def w_bits(self) -> float:
        return float(self.bits)

    def columns(self) -> dict[str, Any]:
        return {"method": self.label or self.tool, "bits": self.w_bits, "group_size": self.group_size}


def parse_quantized(entries: Any, where: Path, path) -> tuple[ExternalConfig, ...]:
    """The study's ``[[quantized]]`` tables, each read from its folder's config.json (one error otherwise)."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise QidlabError(f"{path}: quantized must be a list of [[quantized]] tables")
    return tuple(_one(e, where, path, i) for i, e in enumerate(entries))


def _one(e, where: Path, path, i: int) -> ExternalConfig:
    check_table(e, QUANTIZED_KEYS, path, f"quantized[{i}]")
    folder = where / e["path"]
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise QidlabError(f"{path}: quantized[{i}]: {folder} has no config.json")
    qc = read_json_object(cfg_file).get("quantization_config")
    if not isinstance(qc, dict):
        raise QidlabError(f"{path}: quantized[{i}]: {cfg_file} has no quantization_config (not a quantized checkpoint)")
    bits, group = describe(qc)
    if bits is None:
        raise QidlabError(f"{path}: quantized[{i}]: cannot tell the weight bits from {cfg_file}'s quantization_config")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise QidlabError(f"{path}: quantized[{i}]: {folder} has no *.safetensors weights")
    if qc.get("quant_method") == "bitsandbytes" and qc.get("load_in_4bit"):
        group = bnb_blocksize(weights) or group
    return ExternalConfig(path=str(folder), model=e["model"], step=int(e["step"]), tool=str(qc.get("quant_method", "")),
                          label=e.get("label", ""), tool_config=json.dumps(qc, sort_keys=True),
                          content_hash=content_hash(folder, weights), bits=float(bits), group_size=group)


def describe(qc: dict) -> tuple[int | None, int | None]:
    """(weight bits, group size) of a ``quantization_config``: compressed-tensors (its config groups'
    weights; mixed bit widths: None), GPTQ/AWQ (``bits``, ``group_size``; -1 = per channel), bitsandbytes."""
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        w = [g.get("weights") for g in (qc.get("config_groups") or {}).values() if isinstance(g, dict)]
        pairs = {(x.get("num_bits"), x.get("group_size")) for x in w if isinstance(x, dict)}
        return next(iter(pairs)) if len(pairs) == 1 else (None, None)
    if method in ("gptq", "awq"):
        g = qc.get("group_size")
        return qc.get("bits"), (None if g in (-1, None) else g)
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            return 4, qc.get("bnb_4bit_blocksize", 64)
        if qc.get("load_in_8bit"):
            return 8, None
    return None, None


def bnb_blocksize(files) -> int | None:
    """The block size of a bitsandbytes 4-bit folder: transformers' config has none; each weight's
    ``*.quant_state.bitsandbytes__<type>`` entry (a JSON document stored as uint8) has it. Read from the
    first safetensors header that holds one, without torch; None when none does."""
    import struct

    for file in files:
        with open(file, "rb") as f:
            try:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            except (struct.error, ValueError):
                return None
            key = next((k for k in header if ".quant_state.bitsandbytes__" in k), None)
            if key is not None:
                start, end = header[key]["data_offsets"]
                f.seek(8 + n + start)
                try:
                    return int(json.loads(f.read(end - start))["blocksize"])
                except (ValueError, KeyError, TypeError):
                    return None
    return None


def paired(externals, ref) -> list[ExternalConfig]:
    """The external configs made from checkpoint ``ref`` (its model and step)."""
    return [x for x in externals if x.model == ref.model and x.step == ref.step]


def check_paired(externals, refs) -> None:
    """Every [[quantized]] table names a checkpoint the study measures."""
    have = {(r.model, r.step) for r in refs}
    for x in externals:
        if (x.model, x.step) not in have:
            raise QidlabError(f"[[quantized]] {x.path}: no checkpoint model={x.model!r} step={x.step} in the study")
