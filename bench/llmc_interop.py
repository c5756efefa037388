"""llm-compressor <-> qidlab cross-check (docs/crosschecks.md, "compressed-tensors in and out"); not a CI test.

Run in an environment with llm-compressor (it pins its own transformers), e.g. /work/venv-interop:

    python bench/llmc_interop.py save SRC OUT TEXT   # GPTQ W4 g32 of SRC by llm-compressor's oneshot, saved compressed
    python bench/llmc_interop.py logits A B          # max |logit difference| of two folders, as transformers loads them
    python bench/llmc_interop.py bnb SRC nf4 OUT     # transformers' bitsandbytes 4-bit on CPU: in memory, saved, reloaded
"""

import sys
from pathlib import Path


def save(src: str, out: str, text: str) -> None:
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    ids = tok(Path(text).read_text(), add_special_tokens=False)["input_ids"]
    rows = [torch.tensor(ids[i * 32:(i + 1) * 32]) for i in range(16)]  # 16 windows of 32 tokens
    loader = DataLoader([{"input_ids": r, "attention_mask": torch.ones_like(r)} for r in rows], batch_size=1)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
    # the decoder blocks' linears (targets=["Linear"] + ignore=["lm_head"] misnames GPT-NeoX's head: docs/interop.md)
    recipe = GPTQModifier(config_groups={"g": {"targets": [r"re:.*\.layers\.\d+\..*"], "weights": weights}})
    oneshot(model=model, dataset=loader, recipe=recipe, processor=tok)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)


def logits(a: str, b: str) -> None:
    import compressed_tensors
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 300, (4, 48), generator=torch.Generator().manual_seed(0))
    out = []
    for p in (a, b):
        m = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
        with torch.no_grad():
            out.append((type(getattr(m, "hf_quantizer", None)).__name__, m(ids).logits))
    print(f"transformers {transformers.__version__}, compressed-tensors {compressed_tensors.__version__}: "
          f"{b} loaded by {out[1][0]}; max |logit difference| vs {a} = {(out[0][1] - out[1][1]).abs().max().item():.3g}")


def bnb(src: str, quant_type: str, out: str) -> None:
    """Logits of SRC loaded with load_in_4bit (bitsandbytes' Linear4bit), of the folder it saves, reloaded,
    and of SRC with every block linear replaced by bitsandbytes.functional's dequantize_4bit(quantize_4bit(W))
    (blocksize 64: qidlab's NF4/FP4 backend = "bitsandbytes")."""
    import bitsandbytes.functional as F
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_compute_dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg, dtype=torch.float32)
    loaded.save_pretrained(out)
    dense = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for name, mod in dense.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in name:
                packed, state = F.quantize_4bit(mod.weight.contiguous(), blocksize=64, quant_type=quant_type)
                mod.weight.copy_(F.dequantize_4bit(packed, state).reshape(mod.weight.shape))
        ref = dense(ids).logits
        mem = loaded(ids).logits
        again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    print(f"{quant_type}: in memory {(mem - ref).abs().max().item():.3g}, saved and reloaded "
          f"{(again - ref).abs().max().item():.3g} from dequantize_4bit(quantize_4bit(W)); largest logit {ref.abs().max().item():.3g}")


if __name__ == "__main__":
    {"save": save, "logits": logits, "bnb": bnb}[sys.argv[1]](*sys.argv[2:])
