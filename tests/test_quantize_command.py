"""`qidlab quantize`: a quantized checkpoint that transformers loads, with its integer codes."""

import json

import pytest
import torch
from tiny_models import make_tiny_checkpoint, tiny_corpus

from qidlab.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m", steps=40)


def test_rtn_checkpoint_round_trip(checkpoint, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "q"
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "3", "--group-size", "32",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "rtn" and len(doc["modules"]) == 8  # 2 blocks x 4 linears
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    codes = load_file(out / "quantized-codes.safetensors")
    name = doc["modules"][0]["name"]
    c, s, z = codes[f"{name}.weight_codes"], codes[f"{name}.weight_scales"], codes[f"{name}.weight_zeros"]
    assert c.dtype == torch.int8 and int(c.max()) - int(c.min()) < 8  # 3 bits
    w = dict(model.named_modules())[name].weight.detach()
    rebuilt = (s[:, :, None] * (c.float().reshape(c.shape[0], s.shape[1], -1) - z[:, :, None].float())).reshape(c.shape)
    torch.testing.assert_close(rebuilt, w, rtol=1e-5, atol=1e-6)
    meta = json.loads((out / "qidlab-quantization.json").read_text())
    assert meta["provenance"]["versions"]["torch"] and meta["quantization"]["config"]["bits"] == 3


def test_gptq_needs_calibration_and_nothing_is_written(checkpoint, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(checkpoint), "--method", "gptq", "--bits", "3", "--out", str(out)]) == 2
    assert "--calibration" in capsys.readouterr().err and not out.exists()
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "17", "--out", str(out)]) == 2
    assert "bits" in capsys.readouterr().err and not out.exists()
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "3", "--group-size", "48",
                 "--out", str(out)]) == 2
    assert "48" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".q-*")), "no temporary folder left behind"


def test_gptq_with_calibration(checkpoint, tmp_path, capsys):
    text = tmp_path / "calib.txt"
    text.write_text("\n\n".join(tiny_corpus(40, seed=3)))
    out = tmp_path / "g"
    assert main(["quantize", str(checkpoint), "--method", "gptq", "--bits", "4", "--group-size", "32",
                 "--calibration", str(text), "--n-samples", "4", "--seq-len", "32", "--out", str(out)]) == 0
    assert (out / "quantized-codes.safetensors").exists() and (out / "model.safetensors").exists()


def test_other_config_fields_through_set(checkpoint, tmp_path, capsys):
    out = tmp_path / "asym"
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "3", "--group-size", "32",
                 "--set", "symmetric=false", "--out", str(out), "--json"]) == 0
    meta = json.loads((out / "qidlab-quantization.json").read_text())
    assert meta["quantization"]["config"]["symmetric"] is False
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "3", "--set", "symmetric=maybe",
                 "--out", str(bad)]) == 2
    assert "symmetric must be true or false" in capsys.readouterr().err and not bad.exists()
    assert main(["quantize", str(checkpoint), "--method", "rtn", "--bits", "3", "--set", "nonsense",
                 "--out", str(bad)]) == 2
    assert "expects NAME=VALUE" in capsys.readouterr().err and not bad.exists()
