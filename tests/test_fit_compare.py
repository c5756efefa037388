"""Out-of-sample model choice (issue 16, item 7): every size and every size's latest D held out
in turn, for the unified, per-bit, Kumar (exponential in P) and interaction QiD families, in
``qidlab fit --compare`` (text and JSON). On simulated data whose true law is known
(qidlab.laws.simulate, multiplicative noise), the true family is chosen."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.laws.compare import FAMILIES, PARSIMONY, compare_laws
from qidlab.laws.simulate import design, simulate

SIZES = tuple(np.geomspace(1e7, 1e10, 5))
TOKENS = tuple(np.geomspace(1e9, 1e12, 6))
LEVELS = {"n_params": SIZES, "tokens": TOKENS, "bits": (2.0, 3.0, 4.0)}
NOISE = 0.05

TRUTHS = {
    "unified": ("ouyang2024", {"k": 0.02, "alpha": 0.25, "beta": 0.5, "gamma": 5.0}),
    "kumar-exp": ("kumar2024-ptq", {"C_T": 0.06, "gamma_D": 0.5, "gamma_N": 0.3, "gamma_post": 0.6}),
    "interaction": ("qidlab-interaction", {"k": 0.02, "alpha": 0.25, "beta": 0.3, "gamma": -3.0, "eta": 0.25}),
}
#: per bit width: its own k, alpha, beta (no single gamma relates them)
PER_BIT = {2.0: (1e-3, 0.15, 0.55), 3.0: (3e-5, 0.30, 0.60), 4.0: (1e-4, 0.45, 0.45)}


def simulated(family: str, seed: int) -> pd.DataFrame:
    if family == "per-bit":
        parts = [simulate("ouyang2024", {"k": k, "alpha": a, "beta": b, "gamma": 0.0},
                          design("ouyang2024", {**LEVELS, "bits": (bits,)}), noise=NOISE, seed=seed * 10 + int(bits))
                 for bits, (k, a, b) in PER_BIT.items()]
        return pd.concat(parts, ignore_index=True)
    law, params = TRUTHS[family]
    return simulate(law, params, design(law, LEVELS), noise=NOISE, seed=seed)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("family", ["unified", "per-bit", "kumar-exp", "interaction"])
def test_the_true_family_is_chosen(family, seed):
    doc = compare_laws(simulated(family, seed))
    assert doc["chosen"] == family, doc["summary"]
    summary = {s["family"]: s for s in doc["summary"]}
    best = doc["summary"][0]["mean_rmse_log"]
    assert summary[family]["mean_rmse_log"] <= best * (1 + PARSIMONY)
    # out of sample the true law's error is the noise's (sigma 0.05 in log space), not more
    assert summary[family]["mean_rmse_log"] < 2 * NOISE
    # a family that does not nest the truth is far worse on at least one slice
    wrong = {"unified": [], "per-bit": ["unified", "kumar-exp", "interaction"],
             "kumar-exp": ["unified", "interaction"], "interaction": ["unified", "kumar-exp"]}[family]
    for other in wrong:
        assert summary[other]["worst_rmse_log"] > 2 * summary[family]["worst_rmse_log"], (other, doc["summary"])


def test_every_size_and_the_latest_d_are_held_out():
    frame = simulated("unified", 0)
    doc = compare_laws(frame)
    sizes = [s["value"] for s in doc["slices"] if s["held_out"] == "n_params"]
    assert sizes == pytest.approx(sorted(SIZES))
    (latest,) = [s for s in doc["slices"] if s["held_out"] == "tokens"]
    assert latest["n_test"] == len(SIZES) * 3 and latest["n_train"] == len(frame) - len(SIZES) * 3
    for s in doc["slices"]:
        if s["held_out"] == "n_params":
            assert s["n_test"] == len(TOKENS) * 3 and s["n_train"] == len(frame) - len(TOKENS) * 3
        assert set(s["errors"]) == {f.name for f in FAMILIES}
    per_bit = next(x for x in doc["summary"] if x["family"] == "per-bit")
    assert per_bit["n_params"] == 9  # k, alpha, beta per bit width, gamma folded


def test_latest_d_is_each_sizes_own():
    frame = simulated("unified", 0)
    # the largest model was trained for less: its latest D is below the others'
    frame = frame[~((frame.n_params == SIZES[-1]) & (frame.tokens == TOKENS[-1]))]
    (latest,) = [s for s in compare_laws(frame)["slices"] if s["held_out"] == "tokens"]
    assert latest["n_test"] == len(SIZES) * 3


def test_too_few_sizes_and_d_values_is_one_clear_error():
    frame = simulate("ouyang2024", TRUTHS["unified"][1],
                     design("ouyang2024", {"n_params": (1e8, 1e9), "tokens": (1e10, 1e11), "bits": (2.0, 3.0)}))
    with pytest.raises(QidlabError, match="three model sizes or three values of D"):
        compare_laws(frame)


def test_a_slice_a_family_cannot_predict_is_named():
    frame = simulated("unified", 0)
    frame = frame[~((frame.bits == 4.0) & (frame.n_params != SIZES[0]))]  # 4 bits only at the smallest size
    doc = compare_laws(frame)
    smallest = next(s for s in doc["slices"] if s["value"] == pytest.approx(SIZES[0]))
    assert "not predicted" in smallest["errors"]["per-bit"]["error"]  # no 4-bit group left to fit
    per_bit = next(x for x in doc["summary"] if x["family"] == "per-bit")
    assert per_bit["missed"] >= 1 and doc["summary"][-1]["family"] == "per-bit"


def test_cli_compare_text_and_json(capsys, tmp_path):
    path = tmp_path / "qid.csv"
    simulated("kumar-exp", 0).to_csv(path, index=False)
    capsys.readouterr()
    assert main(["fit", str(path), "--compare"]) == 0
    text = capsys.readouterr().out
    for f in FAMILIES:
        assert f.name in text
    assert text.count("N = ") == len(SIZES) and "latest D of each size" in text
    assert "chosen: kumar-exp" in text
    out = tmp_path / "compare.json"
    assert main(["fit", str(path), "--compare", "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["chosen"] == "kumar-exp" and len(doc["slices"]) == len(SIZES) + 1
    assert json.loads(out.read_text())["summary"] == doc["summary"]
    assert doc["data"]["rows"] == len(SIZES) * len(TOKENS) * 3


@pytest.mark.parametrize("argv, message", [
    (["--compare", "--law", "ouyang2024"], "leave out --law"),
    ([], "needs --law"),
])
def test_cli_compare_bad_flags(capsys, tmp_path, argv, message):
    path = tmp_path / "qid.csv"
    simulated("unified", 0).to_csv(path, index=False)
    capsys.readouterr()
    assert main(["fit", str(path), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1
