"""bitsandbytes 4-bit on the CPU against qidlab's fake-quantized model (docs/interop.md, "Two things
bitsandbytes 0.50.2 does on the CPU"); not a CI test. For SRC (a checkpoint folder) and nf4 and fp4:
writes OUT/<method>/{fake,bitsandbytes} with `qidlab quantize`, then prints the largest logit of the
fake folder and the max |logit difference| from it of

* the bitsandbytes folder as transformers loads it (bitsandbytes' default CPU forward: bf16 where the
  CPU has AVX512-BF16), and with that kernel off (``bnb_exact_cpu``);
* the fake folder quantized by transformers itself (``BitsAndBytesConfig``, compute dtype float32),
  without and with double quantization (kernel off).

    PYTHONPATH=src python bench/bnb_cpu.py SRC OUT
"""

import sys
from pathlib import Path


def logits(folder, ids, exact: bool, **quant):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from qidlab.checkpoints.load import bnb_exact_cpu

    kw = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32,
                                                    llm_int8_skip_modules=["lm_head", "embed_out"], **quant)} if quant else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kw)
    if exact:
        bnb_exact_cpu(model)
    with torch.no_grad():
        return model(ids).logits


def main(src: str, out: str) -> None:
    import torch

    from qidlab.cli import main as qidlab

    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    for method in ("nf4", "fp4"):
        base = Path(out) / method
        for fmt in ("fake", "bitsandbytes"):
            if not (base / fmt).exists():
                qidlab(["quantize", src, "--method", method, "--format", fmt, "--out", str(base / fmt)])
        fake = logits(base / "fake", ids, exact=False)
        rows = {"bitsandbytes folder, default CPU forward": logits(base / "bitsandbytes", ids, exact=False),
                "bitsandbytes folder, bf16 kernel off": logits(base / "bitsandbytes", ids, exact=True),
                "fake folder quantized by transformers": logits(base / "fake", ids, True, bnb_4bit_quant_type=method),
                "the same, double quantization": logits(base / "fake", ids, True, bnb_4bit_quant_type=method,
                                                        bnb_4bit_use_double_quant=True)}
        print(f"{method}: largest |logit| {float(fake.abs().max()):.4f}")
        for what, got in rows.items():
            print(f"  {what}: max |difference| {float((got - fake).abs().max()):.4g}")


if __name__ == "__main__":
    main(*sys.argv[1:])
