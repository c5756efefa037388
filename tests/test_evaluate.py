"""Evaluate stage: eval sets, per-document scoring (windows, BOS, units) and the paired bootstrap."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import make_tiny_checkpoint, single_thread, tiny_corpus, train_tokenizer  # noqa: E402

from qidlab.checkpoints import load_checkpoint  # noqa: E402
from qidlab.errors import QidlabError  # noqa: E402
from qidlab.evaluate import (  # noqa: E402
    DocScores,
    docs_hash,
    evaluate_loss,
    load_eval_set,
    paired_bootstrap_qid,
    score,
    score_windows,
)
from qidlab.evaluate.score import PLAIN_HEAD_TYPES  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny GPT-NeoX trained for 150 steps (a few seconds), loaded back through the loader."""
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("eval") / "gpt", arch="gpt_neox", steps=150)
    return load_checkpoint(folder)


@pytest.fixture(scope="module")
def eval_set():
    return load_eval_set(tiny_corpus(300, seed=7), n_docs=48, seed=0, name="tiny-heldout")


def _rtn(model, bits):
    """Per-row symmetric round-to-nearest of every linear weight (a local stand-in for quantize)."""
    model = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True) / qmax
                w.copy_((w / scale).round().clamp(-qmax - 1, qmax) * scale)
    return model


@pytest.fixture(scope="module")
def scores16(ckpt, eval_set):
    return score(ckpt.model, ckpt.tokenizer, eval_set)


@pytest.fixture(scope="module")
def scores3(ckpt, eval_set):
    return score(_rtn(ckpt.model, 3), ckpt.tokenizer, eval_set)


# ---------------------------------------------------------------- eval sets


def test_text_file_documents_split_on_blank_lines(tmp_path):
    f = tmp_path / "wiki.txt"
    f.write_text("First doc,\nline two.\n\n  \nSecond doc.\n\n\n\nThird doc.\n")
    es = load_eval_set(f)
    assert es.docs == ["First doc,\nline two.", "Second doc.", "Third doc."]
    assert (es.name, es.n_docs, es.n_available, es.complete) == ("wiki", 3, 3, True)
    assert es.source["kind"] == "text" and es.content_hash == docs_hash(es.docs)
    json.dumps(es.source)  # storable as the eval set's source_json


def test_folder_recursive_sorted_hidden_skipped(tmp_path):
    root = tmp_path / "docs"
    (root / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b" / "z.txt").write_text("in b")
    (root / "a.txt").write_text("top a\n\nstill a")
    (root / "c.md").write_text("top c")
    (root / ".hidden").write_text("secret")
    (root / ".git" / "HEAD").write_text("ref")
    es = load_eval_set(root)
    assert es.docs == ["top a\n\nstill a", "in b", "top c"]  # a.txt, b/z.txt, c.md


def test_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"body": "one"}, {"body": None}, {"body": "two"}]) + "\n\n")
    assert load_eval_set(f, text_field="body").docs == ["one", "two"]
    with pytest.raises(QidlabError, match=r"data.jsonl:1: no field 'text'"):
        load_eval_set(f)
    f.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(QidlabError, match=r"data.jsonl:2: field 'text' is int"):
        load_eval_set(f)
    f.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(QidlabError, match=r"data.jsonl:2: not valid JSON"):
        load_eval_set(f)

    p = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["alpha", None, "beta"], "id": [1, 2, 3]}), p)
    es = load_eval_set(p)
    assert es.docs == ["alpha", "beta"] and es.source["kind"] == "parquet"
    with pytest.raises(QidlabError, match=r"no column 'content' \(columns: text, id"):
        load_eval_set(p, text_field="content")


def test_sampling_is_seeded_ordered_and_hashed():
    docs = tiny_corpus(100, seed=3)
    a, b = load_eval_set(docs, n_docs=10, seed=1), load_eval_set(docs, n_docs=10, seed=1)
    assert a.docs == b.docs and a.content_hash == b.content_hash
    c = load_eval_set(docs, n_docs=10, seed=2)
    assert c.docs != a.docs and c.content_hash != a.content_hash
    positions = [docs.index(d) for d in a.docs]
    assert positions == sorted(positions)  # source order kept
    assert (a.n_docs, a.n_available, a.complete) == (10, 100, False)
    full = load_eval_set(docs, n_docs=1000)
    assert (full.n_docs, full.complete, full.docs) == (100, True, docs)
    assert load_eval_set(docs, n_docs=None).docs == docs
    assert docs_hash(["ab", "c"]) != docs_hash(["a", "bc"])  # boundaries are hashed
    assert a.content_hash == docs_hash(a.docs)


def test_max_chars_cuts_documents_at_a_line_break():
    docs = ["line one\nline two\nline three", "short", "nobreakatallhere"]
    cut = load_eval_set(docs, max_chars=14)
    assert cut.docs == ["line one", "short", "nobreakatallhe"]
    assert all(len(d) <= 14 for d in cut.docs)
    assert cut.content_hash == docs_hash(cut.docs) != load_eval_set(docs).content_hash
    assert cut.source["max_chars"] == 14
    with pytest.raises(QidlabError, match="max_chars must be a positive integer"):
        load_eval_set(docs, max_chars=0)


def test_min_chars_and_empty_sets(tmp_path):
    assert load_eval_set(["hello", " x ", "", "a longer one"], min_chars=2).docs == ["hello", "a longer one"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n\n")
    with pytest.raises(QidlabError, match="no documents in .*empty.txt"):
        load_eval_set(empty)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(QidlabError, match="no documents"):
        load_eval_set(tmp_path / "nothing")
    with pytest.raises(QidlabError, match="no documents"):
        load_eval_set(["a", "bb"], min_chars=5)
    with pytest.raises(QidlabError, match="does not exist"):
        load_eval_set(tmp_path / "missing.jsonl")
    with pytest.raises(QidlabError, match="n_docs must be a positive integer"):
        load_eval_set(["a"], n_docs=0)


# ---------------------------------------------------------------- scoring


def _ids(tokenizer, doc):
    return [tokenizer.bos_token_id] + tokenizer(doc, add_special_tokens=False)["input_ids"]


def _hand_nll(model, ids, windows):
    """Sum of -log p(target) over windows [(begin, end, first)], each run alone (no batching)."""
    total = 0.0
    with torch.inference_mode():
        for begin, end, first in windows:
            logits = model(input_ids=torch.tensor([ids[begin:end]])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            for t in range(first, end):
                total -= float(logp[t - 1 - begin, ids[t]])
    return total


def test_scores_count_tokens_and_bytes(ckpt, eval_set, scores16):
    tok = ckpt.tokenizer
    assert len(scores16) == eval_set.n_docs
    expected_tokens = [len(_ids(tok, d)) - 1 for d in eval_set.docs]  # BOS prepended: every doc token
    assert scores16.n_tokens.tolist() == expected_tokens
    assert scores16.n_bytes.tolist() == [len(d.encode()) for d in eval_set.docs]
    assert (scores16.nll_sum > 0).all() and scores16.n_ref_tokens is None
    assert scores16.settings == {"max_length": 128, "stride": 64, "bos": True, "prefix": "bos", "windows": "sliding",
                                 "eval_set_hash": eval_set.content_hash}
    doc = eval_set.docs[5]
    ids = _ids(tok, doc)
    assert len(ids) <= 128
    assert scores16.nll_sum[5] == pytest.approx(_hand_nll(ckpt.model, ids, [(0, len(ids), 1)]), rel=1e-5)


def test_summary_units(scores16):
    s = scores16.summary()
    nll, tokens, nbytes = scores16.nll_sum.sum(), scores16.n_tokens.sum(), scores16.n_bytes.sum()
    assert s["nats_per_token"] == pytest.approx(nll / tokens, rel=1e-12)
    assert s["bits_per_byte"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-12)
    assert (s["n_docs"], s["n_tokens"], s["n_bytes"]) == (48, tokens, nbytes)
    assert "nats_per_ref_token" not in s
    # the model learnt something: far below a uniform guess over its 512 tokens
    assert s["nats_per_token"] < 0.5 * math.log(512)


def test_quantization_raises_loss(scores16, scores3):
    assert scores3.summary()["nats_per_token"] > scores16.summary()["nats_per_token"] + 0.01


def test_batching_and_padding_do_not_change_scores(ckpt, eval_set, scores16):
    one = score(ckpt.model, ckpt.tokenizer, eval_set, batch_size=1)
    np.testing.assert_allclose(one.nll_sum, scores16.nll_sum, rtol=1e-5)
    np.testing.assert_array_equal(one.n_tokens, scores16.n_tokens)
    assert evaluate_loss(ckpt.model, ckpt.tokenizer, eval_set).nll_sum.tolist() == scores16.nll_sum.tolist()


def test_an_eval_set_is_tokenised_once_per_tokenizer(ckpt, eval_set, scores16):
    """The 16-bit model and every quantized copy of a checkpoint score the same token ids; a
    plain list of documents (no content hash) is tokenised every time."""
    import importlib

    score_module = importlib.import_module("qidlab.evaluate.score")

    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner, self.backend_tokenizer = inner, inner.backend_tokenizer
            self.bos_token_id, self.eos_token_id = inner.bos_token_id, inner.eos_token_id
            self.pad_token_id = inner.pad_token_id

        def __call__(self, docs, **kw):
            calls.append(len(docs))
            return self.inner(docs, **kw)

    score_module._ENCODED.clear()
    tok = Counting(ckpt.tokenizer)
    first = score(ckpt.model, tok, eval_set)
    again = score(ckpt.model, tok, eval_set)
    assert len(calls) == 1 and again.nll_sum.tolist() == first.nll_sum.tolist() == scores16.nll_sum.tolist()
    score(ckpt.model, tok, list(eval_set.docs))
    score(ckpt.model, tok, list(eval_set.docs))
    assert len(calls) == 3


@pytest.mark.parametrize("n, width, stride", [(1, 4, 2), (2, 4, 2), (4, 4, 2), (5, 4, 2), (10, 4, 1), (10, 4, 3),
                                              (100, 16, 8), (101, 16, 5), (37, 8, 7)])
def test_score_windows_cover_each_token_once_with_context(n, width, stride):
    windows = score_windows(n, width, stride)
    targets = [t for _, end, first in windows for t in range(first, end)]
    assert sorted(targets) == targets == list(range(1, n))  # every token but the first, once, in order
    for k, (begin, end, first) in enumerate(windows):
        assert 0 <= begin < first <= end <= n and end - begin <= width
        if k > 0:
            assert first - begin >= width - stride  # context of the first scored token
            assert end - begin == width
    # explicit form: window k ends at min(width + k * stride, n)
    if n > width:
        assert [end for _, end, _ in windows] == [min(width + k * stride, n) for k in range(len(windows))]


def test_windowed_nll_equals_sum_over_windows_by_hand(ckpt):
    tok, model = ckpt.tokenizer, ckpt.model
    long_doc = " ".join(tiny_corpus(40, seed=11)[:6])
    short_doc = min(tiny_corpus(20, seed=12), key=len)
    ids = _ids(tok, long_doc)
    width, stride = 48, 16
    assert len(ids) > 3 * width
    windows = [(0, width, 1)]
    while windows[-1][1] < len(ids):
        end = min(windows[-1][1] + stride, len(ids))
        windows.append((end - width, end, windows[-1][1]))
    by_hand = _hand_nll(model, ids, windows)
    got = score(model, tok, [short_doc, long_doc], max_length=width, stride=stride, batch_size=3)
    assert got.nll_sum[1] == pytest.approx(by_hand, rel=1e-5)
    assert got.n_tokens[1] == len(ids) - 1
    default = score(model, tok, [long_doc], max_length=width)  # stride = width // 2
    assert default.settings["stride"] == width // 2
    assert default.nll_sum[0] == pytest.approx(_hand_nll(model, ids, score_windows(len(ids), width, width // 2)),
                                                rel=1e-5)
    # a context longer than the document: one pass, identical to the unwindowed score
    short_ids = _ids(tok, short_doc)
    assert 8 < len(short_ids) <= width
    single = _hand_nll(model, short_ids, [(0, len(short_ids), 1)])
    for width in (len(short_ids), len(short_ids) + 1, 128):
        assert score(model, tok, [short_doc], max_length=width).nll_sum[0] == pytest.approx(single, rel=1e-5)
    # and windows do change the number when the document is longer than the context
    assert got.nll_sum[0] == pytest.approx(single, rel=1e-5)
    assert abs(score(model, tok, [short_doc], max_length=8, stride=4).nll_sum[0] - single) > 1e-3


def test_without_bos_the_first_token_is_not_scored(ckpt, eval_set):
    class NoBos:
        bos_token_id = None
        pad_token_id = ckpt.tokenizer.pad_token_id

        def __call__(self, text, **kw):
            return ckpt.tokenizer(text, **kw)

    docs = eval_set.docs[:6]
    got = score(ckpt.model, NoBos(), docs)
    ids = [ckpt.tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    assert got.n_tokens.tolist() == [len(i) - 1 for i in ids]
    assert got.settings["bos"] is False
    assert got.nll_sum[0] == pytest.approx(_hand_nll(ckpt.model, ids[0], [(0, len(ids[0]), 1)]), rel=1e-5)


def test_reference_tokenizer_units(ckpt, eval_set, tmp_path):
    from tokenizers import Tokenizer

    ref = train_tokenizer(tiny_corpus(50, seed=9), vocab_size=300)
    ref_file = tmp_path / "ref" / "tokenizer.json"
    ref_file.parent.mkdir()
    ref.backend_tokenizer.save(str(ref_file))
    docs = eval_set.docs[:8]
    got = score(ckpt.model, ckpt.tokenizer, docs, reference_tokenizer=ref_file)
    loaded = Tokenizer.from_file(str(ref_file))
    assert got.n_ref_tokens.tolist() == [len(loaded.encode(d, add_special_tokens=False).ids) for d in docs]
    assert (got.n_ref_tokens > got.n_tokens).all()  # a smaller vocabulary needs more tokens
    s = got.summary()
    assert s["nats_per_ref_token"] == pytest.approx(got.nll_sum.sum() / got.n_ref_tokens.sum(), rel=1e-12)
    assert s["n_ref_tokens"] == got.n_ref_tokens.sum()
    folder = score(ckpt.model, ckpt.tokenizer, docs, reference_tokenizer=ref_file.parent)
    assert folder.n_ref_tokens.tolist() == got.n_ref_tokens.tolist()
    # the model's own tokenizer as reference: one reference token per scored token (BOS scores all)
    same = score(ckpt.model, ckpt.tokenizer, docs, reference_tokenizer=ckpt.tokenizer)
    assert same.n_ref_tokens.tolist() == same.n_tokens.tolist()
    with pytest.raises(QidlabError, match="reference tokenizer file not found"):
        score(ckpt.model, ckpt.tokenizer, docs, reference_tokenizer=tmp_path / "nope.json")


def test_bad_scoring_arguments(ckpt):
    m, t = ckpt.model, ckpt.tokenizer
    with pytest.raises(QidlabError, match="exceeds the model's context"):
        score(m, t, ["a b c"], max_length=1000)
    with pytest.raises(QidlabError, match="stride must be between 1 and max_length - 1 = 15"):
        score(m, t, ["a b c"], max_length=16, stride=16)
    with pytest.raises(QidlabError, match="no documents"):
        score(m, t, [])



def _model_from_config(model_type, vocab_size, **extra):
    """An untrained fp32 tiny causal LM of ``model_type`` (weights at std 0.3: peaked predictions)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=2, initializer_range=0.3)
    kw.update(intermediate_size=192)
    if model_type != "gpt_neox":
        kw.update(num_key_value_heads=2, head_dim=16)
    cfg = AutoConfig.for_model(model_type, **kw, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


@pytest.mark.parametrize("model_type", sorted(PLAIN_HEAD_TYPES))
def test_plain_head_types_give_the_logits_of_the_head_on_the_body(model_type):
    """score() runs the output head on base_model's last hidden state only for model types whose
    logits are exactly that (no scaling or softcapping after the head, in this transformers)."""
    from qidlab.evaluate.score import _body_and_head

    model = _model_from_config(model_type, 97)
    body, head = _body_and_head(model)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        got = head(body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["gpt_neox", "llama", "qwen2", "gemma2"])
def test_chunked_head_scores_equal_full_logits(ckpt, model_type, monkeypatch):
    """Per-document NLL from the head on the scored positions, a few rows at a time, equals the
    full-logits computation: windowed long documents, right padding in batches of mixed lengths.
    Gemma 2 softcaps its logits after the head: it is scored from the whole model's logits."""
    import importlib

    score_module = importlib.import_module("qidlab.evaluate.score")
    tok = ckpt.tokenizer
    extra = {"final_logit_softcapping": 5.0} if model_type == "gemma2" else {}
    model = _model_from_config(model_type, len(tok), **extra)
    assert (score_module._body_and_head(model) is None) == (model_type == "gemma2")
    long_doc = " ".join(tiny_corpus(40, seed=11)[:6])
    docs = [long_doc, *tiny_corpus(12, seed=13)[:7], long_doc[:300]]
    width, stride = 48, 16
    by_hand = [_hand_nll(model, ids, score_windows(len(ids), width, stride)) for ids in (_ids(tok, d) for d in docs)]
    assert len(_ids(tok, long_doc)) > 3 * width
    monkeypatch.setattr(score_module, "LOGIT_CHUNK_ELEMENTS", 7 * len(tok))  # 7 positions per chunk
    chunked = score(model, tok, docs, max_length=width, stride=stride, batch_size=4)
    np.testing.assert_allclose(chunked.nll_sum, by_hand, rtol=1e-5)
    monkeypatch.setattr(score_module, "LOGIT_CHUNK_ELEMENTS", 2**26)
    whole = score(model, tok, docs, max_length=width, stride=stride, batch_size=3)
    np.testing.assert_allclose(whole.nll_sum, by_hand, rtol=1e-5)
    monkeypatch.setattr(score_module, "PLAIN_HEAD_TYPES", frozenset())  # the full-logits path
    full = score(model, tok, docs, max_length=width, stride=stride, batch_size=4)
    np.testing.assert_allclose(chunked.nll_sum, full.nll_sum, rtol=1e-5)
    assert chunked.n_tokens.tolist() == full.n_tokens.tolist()


# ---------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_brackets_qid(scores16, scores3):
    qid, lo, hi = paired_bootstrap_qid(scores16, scores3, n_boot=500, seed=0)
    assert qid == pytest.approx(scores3.summary()["nats_per_token"] - scores16.summary()["nats_per_token"])
    assert 0 < lo < qid < hi
    assert paired_bootstrap_qid(scores16, scores3, n_boot=500, seed=0) == (qid, lo, hi)  # seeded
    bqid, blo, bhi = paired_bootstrap_qid(scores16, scores3, n_boot=500, unit="bits_per_byte")
    expected = (scores3.nll_sum.sum() - scores16.nll_sum.sum()) / math.log(2) / scores16.n_bytes.sum()
    assert bqid == pytest.approx(expected) and blo < bqid < bhi


def test_identical_models_give_zero_qid_and_zero_width(scores16):
    assert paired_bootstrap_qid(scores16, copy.deepcopy(scores16), n_boot=200) == (0.0, 0.0, 0.0)


def _synthetic(nll, tokens, nbytes=None, ref=None):
    tokens = np.asarray(tokens, dtype=np.int64)
    nbytes = 4 * tokens if nbytes is None else np.asarray(nbytes, dtype=np.int64)
    return DocScores(nll_sum=np.asarray(nll, dtype=float), n_tokens=tokens, n_bytes=nbytes, n_ref_tokens=ref)


def test_bootstrap_is_paired():
    """A constant per-token shift gives the same QiD in every replicate: the pairing removes the
    large document-to-document spread, which an unpaired bootstrap would put into the interval."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(20, 400, size=300)
    nll16 = tokens * rng.uniform(1.0, 6.0, size=300)  # documents differ a lot in difficulty
    qid, lo, hi = paired_bootstrap_qid(_synthetic(nll16, tokens), _synthetic(nll16 + 0.1 * tokens, tokens))
    assert qid == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    noisy = nll16 + 0.1 * tokens + rng.normal(0, 3.0, size=300)
    qid, lo, hi = paired_bootstrap_qid(_synthetic(nll16, tokens), _synthetic(noisy, tokens), n_boot=2000)
    assert lo < qid < hi and hi - lo < 0.05


def test_bootstrap_refuses_unpaired_or_unknown_units(scores16):
    other = _synthetic(scores16.nll_sum[:-1], scores16.n_tokens[:-1])
    with pytest.raises(QidlabError, match="same documents"):
        paired_bootstrap_qid(scores16, other)
    shuffled = _synthetic(scores16.nll_sum[::-1], scores16.n_tokens[::-1], scores16.n_bytes[::-1])
    with pytest.raises(QidlabError, match="same documents in the same order"):
        paired_bootstrap_qid(scores16, shuffled)
    with pytest.raises(QidlabError, match="unknown unit 'nats'"):
        paired_bootstrap_qid(scores16, scores16, unit="nats")
    with pytest.raises(QidlabError, match="needs scores made with reference_tokenizer"):
        paired_bootstrap_qid(scores16, scores16, unit="nats_per_ref_token")
