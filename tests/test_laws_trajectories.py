"""laws/trajectories.py on synthetic trajectories with a known truth: QiD = k D^beta N^-alpha
P^-gamma exp(delta * decay) times log-normal noise, laid out like Campaign 2 (constant-lr runs with
checkpoints, cooldown branches, LAWA averages, a 2x peak-lr arm, cosine run ends)."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qidlab.errors import QidlabError
from qidlab.laws import trajectories as T

TPS = 16384  # tokens per update
STEPS = [128, 244, 256, 466, 512, 889, 1024, 1695, 1950]
BRANCHES = [128, 244, 466, 889, 1695]
SIZES = {"s1": 2e5, "s2": 6e5, "s3": 1.6e6, "s4": 3.2e6, "s5": 7e6, "s6": 1.3e7, "s7": 1.9e7}
BETA, ALPHA, GAMMA, K = 0.9, 0.3, 4.0, 1e-2
AVERAGE_FACTOR, LR2X_FACTOR = 0.8, 1.5


def _qid(rng, tokens, n, bits, decay, delta, noise):
    law = K * (tokens / 1e6) ** BETA * (n / 1e6) ** -ALPHA * (bits / 2) ** -GAMMA * math.exp(delta * decay)
    return law * math.exp(rng.normal(0, noise))


def _row(arm, seed, suite, kind, step, n, bits, qid, schedule="constant", decay=0.0, decay_tokens=0.0, branch_from=np.nan,
         peak=1e-3, model=None):
    return {"suite": suite, "model": model or arm, "step": step, "tokens": step * TPS, "n_params": int(n), "bits": float(bits),
            "method": "gptq", "eval_set": "debian-en-heldout", "qid": qid, "loss16": 3.0 - 0.1 * math.log(step * TPS / 1e6),
            "kind": kind, "trajectory": arm, "arm": arm, "seed": seed, "schedule": schedule, "peak_lr": peak,
            "decay": decay, "decay_tokens": decay_tokens, "branch_from": branch_from, "lr_factor": peak / 1e-3}


def _trajectory(rng, arm, n, seed, bits, delta, noise, peak=1e-3, factor=1.0):
    rows = []
    for s in STEPS:
        rows.append(_row(arm, seed, "c", "run", s, n, bits, factor * _qid(rng, s * TPS, n, bits, 0, delta, noise), peak=peak))
    for b in BRANCHES:
        end = b + round(0.15 * b)
        rows.append(_row(arm, seed, "c", "branch", end, n, bits, factor * _qid(rng, end * TPS, n, bits, 1, delta, noise),
                         decay=1.0, decay_tokens=(end - b) * TPS, branch_from=b, peak=peak, model=f"{arm}-cool{b}"))
        run_q = next(r["qid"] for r in rows if r["kind"] == "run" and r["step"] == b)
        rows.append(_row(arm, seed, "c", "average", b, n, bits, AVERAGE_FACTOR * run_q, branch_from=b, peak=peak,
                         model=f"{arm}-lawa5"))
    return rows


def _cosine(rng, arm, n, seed, bits, delta, noise):
    return [_row(arm, seed, f"cos{s}", "run", s, n, bits, _qid(rng, s * TPS, n, bits, 0.9, delta, noise), schedule="cosine",
                 decay=0.9, decay_tokens=(s - 100) * TPS) for s in (488, 975, 1950)]


def synthetic(delta: float, noise: float = 0.05, seeds=(0,), rng_seed: int = 0) -> pd.DataFrame:
    """A Campaign-2-shaped frame whose QiD follows the known law with decay effect ``delta``."""
    rng, rows = np.random.default_rng(rng_seed), []
    for bits in (2, 3):
        for seed in seeds:
            for arm, n in SIZES.items():
                rows += _trajectory(rng, arm, n, seed, bits, delta, noise) + _cosine(rng, arm, n, seed, bits, delta, noise)
            rows += _trajectory(rng, "s5-lr2x", SIZES["s5"], seed, bits, delta, noise, peak=2e-3, factor=LR2X_FACTOR)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def decayed():
    return synthetic(delta=0.5)


@pytest.fixture(scope="module")
def neutral():
    return synthetic(delta=0.0)


def test_constant_lr_exponent_is_recovered_within_its_cluster_ci(decayed):
    out = T.constant_beta(decayed, min_tokens=4e6, n_boot=500)
    assert len(out) == 2 and (out.clusters == len(SIZES)).all() and (out.dropped == 0).all()
    for r in out.itertuples():
        assert r.beta == pytest.approx(BETA, abs=0.06) and r.lo < BETA < r.hi and r.hi - r.lo < 0.3


def test_cooldown_ratio_at_equal_d_recovers_the_decay_effect_and_covers_one_without_it(decayed, neutral):
    with_decay = T.summarize_ratio(T.cooldown_ratios(decayed), "ratio_equal_d", n_boot=500)
    for r in with_decay.itertuples():
        assert r.gm == pytest.approx(math.exp(0.5), rel=0.05) and r.lo > 1.3 and r.n == len(SIZES) * 5 + 5
    without = T.summarize_ratio(T.cooldown_ratios(neutral), "ratio_equal_d", n_boot=500)
    for r in without.itertuples():
        assert r.lo < 1 < r.hi and r.gm == pytest.approx(1, abs=0.05)


def test_after_over_before_carries_the_tokens_the_branch_added(neutral):
    cr = T.cooldown_ratios(neutral)
    expected = 1.15 ** BETA  # no decay effect: only the 15% more tokens
    assert T.geo_mean_ci(cr.ratio_before, cr.cluster)["gm"] == pytest.approx(expected, rel=0.05)
    per_point = T.summarize_ratio(cr, "ratio_equal_d", by=("bits", "branch_from"), n_boot=200)
    assert len(per_point) == 2 * len(BRANCHES) and (per_point.clusters == len(SIZES) + 1).all()


def test_interpolation_is_exact_on_a_power_law_and_nan_outside():
    x = np.array([1e6, 4e6, 1.6e7])
    y = 0.01 * (x / 1e6) ** 0.7
    assert T.interp_loglog(x, y, 2.5e6) == pytest.approx(0.01 * 2.5 ** 0.7)
    assert T.interp_loglog(x, y, 4e6) == pytest.approx(y[1])
    assert math.isnan(T.interp_loglog(x, y, 2e7)) and math.isnan(T.interp_loglog(x, np.array([0.01, -1, 1]), 2e6))


def test_peak_lr_arm_averaging_and_cosine_ratios_recover_their_factors(decayed):
    lr = T.lr_arm_ratios(decayed)
    assert set(lr.kind) == {"run", "branch", "average"} and (lr.multiplier == 2).all()
    assert np.exp(np.log(lr.ratio).mean()) == pytest.approx(LR2X_FACTOR, rel=0.05)
    av = T.averaging_ratios(decayed)
    assert len(av) == 2 * (len(SIZES) + 1) * len(BRANCHES) and np.allclose(av.ratio, AVERAGE_FACTOR)
    cos = T.cosine_ratios(decayed)
    assert len(cos) == 2 * len(SIZES) * 3
    # the cosine end (decay 0.9) over the constant run at the same D, and over the nearest branch end (decay 1)
    assert T.geo_mean_ci(cos.ratio_const, cos.cluster)["gm"] == pytest.approx(math.exp(0.45), rel=0.06)
    assert set(cos.branch_tokens / TPS) <= {b + round(0.15 * b) for b in BRANCHES}


def test_decay_aware_form_wins_held_out_when_decay_matters(decayed):
    out = T.compare_forms(decayed, min_tokens=4e6, n_boot=300)
    loso = out[out.protocol == "loso"]
    assert len(loso) == 2 and set(loso.winner) <= {"ouyang+decay", "ouyang+decay+share"}
    assert (loso["med_ouyang+decay"] < loso.med_ouyang).all() and (loso["lo_ouyang+decay"] > 0).all()
    const = out[out.protocol == "const"]
    assert (const.winner == "same fit").all() and (const.bias_ouyang < -0.2).all()  # D^beta alone under-predicts decayed ends
    fit = T.fit_params(T.FORMS[1], decayed[(decayed.bits == 2) & T.is_reference_arm(decayed) & (decayed.kind != "average")])
    assert fit["decay"] == pytest.approx(0.5, abs=0.06) and fit["logD"] == pytest.approx(BETA, abs=0.06)


def test_forms_tie_held_out_without_a_decay_effect(neutral):
    out = T.compare_forms(neutral, min_tokens=4e6, n_boot=300)
    loso = out[out.protocol == "loso"]
    assert (loso.winner == "tie").all() and (loso["lo_ouyang+decay"] < 0).all() and (loso["hi_ouyang+decay"] > 0).all()


def test_pooled_bits_fit_the_bits_exponent(decayed):
    out = T.compare_forms(decayed, min_tokens=4e6, by=("method", "eval_set"), protocols=("loso",), n_boot=100)
    assert len(out) == 1 and out.n.iloc[0] == 2 * len(SIZES) * (4 + 3)  # branch ends from 466 on, 3 cosine ends
    rows = decayed[T.is_reference_arm(decayed) & (decayed.kind != "average")]
    assert T.fit_params(T.FORMS[1], rows)["logP"] == pytest.approx(GAMMA, abs=0.2)


def test_seeds_are_clusters_of_their_own():
    frame = synthetic(delta=0.0, seeds=(0, 1))
    out = T.constant_beta(frame, n_boot=100)
    assert (out.clusters == 2 * len(SIZES)).all()


def test_non_positive_qid_is_dropped_and_counted(neutral):
    frame = neutral.copy()
    runs = frame.index[(frame.kind == "run") & (frame.schedule == "constant") & (frame.step == 1024) & (frame.bits == 3)
                       & T.is_reference_arm(frame)]  # the 2x arm is not in the constant-lr exponent
    frame.loc[runs, "qid"] = -1e-4
    out = T.constant_beta(frame, n_boot=50).set_index("bits")
    assert out.loc[3.0, "dropped"] == len(runs) and out.loc[2.0, "dropped"] == 0


def test_missing_columns_and_empty_frames_are_one_line_errors(neutral):
    with pytest.raises(QidlabError, match="decay_tokens, branch_from") as e:
        T.constant_beta(neutral.drop(columns=["decay_tokens", "branch_from"]))
    assert "\n" not in str(e.value)
    with pytest.raises(QidlabError, match="empty"):
        T.cooldown_ratios(neutral.iloc[:0])


def _renamed(frame: pd.DataFrame, names: dict) -> pd.DataFrame:
    return frame.assign(arm=frame.arm.replace(names), trajectory=frame.trajectory.replace(names))


def test_the_reference_arm_is_lr_factor_1_whatever_the_names_say(neutral):
    """Reference arms named like variants (``s1-lr1x``) and the 2x variant named like a size (``s5b``):
    every reference-arm decision follows lr_factor, so the results match the plainly named frame."""
    names = {**{a: f"{a}-lr1x" for a in SIZES}, "s5-lr2x": "s5b"}
    frame = _renamed(neutral, names)
    assert T.is_reference_arm(frame).tolist() == (frame.lr_factor == 1).tolist()
    assert set(frame[~T.is_reference_arm(frame)].arm) == {"s5b"}
    plain, odd = T.constant_beta(neutral, n_boot=50), T.constant_beta(frame, n_boot=50)
    assert (odd.clusters == len(SIZES)).all() and odd.beta.tolist() == plain.beta.tolist()
    lr = T.lr_arm_ratios(frame)
    assert set(lr.arm) == {"s5b"} and (lr.multiplier == 2).all() and len(lr) == len(T.lr_arm_ratios(neutral))
    points = T.law_points(frame)
    assert "s5b" not in set(points.arm) and len(points) == len(T.law_points(neutral))


def test_a_frame_without_lr_factor_is_a_one_line_error(neutral):
    for call in (T.constant_beta, T.lr_arm_ratios, T.compare_forms):
        with pytest.raises(QidlabError, match="lr_factor") as e:
            call(neutral.drop(columns=["lr_factor"]))
        assert "\n" not in str(e.value)
    with pytest.raises(QidlabError, match="needs the lr_factor column"):
        T.is_reference_arm(T.cooldown_ratios(neutral).drop(columns=["lr_factor"]))
    gaps = neutral.assign(lr_factor=np.where(neutral.arm == "s2", np.nan, neutral.lr_factor))
    with pytest.raises(QidlabError, match=r"lr_factor is missing on \d+ of \d+ rows \(arms s2\)"):
        T.constant_beta(gaps)


def test_decay_coefficient_ci_excludes_zero_with_an_effect_and_covers_it_without(decayed, neutral):
    for frame, delta in ((decayed, 0.5), (neutral, 0.0)):
        out = T.form_coefficients(frame, n_boot=200).set_index(["bits", "term"])
        for bits in (2.0, 3.0):
            d = out.loc[(bits, "decay")]
            assert d.value == pytest.approx(delta, abs=0.06) and d.lo < delta < d.hi and d.clusters == len(SIZES)
            assert out.loc[(bits, "logN")].value == pytest.approx(ALPHA, abs=0.06)


def _findings2():
    spec = importlib.util.spec_from_file_location("findings2", Path(__file__).resolve().parents[1] / "campaign" / "findings2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_findings2_prints_every_section_from_a_frame_file(decayed, tmp_path, capsys):
    path = tmp_path / "frame.parquet"
    decayed.to_parquet(path)
    _findings2().main(["findings2.py", str(path)])
    out = capsys.readouterr().out
    for heading in ("## a.", "## b.", "## c.", "## d.", "## e.", "## f.", "2 and 3 bits pooled", "delta [95% CI]"):
        assert heading in out, heading
    beta = T.constant_beta(decayed, 4e6, 2000, 0).set_index("bits").loc[2.0]
    assert f"| gptq | 2 | debian-en-heldout | {beta.beta:.3f} [{beta.lo:.3f}, {beta.hi:.3f}] |" in out
    two_x = re.search(r"\| gptq \| 2 \| debian-en-heldout \| run \| - \| ([\d.]+) \(", out)  # no 0.5x arm here
    assert float(two_x.group(1)) == pytest.approx(LR2X_FACTOR, rel=0.1)


def test_findings2_cosine_trend_with_size_recovers_a_planted_slope(decayed, tmp_path, capsys):
    """Cosine runs' QiD times (N / N_min)^0.2: the slope of ln(cos / const) on ln N is 0.2, where the
    unchanged frame (the same decay factor at every size) gives a slope whose CI covers 0. Held out,
    the line fitted without the largest size predicts its ratio, and the measured ratio there grows
    by the planted (N_max / N_min)^0.2."""
    cosine = decayed.schedule == "cosine"
    planted = decayed.copy()
    planted.loc[cosine, "qid"] *= (planted.n_params[cosine] / planted.n_params.min()) ** 0.2
    slopes, held = {}, {}
    for name, frame in (("flat", decayed), ("planted", planted)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        _findings2().main(["findings2.py", str(tmp_path / f"{name}.parquet")])
        out = capsys.readouterr().out
        found = re.search(r"\| gptq \| 2 \| debian-en-heldout \| ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] \| [\d.]+ / [\d.]+ "
                          r"\| (\d+) \| ([\d.]+) / ([\d.]+) \|", out[out.index("Trend with size"):])
        slopes[name] = [float(found.group(i)) for i in (1, 2, 3)] + [int(found.group(4))]
        held[name] = float(found.group(5)), float(found.group(6))
    assert slopes["flat"][1] < 0 < slopes["flat"][2] and abs(slopes["flat"][0]) < 0.05
    assert slopes["planted"][0] == pytest.approx(0.2, abs=0.03) and slopes["planted"][1] > 0.1
    assert slopes["planted"][3] == slopes["flat"][3] >= 4  # one point per size with cosine runs
    sizes = decayed[cosine].n_params
    assert held["planted"][1] / held["flat"][1] == pytest.approx((sizes.max() / sizes.min()) ** 0.2, rel=0.02)
    # a planted power of N is a line in ln N: the fit without the largest size carries it there exactly
    assert held["planted"][0] / held["flat"][0] == pytest.approx((sizes.max() / sizes.min()) ** 0.2, rel=0.02)


def test_findings2_tells_a_ratio_set_by_n_from_one_set_by_tokens_per_parameter(decayed, tmp_path, capsys):
    """Cosine QiD times N^0.2 (N alone): c_D's CI covers 0, b_N is 0.2; times (D/N)^-0.3 (tokens per
    parameter alone): b_N = 0.3 = -c_D, their sum's CI covers 0 and c_D's does not."""
    cosine = decayed.schedule == "cosine"
    found = {}
    for name, factor in (("n", decayed.n_params ** 0.2), ("dn", (decayed.tokens / decayed.n_params) ** -0.3)):
        planted = decayed.copy()
        planted.loc[cosine, "qid"] *= factor[cosine]
        planted.to_parquet(tmp_path / f"{name}.parquet")
        _findings2().main(["findings2.py", str(tmp_path / f"{name}.parquet")])
        out = capsys.readouterr().out
        num = r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]"
        m = re.search(rf"\| gptq \| 2 \| debian-en-heldout \| {num} \| {num} \| {num} \| (\d+) \| (\d+) \|",
                      out[out.index("N or D/N"):])
        found[name] = [float(m.group(i)) for i in range(1, 10)] + [int(m.group(10)), int(m.group(11))]
    b, b_lo, b_hi, c, c_lo, c_hi, total, t_lo, t_hi, ends, sizes = found["n"]
    assert b == pytest.approx(0.2, abs=0.03) and c_lo < 0 < c_hi and ends == 2 * sizes == 2 * len(SIZES)
    b, b_lo, b_hi, c, c_lo, c_hi, total, t_lo, t_hi, ends, sizes = found["dn"]
    assert b == pytest.approx(0.3, abs=0.03) and c == pytest.approx(-0.3, abs=0.1) and c_hi < 0 and t_lo < 0 < t_hi


def test_findings2_refuses_a_frame_without_trajectory_columns(decayed, tmp_path):
    path = tmp_path / "frame.parquet"
    decayed.drop(columns=["kind"]).to_parquet(path)
    with pytest.raises(QidlabError, match="kind"):
        _findings2().main(["findings2.py", str(path)])


SHUFFLED_FACTOR = 3.0


def with_batch_orders(rng_seed: int = 1, noise: float = 0.05) -> pd.DataFrame:
    """Seed 0 contiguous; seeds 1 and 2 shuffled with QiD x SHUFFLED_FACTOR (runs only, plus noise)."""
    frame = synthetic(delta=0.0, noise=noise, seeds=(0, 1, 2), rng_seed=rng_seed)
    shuffled = frame.seed > 0
    frame["batch_order"] = np.where(shuffled, "shuffled", "contiguous")
    frame.loc[shuffled, "qid"] *= SHUFFLED_FACTOR
    frame.loc[shuffled, "loss16"] -= 0.2
    return frame


def test_batch_order_ratios_recover_the_shuffled_factor_with_sizes_as_clusters():
    g = T.batch_order_ratios(with_batch_orders(), min_tokens=4e6)
    assert set(g.seed) == {1, 2} and set(g.seed_contiguous) == {0} and (g.cluster == g.arm).all()
    assert set(g.arm) == set(SIZES)  # reference lr only: not s5-lr2x
    assert (g.tokens >= 4e6).all() and np.allclose(g.loss16_diff, -0.2)
    s = T.summarize_ratio(g, "ratio")
    assert len(s) == 2 and (s.clusters == len(SIZES)).all()
    assert ((s.gm - SHUFFLED_FACTOR).abs() < 0.1).all() and ((s.lo < s.gm) & (s.gm < s.hi) & (s.hi - s.lo < 0.3)).all()


def test_seed_ratios_compare_later_seeds_with_the_first_of_one_batch_order():
    frame = with_batch_orders()
    s = T.seed_ratios(frame, "shuffled", min_tokens=4e6)
    assert set(s.seed) == {2} and set(s.seed_first) == {1}  # seed 0 is contiguous: not in the shuffled pairs
    summary = T.summarize_ratio(s, "ratio")
    assert ((summary.gm - 1).abs() < 0.05).all()  # replicates of one law: ratio 1 within noise
    assert T.seed_ratios(frame, "contiguous").empty  # one contiguous seed per size: no pairs
    with pytest.raises(QidlabError, match="batch_order"):
        T.seed_ratios(frame.drop(columns="batch_order"), "shuffled")


def test_matched_loss_ratios_compare_at_equal_16bit_loss_not_equal_d():
    """Shuffled runs whose loss16 is the contiguous run's 1.5x further in D (QiD then follows the
    contiguous law at that D): at equal loss the QiD ratio is 1 and the token ratio 1/1.5."""
    frame = with_batch_orders(noise=0.0)
    contiguous = frame[(frame.batch_order == "contiguous") & (frame.kind == "run")]
    shuffled = frame.batch_order == "shuffled"
    # loss16 = 3 - 0.1 ln(D/1e6) in the fixture: at 1.5x D it is 0.1 ln 1.5 lower; QiD is K D^beta ...
    frame.loc[shuffled, "loss16"] = 3.0 - 0.1 * np.log(frame.loc[shuffled, "tokens"] * 1.5 / 1e6)
    frame.loc[shuffled, "qid"] = frame.loc[shuffled, "qid"] / SHUFFLED_FACTOR * 1.5 ** BETA
    m = T.matched_loss_ratios(frame, min_tokens=4e6)
    assert len(m) and set(m.seed) == {1, 2} and (m.cluster == m.arm).all() and set(m.arm) == set(SIZES)
    assert np.allclose(m.tokens_ratio, 1 / 1.5, rtol=0.02)
    assert np.allclose(m.ratio, 1.0, rtol=0.05)  # log-linear interpolation of a power law: exact up to noise 0
    assert (m.loss16 >= contiguous.loss16.min()).all()  # only inside the contiguous run's loss range
    # the fixture's own shuffled runs: 3x QiD and loss16 0.2 lower at equal D, i.e. the contiguous
    # run's loss at e^(0.2 / 0.1) = 7.39x their D, where its QiD is 7.39^beta larger
    plain = T.matched_loss_ratios(with_batch_orders(noise=0.0), min_tokens=4e6)
    assert np.allclose(plain.tokens_ratio, math.exp(-2.0)) and np.allclose(plain.ratio, SHUFFLED_FACTOR * math.exp(-2.0 * BETA))
