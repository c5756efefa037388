"""Quantization stage: ``quantize_(model, config, calibration=None) -> QuantizeReport``.

Weight-only fake quantization of a causal LM's linears, in place; the method is chosen by the
config type (``RTNConfig``, ``GPTQConfig``, ``AWQConfig``, ``NF4Config``, ``FP4Config``,
``FPConfig``, ``TernaryConfig``), or by a plug-in's: ``register_method(name, ConfigClass, fn)``,
or an installed package's ``qidlab.methods`` entry point (docs/plugins.md). Pure grid math is in
``qidlab.quantize.grids``.

The configs import without torch; everything else (``quantize_``, ``collect_hessians``, ...)
loads torch on first use.
"""

from qidlab.quantize.config import (METHODS, AWQConfig, FP4Config, FPConfig, GPTQConfig,
                                    NF4Config, QuantConfig, RTNConfig, TernaryConfig,
                                    config_from_dict, get_method, method_class, register_method,
                                    registered_methods)

_LAZY = {
    "quantize_": "api", "QuantizeReport": "api", "ModuleReport": "api",
    "quantized_state": "api", "dequantize_state": "api", "gptq_shared_weights": "api",
    "collect_hessians": "gptq", "gptq_quantize_layer": "gptq", "HessianAccumulator": "gptq",
    "awq_quantize_layer": "awq", "grids": None,
    "gptq_layer": "gptq", "gptq_shared_blockwise": "gptq_blockwise", "SharedGPTQ": "gptq_blockwise",
    "select_linears": "model", "snapshot_weights": "gptq_blockwise", "snapshot_state": "gptq_blockwise", "restore_weights": "gptq_blockwise",
}

__all__ = ["QuantConfig", "RTNConfig", "GPTQConfig", "AWQConfig", "NF4Config", "FP4Config",
           "FPConfig", "TernaryConfig", "config_from_dict", "METHODS",
           "register_method", "get_method", "method_class", "registered_methods", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'qidlab.quantize' has no attribute {name!r}")
    import importlib

    sub = _LAZY[name]
    if sub is None:
        return importlib.import_module(f"qidlab.quantize.{name}")
    return getattr(importlib.import_module(f"qidlab.quantize.{sub}"), name)
