"""Low-bit training settings of a suite model (pure Python; the training side is ``lowbit.py``).

In a suite file, a model is trained with fake quantization in its forward pass when it has the
shorthand ``precision = "bitnet-b1.58"`` or a ``[models.qat]`` table (after its ``[[models]]``)::

    [[models]]
    name = "h64-l2-w4a8"
    hidden = 64
    layers = 2
    heads = 4
    lr = 2e-3                          # optional with precision = "bitnet-b1.58" and a twin: 4 x the twin's
    twin = "h64-l2"                    # its 16-bit twin in this suite: same shape (and the suite's data order)

    [models.qat]
    weights = { method = "rtn", bits = 4, group_size = 32 }
    activations = { bits = 8 }         # optional: group_size = G channels (default: one scale per token)
    kv = { bits = 8 }                  # optional

``weights`` takes the weight-only grids of ``qidlab.quantize`` by their config fields, so QAT and PTQ
round to the same numbers: ``rtn`` (integers, ``bits``, ``group_size``, ``symmetric``; Chen et al.),
``fp`` (ExMy: ``exp_bits``, ``man_bits``, ``block_size``; Sun et al.), ``ternary`` (absmean),
``nf4``/``fp4`` (``block_size``); ``per_tensor = true`` gives ``rtn``/``ternary`` one scale for the
whole matrix. ``activations`` (the inputs of the block linears) and ``kv`` (keys and values) use a
symmetric integer absmax grid of ``bits`` (2..8): scale = max|x| / (2^(bits-1) - 1) per token (per
token and head for ``kv``), or per group of ``group_size`` channels; codes -2^(bits-1) ..
2^(bits-1) - 1 (BitNet's 8-bit activations: 127 / absmax). Unquantized parts count as 16 bits
(Kumar et al.'s P_w, P_a, P_kv).

``precision = "bitnet-b1.58"`` (Ma et al. 2024): ternary weights with one absmean scale per matrix,
8-bit per-token absmax activations, no KV quantization, and, when ``lr`` is left out, ``BITNET_LR_FACTOR``
times the twin's learning rate: BitNet's recipe trains at a higher learning rate than a 16-bit
model of the same size (its b1.58 2B model peaks at 1.5e-3, several times what 16-bit models of
that size use); the factor is a rough reading of that recipe, meant to be checked with ``--lr-sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qidlab.errors import QidlabError
from qidlab.tomlfile import Key, check_table
from qidlab.quantize.config import METHODS, FPConfig, QuantConfig, RTNConfig, TernaryConfig, config_from_dict

BITNET = "bitnet-b1.58"
BITNET_LR_FACTOR = 4.0
WEIGHT_METHODS = {name: c for name, c in METHODS.items() if c.supports_qat}  # the grids QAT rounds through
# the tables' keys (tomlfile.check_table); their values are checked below, with messages of their own
QAT_KEYS = {"weights": Key(), "activations": Key(), "kv": Key()}
ACT_KEYS = {"bits": Key(), "group_size": Key()}


@dataclass(frozen=True)
class ActSpec:
    """An activation (or KV) grid: symmetric integer absmax, ``bits`` 2..8, one scale per token
    (``group_size`` None) or per ``group_size`` consecutive channels."""

    bits: int
    group_size: int | None = None

    def label(self) -> str:
        return f"{self.bits}" + (f"g{self.group_size}" if self.group_size else "")


@dataclass(frozen=True)
class QATSpec:
    """What the forward pass of a low-bit model rounds (module docstring); None = kept in 16 bits."""

    weights: QuantConfig | None = None
    per_tensor: bool = False  # one scale per weight matrix (rtn, ternary)
    activations: ActSpec | None = None
    kv: ActSpec | None = None
    preset: str | None = None  # "bitnet-b1.58" when made by the shorthand

    def label(self) -> str:
        """The model's ``precision``: the preset's name, else e.g. ``w4g32-a8-kv8``, ``we2m1b32``."""
        if self.preset:
            return self.preset
        parts = [_weight_label(self.weights, self.per_tensor)] if self.weights else []
        parts += [f"a{self.activations.label()}"] if self.activations else []
        parts += [f"kv{self.kv.label()}"] if self.kv else []
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``qat_from_dict`` reads it back."""
        w = None if self.weights is None else {k: v for k, v in self.weights.to_dict().items() if k != "modules"}
        return {"weights": w, "per_tensor": self.per_tensor, "preset": self.preset,
                "activations": None if self.activations is None else vars(self.activations).copy(),
                "kv": None if self.kv is None else vars(self.kv).copy()}

    def columns(self) -> dict[str, float]:
        """Data-contract columns of the trained precision (``bits``, ``a_bits``, ``kv_bits``, with
        ``group_size`` / ``exp_bits``, ``man_bits``, ``block_size`` where the weight grid has them)."""
        out = {"bits": 16.0} if self.weights is None else {
            k: float(v) for k, v in self.weights.columns().items() if k != "method" and v is not None}
        out["a_bits"] = float(self.activations.bits) if self.activations else 16.0
        out["kv_bits"] = float(self.kv.bits) if self.kv else 16.0
        return out


def _weight_label(cfg: QuantConfig, per_tensor: bool) -> str:
    scope = "t" if per_tensor else (f"g{cfg.group_size}" if getattr(cfg, "group_size", None) else "")
    if isinstance(cfg, RTNConfig):
        return f"w{cfg.bits}{scope}" + ("" if cfg.symmetric else "asym")
    if isinstance(cfg, FPConfig):
        return f"we{cfg.exp_bits}m{cfg.man_bits}b{cfg.block_size}"
    if isinstance(cfg, TernaryConfig):
        return f"w1.58{scope}"
    return f"w{cfg.method}b{cfg.block_size}"  # nf4, fp4


def bitnet_spec() -> QATSpec:
    """BitNet b1.58: ternary absmean weights (one scale per matrix), 8-bit per-token absmax activations."""
    return QATSpec(weights=TernaryConfig(), per_tensor=True, activations=ActSpec(8), preset=BITNET)


def parse_qat(precision, table, where: str) -> QATSpec | None:
    """The model's ``QATSpec`` from its ``precision`` shorthand and/or ``[models.qat]`` table; None
    for a 16-bit model. Every problem is one ``QidlabError`` starting with ``where``."""
    if precision is not None and table is not None:
        raise QidlabError(f"{where}: give either precision = {precision!r} or a [models.qat] table, not both")
    if precision is not None:
        if precision != BITNET:
            raise QidlabError(f"{where}: unknown precision {precision!r} (known: {BITNET!r}; other low-bit "
                              "settings go in a [models.qat] table)")
        return bitnet_spec()
    if table is None:
        return None
    if not isinstance(table, dict):
        raise QidlabError(f"{where}: qat must be a table (weights, activations, kv)")
    check_table(table, QAT_KEYS, where, "[models.qat]")
    if not table:
        raise QidlabError(f"{where}: [models.qat] needs weights, activations or kv")
    weights, per_tensor = _weights(table.get("weights"), where)
    return QATSpec(weights=weights, per_tensor=per_tensor, activations=_act(table.get("activations"), where,
                                                                            "activations"),
                   kv=_act(table.get("kv"), where, "kv"))


def _weights(t, where: str) -> tuple[QuantConfig | None, bool]:
    if t is None:
        return None, False
    if not isinstance(t, dict) or "method" not in t:
        raise QidlabError(f"{where}: qat.weights must be a table with a method ({', '.join(WEIGHT_METHODS)})")
    t = dict(t)
    per_tensor = t.pop("per_tensor", False)
    if not isinstance(t["method"], str) or t["method"] not in WEIGHT_METHODS:
        raise QidlabError(f"{where}: qat.weights method {t['method']!r} cannot be trained through (QAT takes "
                          f"the calibration-free grids: {', '.join(WEIGHT_METHODS)})")
    if "modules" in t:
        raise QidlabError(f"{where}: qat.weights takes no modules: QAT rounds every linear of the decoder blocks")
    try:
        cfg = config_from_dict(t)
    except QidlabError as exc:
        raise QidlabError(f"{where}: qat.weights: {exc}") from None
    if getattr(cfg, "backend", "qidlab") != "qidlab":
        raise QidlabError(f"{where}: qat.weights backend must be 'qidlab' (the grid is applied in every forward)")
    if not isinstance(per_tensor, bool):
        raise QidlabError(f"{where}: qat.weights per_tensor must be true or false, got {per_tensor!r}")
    if per_tensor and (cfg.method not in ("rtn", "ternary") or cfg.group_size is not None):
        raise QidlabError(f"{where}: qat.weights per_tensor = true is for rtn and ternary without group_size")
    return cfg, per_tensor


def _act(t, where: str, key: str) -> ActSpec | None:
    if t is None:
        return None
    if not isinstance(t, dict):
        raise QidlabError(f"{where}: qat.{key} must be a table {{ bits = 8 }}")
    check_table(t, ACT_KEYS, where, f"qat.{key}")
    bits, group = t.get("bits"), t.get("group_size")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise QidlabError(f"{where}: qat.{key} bits must be an integer 2..8, got {bits!r}")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise QidlabError(f"{where}: qat.{key} group_size must be a positive integer, got {group!r}")
    return ActSpec(bits, group)


def qat_from_dict(d: dict | None) -> QATSpec | None:
    """``QATSpec.to_dict()`` output (as in a checkpoint's ``qidlab.json``) back to a ``QATSpec``."""
    if d is None:
        return None
    if d.get("preset") == BITNET:
        return bitnet_spec()
    w = config_from_dict(d["weights"]) if d.get("weights") else None
    act = ActSpec(**d["activations"]) if d.get("activations") else None
    kv = ActSpec(**d["kv"]) if d.get("kv") else None
    return QATSpec(weights=w, per_tensor=bool(d.get("per_tensor")), activations=act, kv=kv)
