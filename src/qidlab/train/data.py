"""The suite's data: one tokenizer, one token file, one batch order shared by every model's main run.

Files, under ``<out>/<suite>/_data/``::

    tokenizer/      a PreTrainedTokenizerFast (special tokens <|bos|> 0, <|eos|> 1, <|pad|> 2 when trained here),
                    whose BOS is <|eos|> (``bos_token_id`` 1): BOS = EOS, below
    tokens.bin      the train split as one memory-mapped array (uint16, or uint32 above 65,535 tokens):
                    the documents in ``document_order(n_docs, seed)``, each followed by <|eos|>
    data.json       what they were made from (corpus hash, tokenizer, seed) and counts; a later run with
                    the same key reuses the files

and, for each seed ``S`` of a suite whose seed runs read documents (``seed_data = "documents"``, the
default; ``branches.py``), ``<out>/<suite>/_data-seed<S>/`` laid out the same way by the same code:
the suite's tokenizer (copied from ``_data/tokenizer``, BOS as it is there), the same train documents
and <|eos|> separators in ``document_order(n_docs, S)``; its ``data.json`` key adds ``S`` and the
sha256 of the suite's ``tokenizer.json``. A seed run reads it with ``batch_indices(..., S)``: the
procedure of a main run of the suite with ``seed = S``.

BOS = EOS, as Pythia's tokenizer has it. Training reads ``doc <|eos|> doc <|eos|> ...``, so every
document but the first follows <|eos|>; the scorer (``qidlab.evaluate.score``) prepends the
tokenizer's BOS to each eval document, which is then exactly the context a document starts from in
training, and lm-evaluation-harness's rolling loglikelihood (BOS, else EOS) scores the same way.
The alternative, a <|bos|> before every training document, was not taken: it adds a token per
document to D whose prediction (after <|eos|>) is trivial, lowering the training loss without
learning anything, and departs from the Pythia suites the paper measured. The <|bos|> token stays
in the vocabulary (ids are unchanged) but is never used. Suites made before this (``data.json``
without ``bos_is_eos``) keep their tokenizer, whose <|bos|> their models never saw: a later run
reuses it, so a suite is never half one convention and half the other.

Batches (pure, ``batch_indices``): the token array is cut into ``n_seqs = n_tokens // seq_len``
sequences; step ``s`` takes global sequence numbers ``s * batch_size + b``; number ``g`` is
sequence ``g % n_seqs`` in the first pass, and ``permutation_{seed, epoch}[g % n_seqs]`` in pass
``epoch = g // n_seqs`` > 0. Every main run of a suite thus sees the same batches in the same order;
a seed run its own file's by the same rule with its seed (with ``seed_data = "sequences"``: its own
permutation of the suite's sequences, ``branches.run_sequences``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from qidlab.documents import load_manifest, read_documents
from qidlab.errors import QidlabError
from qidlab.files import open_atomic, write_json
from qidlab.provenance import file_sha256

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
DATA_DIR = "_data"
FORMAT = 1


def document_order(n_docs: int, seed: int) -> np.ndarray:
    """The seeded order in which the train documents are laid into the token file."""
    return np.random.default_rng([seed, 0]).permutation(n_docs)


@lru_cache(maxsize=8)
def _epoch_permutation(n_seqs: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, 1, epoch]).permutation(n_seqs)


def batch_indices(step: int, batch_size: int, n_seqs: int, seed: int) -> np.ndarray:
    """Sequence indices (into the token file cut in ``n_seqs`` sequences) of the batch of ``step``."""
    g = step * batch_size + np.arange(batch_size)
    epoch, within = g // n_seqs, g % n_seqs
    out = within.copy()
    for e in np.unique(epoch[epoch > 0]):
        sel = epoch == e
        out[sel] = _epoch_permutation(n_seqs, seed, int(e))[within[sel]]
    return out


def train_tokenizer(docs, vocab_size: int):
    """A byte-level BPE trained on ``docs`` (``PreTrainedTokenizerFast``, no automatic BOS/EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tokenizer_from_file(path: Path):
    """A ``tokenizer.json`` as a ``PreTrainedTokenizerFast``; <|bos|>/<|eos|>/<|pad|> are added if missing."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if not Path(path).is_file():
        raise QidlabError(f"tokenizer file does not exist: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad JSON
        raise QidlabError(f"{path}: not a tokenizers JSON ({exc})") from None
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


@dataclass
class TokenData:
    """The prepared data of a suite (module docstring)."""

    folder: Path
    tokenizer: object
    tokens: np.ndarray  # memory-mapped, 1-D
    info: dict

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def batch(self, step: int, batch_size: int, seq_len: int, seed: int):
        """The (batch_size, seq_len) int64 tensor of token ids of ``step``."""
        import torch

        idx = batch_indices(step, batch_size, self.n_tokens // seq_len, seed)
        rows = np.stack([self.tokens[i * seq_len:(i + 1) * seq_len] for i in idx])  # (B, T)
        return torch.from_numpy(rows.astype(np.int64))


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_folder(seed: int | None = None) -> str:
    """The folder name of the suite's data (``_data``) or of seed ``seed``'s own (``_data-seed<S>``)."""
    return DATA_DIR if seed is None else f"{DATA_DIR}-seed{seed}"


def prepare_data(config, suite_dir: Path, log=None, *, seed: int | None = None,
                 suite_data: TokenData | None = None) -> TokenData:
    """Tokenizer and token file of ``config`` (a ``SuiteConfig``) under ``suite_dir/_data``, made or reused;
    with ``seed``: seed ``seed``'s own under ``suite_dir/_data-seed<S>`` (module docstring), with the
    tokenizer of ``suite_data`` (the suite's ``TokenData``; prepared here when None)."""
    from transformers import AutoTokenizer

    manifest = load_manifest(config.corpus)
    if not manifest.documents.get("train"):
        raise QidlabError(f"{config.corpus} has no train documents (recipe {manifest.recipe!r} is eval-only); "
                          "train on another corpus")
    if seed is not None and suite_data is None:
        suite_data = prepare_data(config, suite_dir, log)
    train_sha = manifest.files[manifest.split_path("train").name]["sha256"]
    tok_src = ({"vocab_size": config.vocab_size} if config.tokenizer_path is None else
               {"path": str(config.tokenizer_path), "sha256": _file_sha(config.tokenizer_path)})
    key = {"format": FORMAT, "corpus_train_sha256": train_sha, "tokenizer": tok_src,
           "seed": config.seed if seed is None else seed}
    if seed is not None:  # the suite's tokenizer, as its _data holds it
        key["suite_tokenizer_sha256"] = file_sha256(suite_data.folder / "tokenizer" / "tokenizer.json")
    folder = suite_dir / data_folder(seed)
    info_path = folder / "data.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        bin_path = folder / "tokens.bin"
        if info.get("key") == key and bin_path.is_file() and \
                bin_path.stat().st_size == info["n_tokens"] * np.dtype(info["dtype"]).itemsize:
            tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
            tokens = np.memmap(bin_path, dtype=info["dtype"], mode="r")
            return TokenData(folder, tokenizer, tokens, info)
        info_path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    docs = read_documents(config.corpus, "train")
    tokenizer = _tokenizer(config, docs, suite_data, log)
    tokenizer.save_pretrained(folder / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)  # as loaders see it
    eos = tokenizer.eos_token_id
    dtype = np.uint16 if len(tokenizer) <= 2 ** 16 else np.uint32
    order = document_order(len(docs), key["seed"])
    if log and seed is not None:
        log(f"laying the {len(docs)} train documents in seed {seed}'s order into {folder}")
    backend = tokenizer.backend_tokenizer
    n_tokens = 0
    with open_atomic(folder / "tokens.bin", "wb") as fh:
        for start in range(0, len(docs), 512):
            chunk = [docs[i] for i in order[start:start + 512]]
            for enc in backend.encode_batch(chunk, add_special_tokens=False):
                ids = np.asarray(enc.ids + [eos], dtype=dtype)
                fh.write(ids.tobytes())
                n_tokens += len(ids)
    info = {"key": key, "dtype": np.dtype(dtype).name, "n_tokens": n_tokens, "n_docs": len(docs),
            "vocab_size": len(tokenizer), "eos_token_id": eos, "bos_token_id": tokenizer.bos_token_id,
            "bos_is_eos": tokenizer.bos_token_id == eos,
            "document_order_sha256": _sha256_bytes(order.astype(np.int64).tobytes()),
            "corpus": str(config.corpus), "corpus_licenses": manifest.licenses}
    if suite_data is not None and n_tokens != suite_data.n_tokens:  # the same documents and tokenizer
        raise QidlabError(f"{folder}: {n_tokens:,} tokens, but the suite's {suite_data.folder} has "
                          f"{suite_data.n_tokens:,}; delete both and train again")
    write_json(info_path, info)
    tokens = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r")
    return TokenData(folder, tokenizer, tokens, info)


def _tokenizer(config, docs: list[str], suite_data: TokenData | None, log):
    """The tokenizer a data folder is made with: the suite's (a seed's folder: BOS as the suite's
    has it), else a BPE trained on ``docs`` or the suite file's, with BOS = EOS (module docstring)."""
    if suite_data is not None:
        return suite_data.tokenizer
    if config.tokenizer_path is None:
        if log:
            log(f"training a byte-level BPE of {config.vocab_size} tokens on {len(docs)} documents")
        tokenizer = train_tokenizer(docs, config.vocab_size)
    else:
        tokenizer = tokenizer_from_file(config.tokenizer_path)
    tokenizer.bos_token = tokenizer.eos_token  # BOS = EOS (module docstring)
    return tokenizer


def _file_sha(path: Path) -> str:
    if not Path(path).is_file():
        raise QidlabError(f"tokenizer file does not exist: {path}")
    return file_sha256(path)
