"""Scoring's prefix token (bos / eos / none), its windows (sliding / disjoint = lm-evaluation-harness's
rolling windows), word perplexity, and a cross-check against lm-evaluation-harness itself."""

import json
import math
import re

import numpy as np
import pytest
from tiny_models import make_tiny_checkpoint, single_thread, tiny_corpus

from qidlab.errors import QidlabError
from qidlab.evaluate import count_words, disjoint_windows, score, score_windows


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from qidlab.checkpoints import load_checkpoint

    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("prefix") / "gpt", arch="gpt_neox", steps=40)
    return load_checkpoint(folder)


@pytest.fixture(scope="module")
def docs():
    short = tiny_corpus(6, seed=3)
    long_doc = " ".join(tiny_corpus(12, seed=4))  # several contexts of 32 tokens long
    return [*short, long_doc, "  spaced   words\n\tand a tab  "]


def _hand_nll(model, ids, windows, trim):
    """Sum of -log p over ``windows`` (begin, end, first) of token list ``ids``, one window at a time;
    ``trim``: the model reads ``ids[begin:end - 1]`` (disjoint windows), else ``ids[begin:end]``."""
    import torch

    total = 0.0
    for begin, end, first in windows:
        stop = end - 1 if trim else end
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[begin:stop]])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        for t in range(first, end):
            total -= float(logp[t - 1 - begin, ids[t]])
    return total


# ---- windows and words (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 5, 9, 10, 11, 12, 20, 21, 22, 37])
def test_disjoint_windows_score_each_target_once_within_the_context(n):
    width = 10
    windows = disjoint_windows(n, width)
    targets = [t for _, end, first in windows for t in range(first, end)]
    assert targets == list(range(1, n))
    for begin, end, first in windows:
        assert 0 <= begin < first <= end and end - 1 - begin <= width  # the model reads <= width tokens
    for (_, end, _), (begin, _, first) in zip(windows, windows[1:]):
        assert first == end and begin == first - 1 or begin < first - 1  # context: at least the token before


def test_disjoint_windows_are_lm_evals_rolling_windows():
    utils = pytest.importorskip("lm_eval.utils", reason="lm-evaluation-harness (the 'tasks' extra) is not installed")
    prefix = -1
    for n_tokens in (1, 5, 9, 10, 11, 19, 20, 21, 33, 40):
        tokens = list(range(100, 100 + n_tokens))
        ids = [prefix, *tokens]
        theirs = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(
            token_list=tokens, prefix_token=prefix, max_seq_len=10, context_len=1)]
        ours = disjoint_windows(len(ids), 10)
        assert len(ours) == len(theirs)
        for (begin, end, first), (context, continuation) in zip(ours, theirs):
            # lm-eval feeds (context + continuation)[-(max_len + 1):][:-1] and scores the continuation
            fed = (context + continuation)[-11:][:-1]
            assert ids[begin:end - 1] == fed and ids[first:end] == continuation


def test_sliding_windows_are_unchanged_by_the_disjoint_option():
    assert score_windows(37, 10, 5) == [(0, 10, 1), (5, 15, 10), (10, 20, 15), (15, 25, 20), (20, 30, 25),
                                        (25, 35, 30), (27, 37, 35)]


def test_words_are_counted_as_lm_eval_counts_them():
    task = pytest.importorskip("lm_eval.api.task", reason="lm-evaluation-harness (the 'tasks' extra) is not installed")
    for doc in ("one two  three", " leading", "trailing \n", "a\tb\nc", "", "x"):
        assert count_words(doc) == task.ConfigurableTask.count_words(doc) == len(re.split(r"\s+", doc))


# ---- the prefix ------------------------------------------------------------------------------------

class _Tok:
    """``ckpt.tokenizer`` with chosen BOS/EOS ids (None: the tokenizer lacks it)."""

    def __init__(self, tok, bos, eos):
        self._tok, self.bos_token_id, self.eos_token_id, self.pad_token_id = tok, bos, eos, tok.pad_token_id

    def __call__(self, text, **kw):
        return self._tok(text, **kw)


def test_each_prefix_scores_what_it_says(ckpt, docs):
    model, tok = ckpt.model, ckpt.tokenizer
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs[:4]]
    for prefix, first in (("bos", tok.bos_token_id), ("eos", tok.eos_token_id)):
        got = score(model, tok, docs[:4], prefix=prefix)
        assert got.n_tokens.tolist() == [len(i) for i in ids]
        assert got.settings["prefix"] == prefix
        for k in range(4):
            seq = [first, *ids[k]]
            assert got.nll_sum[k] == pytest.approx(_hand_nll(model, seq, [(0, len(seq), 1)], False), rel=1e-5)
    none = score(model, tok, docs[:4], prefix="none")
    assert none.n_tokens.tolist() == [len(i) - 1 for i in ids] and none.settings["bos"] is False
    assert none.nll_sum[0] == pytest.approx(_hand_nll(model, ids[0], [(0, len(ids[0]), 1)], False), rel=1e-5)
    # the default is BOS, as before the option existed
    default = score(model, tok, docs[:4])
    assert np.array_equal(default.nll_sum, score(model, tok, docs[:4], prefix="bos").nll_sum)
    assert default.settings["prefix"] == "bos" and default.settings["bos"] is True


def test_without_bos_the_default_prefix_is_eos_as_lm_eval(ckpt, docs):
    model, tok = ckpt.model, ckpt.tokenizer
    no_bos = _Tok(tok, None, tok.eos_token_id)
    got = score(model, no_bos, docs[:3])
    assert got.settings["prefix"] == "eos" and got.settings["bos"] is False
    assert np.array_equal(got.nll_sum, score(model, tok, docs[:3], prefix="eos").nll_sum)
    # neither BOS nor EOS: nothing to prefix, the first token is left unscored
    bare = score(model, _Tok(tok, None, None), docs[:3])
    assert bare.settings["prefix"] == "none"
    assert np.array_equal(bare.n_tokens, score(model, tok, docs[:3], prefix="none").n_tokens)


@pytest.mark.parametrize("kwargs, match", [
    ({"prefix": "bos", "tok": (None, 1)}, "has no BOS token"),
    ({"prefix": "eos", "tok": (0, None)}, "has no EOS token"),
    ({"prefix": "start"}, "prefix must be one of bos, eos, none"),
    ({"windows": "rolling"}, "windows must be one of sliding, disjoint"),
    ({"windows": "disjoint", "stride": 4}, "stride applies to sliding windows only"),
])
def test_bad_scoring_options_are_one_clear_error(ckpt, docs, kwargs, match):
    kwargs = dict(kwargs)
    tok = _Tok(ckpt.tokenizer, *kwargs.pop("tok")) if "tok" in kwargs else ckpt.tokenizer
    with pytest.raises(QidlabError, match=match):
        score(ckpt.model, tok, docs[:2], **kwargs)


# ---- disjoint windows and word perplexity ---------------------------------------------------------

def test_disjoint_windows_score_a_long_document_as_the_windows_say(ckpt, docs):
    model, tok = ckpt.model, ckpt.tokenizer
    long_doc = docs[-2]
    seq = [tok.eos_token_id, *tok(long_doc, add_special_tokens=False)["input_ids"]]
    assert len(seq) > 3 * 32
    short_doc = docs[-1]
    assert len(tok(short_doc, add_special_tokens=False)["input_ids"]) < 31
    got = score(model, tok, [short_doc, long_doc], prefix="eos", windows="disjoint", max_length=32, batch_size=3)
    windows = disjoint_windows(len(seq), 32)
    assert len(windows) >= 4 and got.n_tokens[1] == len(seq) - 1 and got.settings["stride"] is None
    assert got.nll_sum[1] == pytest.approx(_hand_nll(model, seq, windows, True), rel=1e-5)
    sliding = score(model, tok, [long_doc], prefix="eos", max_length=32)
    assert abs(sliding.nll_sum[0] - got.nll_sum[1]) > 1e-3  # the two cuts differ on a long document
    # a document that fits the context scores the same either way
    short = score(model, tok, [short_doc], prefix="eos", max_length=32)
    assert got.nll_sum[0] == pytest.approx(short.nll_sum[0], rel=1e-5)


def test_word_perplexity_is_exp_of_nats_per_word(ckpt, docs):
    got = score(ckpt.model, ckpt.tokenizer, docs)
    words = [count_words(d) for d in docs]
    assert got.n_words.tolist() == words
    summary = got.summary()
    assert summary["n_words"] == sum(words)
    assert summary["nats_per_word"] == pytest.approx(got.nll_sum.sum() / sum(words), rel=1e-12)
    assert summary["word_perplexity"] == pytest.approx(math.exp(summary["nats_per_word"]), rel=1e-12)
    assert got.loss("nats_per_word") == summary["nats_per_word"]


# ---- lm-evaluation-harness --------------------------------------------------------------------------

def test_disjoint_eos_scores_agree_with_lm_eval_loglikelihood_rolling(ckpt, docs):
    """qidlab (prefix eos, disjoint windows) and lm-eval's ``HFLM.loglikelihood_rolling`` on the same
    model object, tokenizer and documents: per-document nats within 1e-4 (float32 on the CPU).
    What stays untested here: lm-eval on a GPU (batching, bf16) and its task-level aggregation."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (the 'tasks' extra) is not installed")
    hf = pytest.importorskip("lm_eval.models.huggingface", exc_type=ImportError,
                             reason="lm_eval's HFLM needs accelerate (lm_eval[hf], the 'tasks' extra)")
    from lm_eval.api.instance import Instance

    model, tok = ckpt.model, ckpt.tokenizer
    assert tok.bos_token_id != tok.eos_token_id  # so prefix "eos" is not lm-eval's default
    lm = hf.HFLM(pretrained=model, tokenizer=tok, max_length=32, batch_size=4, device="cpu",
                 prefix_token_id=tok.eos_token_id)
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(d,), idx=i)
                for i, d in enumerate(docs)]
    theirs = -np.asarray(lm.loglikelihood_rolling(requests, disable_tqdm=True), dtype=np.float64)
    ours = score(model, tok, docs, prefix="eos", windows="disjoint", max_length=32, batch_size=4)
    long_ids = tok(docs[-2], add_special_tokens=False)["input_ids"]
    assert len(disjoint_windows(len(long_ids) + 1, 32)) >= 4  # the long document takes several windows
    assert np.abs(ours.nll_sum - theirs).max() < 1e-4, (ours.nll_sum, theirs)


# ---- the study's [scoring] prefix / windows / nats_per_word ----------------------------------------

STUDY = """
[study]
name = "prefix"
store = "prefix.db"

[checkpoints]
root = "{root}/suite"

[[eval_sets]]
name = "heldout"
source = "{root}/eval.txt"
n_docs = 6

[[methods]]
method = "rtn"
bits = 2
group_size = 32

[scoring]
bootstrap = 20
max_length = 32
{scoring}
"""


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix-study")
    make_tiny_checkpoint(root / "suite", steps=30, save_steps=[30], model_name="m64")
    docs = tiny_corpus(8, seed=5)
    (root / "eval.txt").write_text("\n\n".join([*docs[:5], " ".join(docs[5:])]))  # the last one: > 32 tokens
    return root


def _study(root, tmp_path, scoring):
    from qidlab.sweep import load_study

    path = tmp_path / f"study-{abs(hash(scoring))}.toml"
    path.write_text(STUDY.format(root=root, scoring=scoring))
    return load_study(path)


def test_prefix_and_windows_enter_the_identity_only_where_they_change_the_scores(study_root, tmp_path):
    from qidlab.store import config_hash
    from qidlab.sweep.run import measurement_config

    def identity(scoring):
        study = _study(study_root, tmp_path, scoring)
        return config_hash(measurement_config(study.methods[0], study))

    today = identity("")
    assert identity('prefix = "bos"') == identity('windows = "sliding"') == identity(
        'prefix = "bos"\nwindows = "sliding"') == today
    others = {identity(s) for s in ('prefix = "eos"', 'prefix = "none"', 'windows = "disjoint"',
                                    'prefix = "eos"\nwindows = "disjoint"', 'unit = "nats_per_word"')}
    assert len(others) == 5 and today not in others


def test_a_study_scores_with_its_prefix_windows_and_unit(study_root, tmp_path):
    from qidlab.checkpoints import load_checkpoint
    from qidlab.evaluate import load_eval_set
    from qidlab.store import Store, read_canonical
    from qidlab.sweep import run_study

    study = _study(study_root, tmp_path, 'prefix = "eos"\nwindows = "disjoint"\nunit = "nats_per_word"')
    assert run_study(study, progress=False).measured == 2
    row = read_canonical(study.store).iloc[0]
    with Store(study.store) as store:
        cfg = json.loads(store.conn.execute("SELECT config_json FROM measurements WHERE method='rtn'").fetchone()[0])
    assert cfg["scoring"]["prefix"] == "eos" and cfg["scoring"]["windows"] == "disjoint"
    ckpt = load_checkpoint(study_root / "suite" / "m64" / "step30")
    eval_set = load_eval_set(study_root / "eval.txt", n_docs=6, seed=0)
    assert len(ckpt.tokenizer(eval_set.docs[-1], add_special_tokens=False)["input_ids"]) > 64
    expected = score(ckpt.model, ckpt.tokenizer, eval_set, prefix="eos", windows="disjoint", max_length=32)
    assert row.loss16 == pytest.approx(expected.loss("nats_per_word"), rel=1e-6)
    assert abs(row.loss16 - expected.loss("nats_per_token")) > 0.1  # per word, not per token
    # an unset prefix scores as before the option existed: BOS (this tokenizer has one), sliding windows
    (tmp_path / "plain").mkdir()
    plain = _study(study_root, tmp_path / "plain", "")  # a store of its own
    assert run_study(plain, progress=False).measured == 2
    before = score(ckpt.model, ckpt.tokenizer, eval_set, prefix="bos", max_length=32)
    assert read_canonical(plain.store).iloc[0].loss16 == pytest.approx(before.loss(), rel=1e-6)
