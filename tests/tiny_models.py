"""Tiny, offline, deterministic language models for tests: corpus, tokenizer, trained checkpoints.

Everything here is generated on the spot (no hub, no downloads) and written only under the path
a caller gives. ``make_tiny_checkpoint`` trains for a few seconds on 2 CPU cores, long enough that
the model has learnt the corpus's grammar, so quantizing its weights visibly raises its loss.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

# A small vocabulary and grammar: English-like text with structure a tiny model can learn.
_NOUNS = ("cat dog bird model river city teacher student engine garden window letter tree "
          "number signal market farmer doctor machine forest kernel").split()
_ADJS = "small large quiet bright old new red green quick slow heavy simple strange early".split()
_VERBS = "sees finds moves likes builds follows reads carries watches trains measures opens".split()
_PREPS = "near under over behind beside inside through across".split()
_ADVS = "slowly often never always quietly rarely".split()
_NAMES = "Alice Bob Carol Dave Erin Frank Grace Heidi".split()

ARCHS = ("gpt_neox", "llama", "qwen2")


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block, then restore the previous setting.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP
    threads contend with other processes and run tens of times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sentence(rng: random.Random) -> str:
    form = rng.randrange(4)
    np1 = f"the {rng.choice(_ADJS)} {rng.choice(_NOUNS)}"
    np2 = f"the {rng.choice(_NOUNS)}"
    if form == 0:
        s = f"{np1} {rng.choice(_VERBS)} {np2}"
    elif form == 1:
        s = f"{rng.choice(_NAMES)} {rng.choice(_ADVS)} {rng.choice(_VERBS)} {np1} {rng.choice(_PREPS)} {np2}"
    elif form == 2:
        s = f"{np1} {rng.choice(_PREPS)} {np2} {rng.choice(_VERBS)} {rng.randrange(2, 100)} {rng.choice(_NOUNS)}s"
    else:
        s = f"{rng.choice(_NAMES)} says that {np1} {rng.choice(_VERBS)} {np2}"
    return s[0].upper() + s[1:] + rng.choice(".....!?")


def tiny_corpus(n_docs: int = 200, seed: int = 0) -> list[str]:
    """``n_docs`` English-like documents (2-12 sentences each), identical on every machine.

    Uses ``random.Random(seed)``, whose integer-seeded sequence is stable across Python versions.
    """
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(2, 12))) for _ in range(n_docs)]


def write_study_texts(root: Path, n_docs: int, n_eval: int, seed: int = 1) -> None:
    """``root/eval.txt`` (the first ``n_eval`` of ``tiny_corpus(n_docs, seed)``) and ``root/train.txt``
    (the rest), documents separated by blank lines: a study's eval set and calibration source."""
    docs = tiny_corpus(n_docs, seed=seed)
    (Path(root) / "eval.txt").write_text("\n\n".join(docs[:n_eval]))
    (Path(root) / "train.txt").write_text("\n\n".join(docs[n_eval:]))


def tiny_corpus_folder(root: Path, n_docs: int = 300, *, out: Path | None = None, compress: bool = False) -> Path:
    """``out`` (default ``root/corpus``): a qidlab corpus (recipe ``files``) of ``tiny_corpus(n_docs)``,
    for training suites; its documents written to ``root/docs.jsonl`` first."""
    from qidlab.corpus import build_corpus

    docs = Path(root) / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in tiny_corpus(n_docs)))
    out = Path(root) / "corpus" if out is None else Path(out)
    build_corpus("files", out, files=[docs], compress=compress)
    return out


def train_tokenizer(docs: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``docs``, as a ``PreTrainedTokenizerFast``: the
    trainer's own (``qidlab.train.data.train_tokenizer``). Special tokens ``<|bos|>`` (id 0),
    ``<|eos|>`` (1), ``<|pad|>`` (2); no automatic BOS/EOS."""
    from qidlab.train.data import train_tokenizer as train

    return train(docs, vocab_size)


def tiny_config(arch: str, *, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                max_positions: int = 128):
    """The transformers config of a tiny model of one of ``ARCHS`` (qwen2: GQA and tied embeddings)."""
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, max_position_embeddings=max_positions,
                  bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if arch == "gpt_neox":
        return GPTNeoXConfig(intermediate_size=4 * hidden, tie_word_embeddings=False, **common)
    if arch == "llama":
        return LlamaConfig(intermediate_size=3 * hidden, num_key_value_heads=heads,
                           tie_word_embeddings=False, **common)
    if arch == "qwen2":
        return Qwen2Config(intermediate_size=3 * hidden, num_key_value_heads=max(1, heads // 2),
                           tie_word_embeddings=True, **common)
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _as_loaded(tokenizer, arch: str, path: Path):
    """The tokenizer as ``AutoTokenizer`` will load it from a saved ``arch`` checkpoint.

    transformers 5 may pick an architecture's own tokenizer class (Qwen2Tokenizer splits digits
    and adds ``<|endoftext|>``), so the model is trained with exactly what a loader will see.
    """
    import shutil

    from transformers import AutoTokenizer

    scratch = path / ".tokenizer-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        tiny_config(arch, vocab_size=len(tokenizer)).save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        return AutoTokenizer.from_pretrained(str(scratch), local_files_only=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def make_tiny_checkpoint(path, *, arch: str = "gpt_neox", hidden: int = 64, layers: int = 2, heads: int = 4,
                         steps: int = 150, seed: int = 0, docs: list[str] | None = None,
                         save_steps: list[int] | None = None, vocab_size: int = 512, seq_len: int = 64,
                         batch_size: int = 16, lr: float = 3e-3, max_positions: int = 128,
                         model_name: str | None = None) -> Path:
    """Train a tiny causal LM for ``steps`` AdamW steps and save it as HF folder(s); return ``path``.

    Without ``save_steps``: ``path`` becomes one HF folder (config, ``model.safetensors``,
    tokenizer, ``qidlab.json``). With ``save_steps`` (e.g. ``[0, 50, 150]``; 0 = the
    initialisation): the Pythia layout ``path/<model_name>/step<N>/``. ``qidlab.json`` holds
    ``tokens`` (= step * batch_size * seq_len, the training tokens seen), ``step`` and the recipe.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    docs = tiny_corpus(200, seed=0) if docs is None else docs
    tokenizer = _as_loaded(train_tokenizer(docs, vocab_size), arch, path)
    # one token stream: <bos> doc <eos> <bos> doc <eos> ...
    stream = []
    for doc in docs:
        stream += [tokenizer.bos_token_id, *tokenizer(doc, add_special_tokens=False)["input_ids"],
                   tokenizer.eos_token_id]
    stream = torch.tensor(stream, dtype=torch.long)
    if len(stream) <= seq_len + 1:
        raise ValueError("corpus too small for one training sequence")

    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size=len(tokenizer), hidden=hidden, layers=layers, heads=heads,
                         max_positions=max_positions)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model_name = model_name or f"tiny-{arch}-h{hidden}-l{layers}"
    save_steps = sorted(set(save_steps)) if save_steps is not None else None
    tokens_per_step = batch_size * seq_len

    def save(folder: Path, step: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)  # safetensors by default
        tokenizer.save_pretrained(folder)
        meta = {"tokens": step * tokens_per_step, "step": step, "arch": arch, "seed": seed,
                "tokens_per_step": tokens_per_step, "generator": "tests/tiny_models.py"}
        (folder / "qidlab.json").write_text(json.dumps(meta, indent=1))

    with single_thread():
        _train(model, opt, stream, gen, steps, batch_size, seq_len, save_steps, lambda step: save(
            path / model_name / f"step{step}", step))
    model.eval()
    if save_steps is None:
        save(path, steps)
    return path


def _train(model, opt, stream, gen, steps, batch_size, seq_len, save_steps, save_at) -> None:
    import torch

    for step in range(steps + 1):
        if save_steps is not None and step in save_steps:
            save_at(step)
        if step == steps:
            break
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([stream[s:s + seq_len] for s in starts.tolist()])  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
