"""What a quantization config declares about its method (``needs_calibration``, ``integer_codes``,
``supports_qat``, ``rounds_weights``) agrees with what the method does; the 16-bit reference is a
config whose stored form and hash are those of the sweep's former magic dict; per-channel grouping
has one spelling, and sibling bit widths one key."""

from __future__ import annotations

import copy

import pytest

from qidlab.errors import QidlabError
from qidlab.quantize.config import (METHODS, PER_CHANNEL, AWQConfig, FP4Config, FPConfig, GPTQConfig,
                                    NF4Config, Reference16, RTNConfig, TernaryConfig, config_from_dict,
                                    parse_group_size)
from qidlab.store import config_hash

ONE_PER_METHOD = [RTNConfig(4, group_size=16), GPTQConfig(3, group_size=16), AWQConfig(4, group_size=16),
                  NF4Config(block_size=32), FP4Config(block_size=32), FPConfig(2, 1, block_size=32),
                  TernaryConfig()]


def test_one_config_per_method_is_tested():
    assert sorted(c.method for c in ONE_PER_METHOD) == sorted(METHODS)


def test_the_reference_is_stored_as_the_former_dict():
    ref = Reference16()
    assert ref.to_dict() == {"method": "none", "bits": 16} and ref.columns() == {"method": "none", "bits": 16}
    assert config_hash(ref.to_dict()) == config_hash({"method": "none", "bits": 16}) == "5d581a708888b05a"
    assert ref == Reference16() and not ref.rounds_weights and ref["bits"] == 16
    assert all(c.rounds_weights for c in METHODS.values())
    assert "none" not in METHODS  # not a method a study or quantize_ takes
    with pytest.raises(QidlabError, match="no modules"):
        Reference16(modules=("*.mlp.*",))


def test_capabilities_are_what_the_code_of_each_method_needs():
    assert {m for m, c in METHODS.items() if c.needs_calibration} == {"gptq", "awq"}
    assert {m for m, c in METHODS.items() if c.integer_codes} == {"rtn", "gptq", "awq"}
    assert {m for m, c in METHODS.items() if c.supports_qat} == {"rtn", "fp", "ternary", "nf4", "fp4"}


def test_per_channel_has_one_user_spelling():
    assert PER_CHANNEL == "channel" and parse_group_size(PER_CHANNEL) is None
    assert parse_group_size(32) == 32 and parse_group_size(None) is None
    assert RTNConfig(4, group_size=parse_group_size(PER_CHANNEL)).columns()["group_size"] is None


def test_siblings_differ_only_in_bits():
    a = GPTQConfig(2, group_size=32, shared_hessian=True)
    assert a.sibling_key() == GPTQConfig(4, group_size=32, shared_hessian=True).sibling_key()
    assert a.sibling_key() != GPTQConfig(4, group_size=64, shared_hessian=True).sibling_key()
    assert a.sibling_key() != GPTQConfig(2, group_size=32).sibling_key()
    assert a.sibling_key() != RTNConfig(2, group_size=32).sibling_key()
    hash(a.sibling_key())
    assert GPTQConfig(3, modules=["*.mlp.*"], shared_hessian=True).sibling_key() == \
        GPTQConfig(2, modules=("*.mlp.*",), shared_hessian=True).sibling_key()


def test_a_config_reads_like_its_dict():
    cfg = config_from_dict({"method": "rtn", "bits": 3, "group_size": None})
    assert (cfg["method"], cfg["bits"], cfg["group_size"], cfg["symmetric"]) == ("rtn", 3, None, True)
    with pytest.raises(KeyError):
        cfg["block_size"]


# ---- what each method does, on a tiny model ------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch = pytest.importorskip("torch")
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                        vocab_size=128, max_position_embeddings=64)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calib():
    import torch

    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cfg", ONE_PER_METHOD, ids=lambda c: c.method)
def test_needs_calibration_and_integer_codes(model, calib, cfg):
    from qidlab.quantize import quantize_, quantized_state

    m = copy.deepcopy(model)
    if cfg.needs_calibration:
        with pytest.raises(QidlabError, match="calibration"):
            quantize_(m, cfg)
        report = quantize_(m, cfg, calib)
    else:
        report = quantize_(m, cfg)  # calibration-free: no token ids needed
    if cfg.integer_codes:
        assert any(k.endswith(".weight_codes") for k in quantized_state(m, report))
    else:
        with pytest.raises(QidlabError, match="integer codes exist for rtn, gptq and awq, not"):
            quantized_state(m, report)


@pytest.mark.parametrize("cfg", ONE_PER_METHOD, ids=lambda c: c.method)
def test_supports_qat_is_what_training_rounds_through(cfg):
    pytest.importorskip("torch")
    from qidlab.train import lowbit
    from qidlab.train.precision import parse_qat

    assert (type(cfg) in lowbit._GRIDS) == cfg.supports_qat
    table = {"weights": {k: v for k, v in cfg.to_dict().items() if k != "modules"}}
    if cfg.supports_qat:
        assert parse_qat(None, table, "m").weights == cfg
        lowbit.weight_fake_quant(cfg)
    else:
        with pytest.raises(QidlabError, match="cannot be trained through"):
            parse_qat(None, table, "m")
        with pytest.raises(QidlabError, match="not a weight grid QAT can train through"):
            lowbit.weight_fake_quant(cfg)
