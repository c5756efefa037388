"""Quantization configs: one small, frozen, validated dataclass per method.

The type of the config chooses the method in ``quantize_`` (as torchao does). Every config has
``method`` (its registered name), ``to_dict()`` (JSON-ready, with ``method``), ``key()`` (a
stable string for the store) and ``columns()`` (the data-contract columns it fixes: ``bits``,
``group_size``, ``exp_bits``, ``man_bits``, ``block_size``, ``method``).
``config_from_dict`` rebuilds a config from ``to_dict()`` output. ``Reference16`` is the 16-bit
model itself (method ``"none"``), the reference every quantized score is compared with.

What a method needs and has is declared on its class (``needs_calibration``, ``integer_codes``,
``supports_qat``, ``rounds_weights``): the sweep, the quantize command and QAT read them there.

One scale per output channel is ``group_size = None`` in a config (NULL in the store, NaN in a
pandas frame); a study file spells it ``PER_CHANNEL`` (``"channel"``), read by ``parse_group_size``.

This module is pure Python: importing it loads no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qidlab.errors import QidlabError, did_you_mean

__all__ = [
    "QuantConfig", "RTNConfig", "GPTQConfig", "AWQConfig", "NF4Config", "FP4Config",
    "FPConfig", "TernaryConfig", "Reference16", "config_from_dict", "METHODS", "PER_CHANNEL",
    "parse_group_size", "register_method", "method_class", "get_method", "registered_methods",
    "Method", "ENTRY_POINT_GROUP",
]

INT_BITS = range(2, 9)  # integer grids: 2..8 bits (codes fit in int8)
PER_CHANNEL = "channel"  # how a user writes group_size for one scale per output channel (a config's None)


def parse_group_size(value: Any) -> Any:
    """A group size as a user writes it: ``PER_CHANNEL`` becomes None (one scale per output
    channel); any other value is returned unchanged, for the config to validate."""
    return None if value == PER_CHANNEL else value


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    ok = ok and (hi is None or value <= hi)
    if not ok:
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise QidlabError(f"{name} must be an integer {span}, got {value!r}")


def _check_group(value: Any, name: str = "group_size") -> None:
    if value is not None:
        _check_int(name, value, 1)


@dataclass(frozen=True)
class QuantConfig:
    """Base of every config.

    ``modules``: ``None`` quantizes every ``nn.Linear`` inside the decoder blocks (embeddings and
    ``lm_head`` are kept); otherwise a tuple of ``fnmatch`` patterns on full module names
    (e.g. ``("*.mlp.*",)``), matched against every ``nn.Linear`` of the model.
    """

    method: ClassVar[str] = ""
    # capabilities of the method (read by the sweep, the quantize command, QAT and plug-ins):
    needs_calibration: ClassVar[bool] = False  # quantize_ needs calibration token ids
    integer_codes: ClassVar[bool] = False  # quantized_state exports its integer codes, scales, zeros
    supports_qat: ClassVar[bool] = False  # QAT can round through its grid in training (train.lowbit)
    rounds_weights: ClassVar[bool] = True  # False: the 16-bit model itself (Reference16)
    modules: tuple[str, ...] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.modules is not None:
            mods = self.modules
            if isinstance(mods, str):
                mods = (mods,)
            mods = tuple(mods)
            if not mods or not all(isinstance(m, str) and m for m in mods):
                raise QidlabError(f"modules must be non-empty name patterns, got {self.modules!r}")
            object.__setattr__(self, "modules", mods)
        self._validate()

    def _validate(self) -> None:  # overridden per method
        pass

    def to_dict(self) -> dict[str, Any]:
        """``{"method": ..., field: value, ...}``, JSON-ready (``modules`` as a list or None)."""
        d: dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def key(self) -> str:
        """Stable identifier, e.g. ``rtn:bits=4,group_size=128,modules=None,symmetric=True``."""
        d = self.to_dict()
        method = d.pop("method")
        parts = []
        for k in sorted(d):
            v = d[k]
            v = "|".join(v) if isinstance(v, list) else v
            parts.append(f"{k}={v}")
        return f"{method}:" + ",".join(parts)

    def __getitem__(self, name: str) -> Any:
        """A value of ``to_dict()`` by name (``cfg["method"]``, ``cfg["bits"]``), as a config dict reads."""
        return self.to_dict()[name]

    def sibling_key(self) -> tuple:
        """What this config shares with the configs that differ from it only in ``bits`` (hashable):
        shared-Hessian GPTQ computes such siblings in one pass."""
        return (self.method, *((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                               if f.name != "bits"))

    @property
    def w_bits(self) -> float:
        """Bits per weight of the codes (scales not counted)."""
        return float(getattr(self, "bits"))

    def columns(self) -> dict[str, Any]:
        """The data-contract columns this config fixes (docs/architecture.md)."""
        return {"method": self.method, "bits": self.w_bits,
                "group_size": getattr(self, "group_size", None)}


@dataclass(frozen=True)
class _IntConfig(QuantConfig):
    integer_codes: ClassVar[bool] = True
    bits: int
    group_size: int | None = None  # None: one scale per output channel

    def _validate(self) -> None:
        _check_int("bits", self.bits, INT_BITS.start, INT_BITS.stop - 1)
        _check_group(self.group_size)


@dataclass(frozen=True)
class RTNConfig(_IntConfig):
    """Round-to-nearest on an integer grid: ``bits`` (2..8), ``group_size`` weights per scale
    along the input dimension (None: per output channel), symmetric or asymmetric (zero point)."""

    method: ClassVar[str] = "rtn"
    supports_qat: ClassVar[bool] = True
    symmetric: bool = True

    def _validate(self) -> None:
        super()._validate()
        if not isinstance(self.symmetric, bool):
            raise QidlabError(f"symmetric must be true or false, got {self.symmetric!r}")


@dataclass(frozen=True)
class GPTQConfig(_IntConfig):
    """GPTQ (Frantar et al. 2022) on the same integer grid as RTN.

    ``damp``: fraction of mean(diag H) added to the diagonal; ``act_order``: columns in order of
    decreasing diag H (groups then use static scales); ``static_groups``: every group's scale
    from the unquantized weights before the sweep (as llm-compressor), instead of when the sweep
    reaches the group (IST-DASLab/gptq's default);
    ``block_size``: columns per lazy batch; ``true_sequential``: quantize the linears of a block
    in execution order, recomputing inputs after each; ``shared_hessian``: one Hessian per layer
    from the 16-bit model, reusable for every bit width (``collect_hessians``).
    ``backend``: ``"qidlab"`` (ours) or ``"llmcompressor"`` (llm-compressor's own ``GPTQModifier``
    + ``oneshot``; optional dependency that pins its own transformers). llm-compressor chooses
    group scales before the sweep and calibrates every linear of a decoder layer from one pass
    (then propagates the quantized layer's outputs), which is ``static_groups=True,
    true_sequential=False`` here: that backend requires those two settings, so a stored config
    says what ran.
    """

    method: ClassVar[str] = "gptq"
    needs_calibration: ClassVar[bool] = True
    symmetric: bool = True
    damp: float = 0.01
    act_order: bool = False
    static_groups: bool = False
    block_size: int = 128
    true_sequential: bool = True
    shared_hessian: bool = False
    backend: str = "qidlab"

    def _validate(self) -> None:
        super()._validate()
        if self.backend not in ("qidlab", "llmcompressor"):
            raise QidlabError(f"backend must be 'qidlab' or 'llmcompressor', got {self.backend!r}")
        if self.backend == "llmcompressor" and (self.true_sequential or not self.static_groups
                                                or self.shared_hessian):
            raise QidlabError("backend 'llmcompressor' quantizes as static_groups = true, true_sequential = "
                              "false, shared_hessian = false: set those three")
        for name in ("symmetric", "act_order", "static_groups", "true_sequential",
                     "shared_hessian"):
            if not isinstance(getattr(self, name), bool):
                raise QidlabError(f"{name} must be true or false, got {getattr(self, name)!r}")
        d = self.damp
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not (0 < d < 1):
            raise QidlabError(f"damp must be a number in (0, 1), got {d!r}")
        _check_int("block_size", self.block_size, 1)


@dataclass(frozen=True)
class AWQConfig(_IntConfig):
    """AWQ (Lin et al. 2024): per-input-channel scales s = mean|x|^a, a searched on
    ``n_grid`` points of [0, 1), then RTN of W*s (asymmetric, as AWQ) folded back: Q(W*s)/s.

    ``duo_scaling``: s = mean|x|^a / mean(|W| / group absmax)^(1-a), AutoAWQ's default (False:
    llm-awq's mean|x|^a). ``clip``: AWQ's clipping search on W*s per quantization group
    (llm-awq and AutoAWQ do it by default; query/key projections are not clipped).
    Each linear gets its own scales (AutoAWQ shares one s between linears that read the same
    input, e.g. q/k/v: docs/crosschecks.md).

    ``backend``: ``"qidlab"`` (the above) or ``"autoawq"`` (AutoAWQ itself searches and clips,
    its scales shared as it shares them; optional dependency; every block linear, 20 exponents;
    ``qidlab.quantize.autoawq``)."""

    method: ClassVar[str] = "awq"
    needs_calibration: ClassVar[bool] = True
    group_size: int | None = 128
    n_grid: int = 20
    symmetric: bool = False
    duo_scaling: bool = False
    clip: bool = False
    backend: str = "qidlab"

    def _validate(self) -> None:
        super()._validate()
        _check_int("n_grid", self.n_grid, 1)
        for name in ("symmetric", "duo_scaling", "clip"):
            if not isinstance(getattr(self, name), bool):
                raise QidlabError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.backend not in ("qidlab", "autoawq"):
            raise QidlabError(f"backend must be 'qidlab' or 'autoawq', got {self.backend!r}")


@dataclass(frozen=True)
class _Codebook4Config(QuantConfig):
    """``backend``: ``"qidlab"`` (our grids, checked equal to bitsandbytes in the cross-check
    tests) or ``"bitsandbytes"`` (its own ``quantize_4bit``/``dequantize_4bit``; optional
    dependency, runs on CPU and CUDA)."""

    supports_qat: ClassVar[bool] = True
    block_size: int = 64
    backend: str = "qidlab"

    def _validate(self) -> None:
        _check_int("block_size", self.block_size, 1)
        if self.backend not in ("qidlab", "bitsandbytes"):
            raise QidlabError(f"backend must be 'qidlab' or 'bitsandbytes', got {self.backend!r}")

    @property
    def w_bits(self) -> float:
        return 4.0

    def columns(self) -> dict[str, Any]:
        return {"method": self.method, "bits": 4.0, "block_size": self.block_size}


@dataclass(frozen=True)
class NF4Config(_Codebook4Config):
    """NF4 (QLoRA, bitsandbytes): 4-bit NormalFloat codebook, one absmax per ``block_size``
    consecutive weights of the flattened (row-major) matrix, as bitsandbytes' quantize_4bit."""

    method: ClassVar[str] = "nf4"


@dataclass(frozen=True)
class FP4Config(_Codebook4Config):
    """bitsandbytes' FP4 (its e2m1 table, whose smallest non-zero magnitude is 1/192 of the
    absmax, not the IEEE-like subnormal of ``FPConfig(2, 1)``), blocks as ``NF4Config``."""

    method: ClassVar[str] = "fp4"


@dataclass(frozen=True)
class FPConfig(QuantConfig):
    """Floating point ExMy (1 sign bit, ``exp_bits`` E, ``man_bits`` M, subnormals, every code
    finite: no inf/NaN) with one absmax scale per ``block_size`` consecutive weights of the
    flattened matrix: scale = block absmax / largest representable value; round to nearest,
    ties to even. E=0 is a sign-magnitude integer grid."""

    method: ClassVar[str] = "fp"
    supports_qat: ClassVar[bool] = True
    exp_bits: int
    man_bits: int
    block_size: int = 64

    def _validate(self) -> None:
        _check_int("exp_bits", self.exp_bits, 0, 8)
        _check_int("man_bits", self.man_bits, 0, 10)
        if self.exp_bits + self.man_bits < 1:
            raise QidlabError("exp_bits + man_bits must be at least 1 (a sign bit alone has no values)")
        _check_int("block_size", self.block_size, 1)

    @property
    def w_bits(self) -> float:
        return float(1 + self.exp_bits + self.man_bits)

    def columns(self) -> dict[str, Any]:
        return {"method": self.method, "bits": self.w_bits, "exp_bits": self.exp_bits,
                "man_bits": self.man_bits, "block_size": self.block_size}


@dataclass(frozen=True)
class TernaryConfig(QuantConfig):
    """BitNet b1.58 absmean: W' = g * clip(round(W / g), -1, 1), g = mean|W| per group of
    ``group_size`` input weights (None: per output channel). BitNet b1.58 itself uses one g for
    the whole matrix, which is not offered here."""

    method: ClassVar[str] = "ternary"
    supports_qat: ClassVar[bool] = True
    group_size: int | None = None

    def _validate(self) -> None:
        _check_group(self.group_size)

    @property
    def w_bits(self) -> float:
        return math.log2(3)


@dataclass(frozen=True)
class Reference16(QuantConfig):
    """The 16-bit model itself: nothing is rounded; its scores are the reference of every QiD.
    Stored as method ``"none"``, bits 16 (``to_dict()`` is exactly ``{"method": "none", "bits":
    16}``). Not a method a study or ``quantize_`` takes, so not in ``METHODS``."""

    method: ClassVar[str] = "none"
    rounds_weights: ClassVar[bool] = False
    bits: ClassVar[int] = 16

    def _validate(self) -> None:
        if self.modules is not None:
            raise QidlabError("the 16-bit reference rounds no modules: it takes no modules")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "bits": self.bits}

    def columns(self) -> dict[str, Any]:
        return self.to_dict()  # method "none", bits 16: the config is its own columns


METHODS: dict[str, type[QuantConfig]] = {
    c.method: c for c in (RTNConfig, GPTQConfig, AWQConfig, NF4Config, FP4Config, FPConfig,
                          TernaryConfig)
}


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """Rebuild a config from ``to_dict()`` output; unknown methods or fields are one error. The
    method is looked up in the registry (``method_class``): a built-in, a ``register_method``
    plug-in, or one an installed package declares under the ``qidlab.methods`` entry points."""
    if not isinstance(d, dict) or "method" not in d:
        raise QidlabError(f"a quantization config needs a 'method' (one of {', '.join(_REGISTRY)})")
    d = dict(d)
    cls = method_class(d.pop("method"))
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise QidlabError(f"unknown field(s) {', '.join(unknown)} for method '{cls.method}'; "
                          f"allowed: {', '.join(sorted(allowed))}")
    if isinstance(d.get("modules"), list):
        d["modules"] = tuple(d["modules"])
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in d and f.default is dataclasses.MISSING]
    if missing:
        raise QidlabError(f"method '{cls.method}' needs {', '.join(missing)}")
    try:
        return cls(**d)
    except QidlabError:
        raise
    except (TypeError, ValueError) as exc:  # a plug-in's own validation, in one line
        raise QidlabError(f"method '{cls.method}': {exc}") from None


# ---- the method registry ------------------------------------------------------------------
#
# A method is a name, a config class (a frozen dataclass deriving from QuantConfig, whose
# ``method`` ClassVar is the name and whose capability ClassVars say what it needs) and a
# quantizer ``fn(model, config, calibration, report, **options)`` that rounds the linears
# ``select_linears(model, config.modules)`` in place, recording each with
# ``report.replace(name, module, new_weight)`` (options: ``hessians``, ``batch_size``; accept
# ``**_``). ``fn`` may be an object reference "package.module:function", imported on first use
# (the built-ins' live in qidlab.quantize.api, which loads torch).

ENTRY_POINT_GROUP = "qidlab.methods"


@dataclass(frozen=True)
class Method:
    """A registered quantization method; ``origin``: "qidlab" (built-in), a distribution
    (entry point) or "register_method"."""

    name: str
    config_class: type
    fn: Any  # a callable, or an object reference "module:attr" resolved by ``quantizer``
    origin: str = "register_method"

    def quantizer(self):
        """The quantizer function (an object reference imported now)."""
        if callable(self.fn):
            return self.fn
        import importlib

        module, _, attr = str(self.fn).partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


_REGISTRY: dict[str, Method] = {}
_ENTRY_POINTS_LOADED: set[str] = set()  # names whose entry point was tried in this process


def register_method(name: str, config_class: type, fn, *, origin: str = "register_method") -> Method:
    """Make ``name`` a quantization method that studies, ``quantize_`` and ``qidlab quantize`` take.

    ``config_class``: a frozen dataclass deriving from ``QuantConfig``, with ``method = name``
    (a ClassVar) and either a ``bits`` field or a ``w_bits`` property (bits per weight, which the
    store records); its ClassVars ``needs_calibration`` (the sweep gives it calibration token ids),
    ``integer_codes`` and ``rounds_weights`` are read as for the built-ins. ``fn``: the quantizer
    (see above) or its object reference "module:function". Registering the same pair again does
    nothing; a name already taken (a built-in or another plug-in) is one error."""
    have = _REGISTRY.get(name)
    if have is not None:
        if have.config_class is config_class and have.fn == fn:
            return have
        owner = "a built-in method" if have.origin == "qidlab" else f"registered by {have.origin}"
        what = getattr(config_class, "__qualname__", repr(config_class))
        raise QidlabError(f"quantization method {name!r} is {owner}; choose another name for {what} ({origin})")
    _check_method(name, config_class, fn, origin)
    method = Method(name, config_class, fn, origin)
    _REGISTRY[name] = method
    return method


def _check_method(name, cls, fn, origin) -> None:
    """One line for a plug-in that lacks what qidlab needs of a method."""
    where = f"plug-in method {name!r} ({origin})"
    if not isinstance(name, str) or not name or name != name.lower() or name == Reference16.method:
        raise QidlabError(f"{where}: the name must be a non-empty lower-case string other than 'none'")
    if not (isinstance(cls, type) and issubclass(cls, QuantConfig) and dataclasses.is_dataclass(cls)):
        raise QidlabError(f"{where}: the config class must be a dataclass deriving from "
                          f"qidlab.quantize.QuantConfig, got {cls!r}")
    if not cls.__dataclass_params__.frozen:
        raise QidlabError(f"{where}: {cls.__name__} must be frozen (@dataclass(frozen=True)): a config is "
                          "a measurement's identity")
    if cls.method != name:
        raise QidlabError(f"{where}: {cls.__name__}.method is {cls.method!r}; set method: ClassVar[str] = {name!r}")
    has_bits = any(f.name == "bits" for f in dataclasses.fields(cls)) or cls.w_bits is not QuantConfig.w_bits
    if not has_bits:
        raise QidlabError(f"{where}: {cls.__name__} needs a 'bits' field or a w_bits property (bits per "
                          "weight, stored with every measurement)")
    for cap in ("needs_calibration", "integer_codes", "supports_qat", "rounds_weights"):
        if not isinstance(getattr(cls, cap), bool):
            raise QidlabError(f"{where}: {cls.__name__}.{cap} must be True or False")
    if origin != "qidlab" and (cls.supports_qat or not cls.rounds_weights):
        raise QidlabError(f"{where}: {cls.__name__} may not declare supports_qat or rounds_weights = False "
                          "(QAT rounds through qidlab's own grids; only the 16-bit reference rounds nothing)")
    if not (callable(fn) or (isinstance(fn, str) and ":" in fn)):
        raise QidlabError(f"{where}: the quantizer must be a function or a 'module:function' reference, got {fn!r}")


def method_class(name: Any) -> type[QuantConfig]:
    """The config class of method ``name`` (case-insensitive); a name not registered is looked
    up among the installed packages' ``qidlab.methods`` entry points, else one error."""
    return get_method(name).config_class


def get_method(name: Any) -> Method:
    """The registered ``Method`` called ``name`` (entry points loaded on a miss)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY and isinstance(key, str):
        _load_entry_point(key)
    if key not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY, n=1, cutoff=0.6, form=" (did you mean '{}'?)")
        raise QidlabError(f"unknown quantization method {name!r}{hint}; known: {', '.join(_REGISTRY)} "
                          f"(plug-ins: installed packages' {ENTRY_POINT_GROUP!r} entry points)")
    return _REGISTRY[key]


def registered_methods() -> dict[str, Method]:
    """Every method registered so far (built-ins first; entry points are loaded only on a miss)."""
    return dict(_REGISTRY)


def _load_entry_point(name: str) -> None:
    """Register the ``qidlab.methods`` entry point called ``name`` if an installed package declares
    one: it names a ``(ConfigClass, fn)`` pair (or a module that calls ``register_method`` itself)."""
    if name in _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED.add(name)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        dist = getattr(ep.dist, "name", None) or "an installed package"
        origin = f"entry point {ep.name} = {ep.value} of {dist}"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in: one line, whatever it raised (and again next time)
            _ENTRY_POINTS_LOADED.discard(name)
            raise QidlabError(f"quantization method {name!r}: {origin} failed to import "
                              f"({type(exc).__name__}: {exc})") from None
        if name in _REGISTRY:  # the module registered itself on import
            return
        if not (isinstance(obj, tuple) and len(obj) == 2):
            raise QidlabError(f"quantization method {name!r}: {origin} names {type(obj).__name__}, "
                              "not a (ConfigClass, fn) pair")
        register_method(name, obj[0], obj[1], origin=origin)
        return


for _cls in METHODS.values():  # the built-ins register through the same door as plug-ins
    register_method(_cls.method, _cls, f"qidlab.quantize.api:_quantize_{_cls.method}", origin="qidlab")
