"""Tokens or learning-rate decay? QiD along training trajectories (issue 17; Catalan-Tatjer et al.
2025, arXiv 2510.06213), from a measurement frame with the columns of
``qidlab.train.trajectories.COLUMNS`` (kind run|branch|average, trajectory, arm, seed, schedule,
peak_lr, lr, decay, decay_tokens, branch_from, lr_factor). A size's reference-lr arm is the one with
``lr_factor == 1`` (``is_reference_arm``); its peak-lr variants have another factor (0.5, 2, ...).

Per slice (method, bits, eval_set):

* ``constant_beta``      exponent of QiD in D along constant-lr runs, a fixed effect per trajectory;
* ``cooldown_ratios``    each cooldown branch end vs the constant-lr run at the same D and at its
                         branch point;
* ``lr_arm_ratios``      QiD of the peak-lr variants of one size over the reference lr's, point by point;
* ``averaging_ratios``   LAWA average at a branch point over the run's checkpoint there;
* ``cosine_ratios``      a cosine run's end vs the constant-lr run at the same D and the nearest
                         cooldown branch end;
* ``compare_forms``      Ouyang's log-linear form vs decay-aware forms, held out by size;
* ``batch_order_ratios`` a shuffled-batch run's QiD over the contiguous-batch run of its arm, point
                         by point (``batch_order``: how a run's batches were drawn);
* ``matched_loss_ratios`` the same at equal 16-bit loss instead of equal D;
* ``seed_ratios``        replicate spread: each seed's QiD over the first seed's of one batch order.

Units: D (``tokens``) training tokens, N (``n_params``) non-embedding parameters, P (``bits``) bits
per weight; QiD and losses in the frame's unit (nats/token or bits/byte: ratios and exponents do not
depend on it). Log fits use only points with QiD > 0 and report how many they dropped. Cluster
bootstraps resample clusters = (arm, seed): each size's trajectory of one seed with its branches,
averages and cosine runs (same initialisation and data order); with seeds in the frame each seed is
its own cluster. Pure: frames in, frames out (no files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import QidlabError

SLICE = ("method", "bits", "eval_set")
NEEDED = ("suite", "model", "step", "tokens", "n_params", "bits", "method", "eval_set", "qid", "loss16", "kind",
          "trajectory", "arm", "seed", "schedule", "peak_lr", "decay", "decay_tokens", "branch_from", "lr_factor")
RUN_KEY = ("suite", "trajectory", "seed")  # one trained run (its branches and averages share it)


def check_frame(frame: pd.DataFrame, needed: Sequence[str] = NEEDED) -> pd.DataFrame:
    """``frame`` if it has every column of ``needed``; else one QidlabError naming the missing ones."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise QidlabError(f"the trajectory analysis needs column(s) {', '.join(missing)} "
                          "(qidlab.train.trajectories.with_trajectories adds kind, trajectory, arm, ...)")
    if frame.empty:
        raise QidlabError("the trajectory analysis got an empty frame")
    return frame


def is_reference_arm(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of an arm at its size's reference peak lr: ``lr_factor == 1`` (the arm's
    peak lr over its size's reference lr, ``qidlab.train.trajectories``; seed runs, branches and
    averages share their arm's), whatever the arm is named. One QidlabError when the frame has no
    lr_factor column or rows without a value (data written before the column existed)."""
    if "lr_factor" not in frame.columns:
        raise QidlabError("telling a size's reference-lr arm from its peak-lr variants needs the lr_factor column "
                          "(qidlab.train.trajectories adds it), which the frame lacks")
    factor = pd.to_numeric(frame["lr_factor"], errors="coerce")
    if factor.isna().any():
        arms = sorted(frame.loc[factor.isna(), "arm"].astype(str).unique()) if "arm" in frame.columns else []
        raise QidlabError(f"lr_factor is missing on {int(factor.isna().sum())} of {len(frame)} rows"
                          + (f" (arms {', '.join(arms[:5])}{', ...' if len(arms) > 5 else ''})" if arms else ""))
    return factor == 1.0


def cluster_labels(frame: pd.DataFrame) -> pd.Series:
    """The bootstrap cluster of each row: ``arm|seed`` (a size's trajectory of one seed)."""
    return frame["arm"].astype(str) + "|seed" + frame["seed"].astype(str)


def slices(frame: pd.DataFrame, by: Sequence[str] = SLICE):
    """``(key dict, rows)`` per slice, in sorted order."""
    for key, rows in frame.groupby(list(by), sort=True):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), rows


# ---------------------------------------------------------------- cluster bootstrap

class _Clusters:
    """The clusters of a bootstrap (one label per row) and their resamples: each replicate draws
    ``n`` clusters with replacement (``numpy.random.default_rng(seed)``, all ``n_boot`` x ``n``
    draws at once); one cluster gives no replicate (a CI of NaN)."""

    def __init__(self, labels):
        self.codes, uniques = pd.factorize(pd.Series(labels).astype(str), sort=True)
        self.n = len(uniques)

    def _draws(self, n_boot: int, seed: int) -> np.ndarray:
        """``n_boot`` x ``n`` cluster indices drawn with replacement (none with one cluster)."""
        if self.n < 2:
            return np.empty((0, self.n), int)
        return np.random.default_rng(seed).integers(0, self.n, size=(n_boot, self.n))

    def sums(self, values) -> np.ndarray:
        """Per cluster, the sum of ``values`` (one per row)."""
        return np.bincount(self.codes, values, self.n)

    def rows(self, n_boot: int, seed: int):
        """Each replicate's row positions (its drawn clusters' rows, in draw order)."""
        members = [np.flatnonzero(self.codes == k) for k in range(self.n)]
        for draw in self._draws(n_boot, seed):
            yield np.concatenate([members[k] for k in draw])

    def ratio_ci(self, num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
        """95% CI of sum(num) / sum(den) over the drawn clusters, from per-cluster sums ``num``, ``den``
        (``sums``), vectorised over replicates."""
        idx = self._draws(n_boot, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            return _percentile(num[idx].sum(1) / den[idx].sum(1))


def _percentile(reps) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the finite replicates (NaN, NaN without any)."""
    reps = np.asarray(reps, float)
    reps = reps[np.isfinite(reps)]
    return (float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))) if reps.size else (np.nan, np.nan)


def geo_mean_ci(ratios, clusters, n_boot: int = 2000, seed: int = 0) -> dict:
    """Geometric mean of positive ``ratios`` with a 95% percentile CI from resampling ``clusters``
    (one label per ratio); non-positive or NaN ratios are dropped and counted. Keys: gm, lo, hi, n,
    clusters, dropped. One cluster gives no CI (lo = hi = NaN)."""
    r = np.asarray(ratios, float)
    ok = np.isfinite(r) & (r > 0)
    out = {"gm": np.nan, "lo": np.nan, "hi": np.nan, "n": int(ok.sum()), "clusters": 0, "dropped": int((~ok).sum())}
    if not ok.any():
        return out
    c, logs = _Clusters(np.asarray(clusters)[ok]), np.log(r[ok])
    lo, hi = np.exp(c.ratio_ci(c.sums(logs), c.sums(np.ones_like(logs)), n_boot, seed))
    out.update(gm=float(np.exp(logs.mean())), lo=lo, hi=hi, clusters=c.n)
    return out


# ---------------------------------------------------------------- a. QiD vs D at constant lr

def constant_runs(frame: pd.DataFrame, min_tokens: float = 0.0) -> pd.DataFrame:
    """Checkpoints of the constant-lr main runs at the reference lr (kind run, schedule constant,
    lr_factor 1) with D >= ``min_tokens`` tokens."""
    f = frame
    return f[(f.kind == "run") & (f.schedule == "constant") & is_reference_arm(f) & (f.tokens >= min_tokens)]


def fe_slope(logx: np.ndarray, logy: np.ndarray, groups, clusters, n_boot: int = 2000, seed: int = 0) -> dict:
    """Slope of ``logy`` on ``logx`` with a fixed effect per group (both demeaned within a group), and
    its 95% CI from resampling ``clusters`` (groups nest in clusters). Keys: slope, lo, hi, n, clusters."""
    d = pd.DataFrame({"x": logx, "y": logy, "g": pd.Series(groups).astype(str).values})
    xc = d.x - d.groupby("g").x.transform("mean")
    yc = d.y - d.groupby("g").y.transform("mean")
    c = _Clusters(clusters)
    sxy, sxx = c.sums(xc * yc), c.sums(xc * xc)
    lo, hi = c.ratio_ci(sxy, sxx, n_boot, seed)
    return {"slope": float(sxy.sum() / sxx.sum()) if sxx.sum() > 0 else np.nan, "lo": lo, "hi": hi,
            "n": len(d), "clusters": c.n}


def constant_beta(frame: pd.DataFrame, min_tokens: float = 4e6, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per slice: beta_const, the exponent of QiD in D (log QiD on log D, tokens) over constant-lr
    run checkpoints with D >= ``min_tokens``, a fixed effect per run, CI by cluster bootstrap.
    Columns: the slice, beta, lo, hi, n, clusters, dropped (checkpoints with QiD <= 0)."""
    rows = constant_runs(check_frame(frame), min_tokens)
    out = []
    for key, s in slices(rows):
        pos = s[s.qid > 0]
        fit = fe_slope(np.log(pos.tokens.to_numpy(float)), np.log(pos.qid.to_numpy()),
                       pos[list(RUN_KEY)].astype(str).agg("/".join, axis=1), cluster_labels(pos), n_boot, seed)
        out.append({**key, "beta": fit["slope"], "lo": fit["lo"], "hi": fit["hi"], "n": fit["n"],
                    "clusters": fit["clusters"], "dropped": len(s) - len(pos)})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- b. cooldown branches

def interp_loglog(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """``y`` at ``at``, linear in log x and log y between the two neighbouring points of ``x`` (at an
    existing x, its y); NaN outside the range of x or where a neighbour's y <= 0."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if at < x[0] or at > x[-1] or at <= 0:
        return np.nan
    hit = np.flatnonzero(x == at)
    if hit.size:
        return float(y[hit[0]])
    i = int(np.searchsorted(x, at))
    (x0, x1), (y0, y1) = x[i - 1:i + 1], y[i - 1:i + 1]
    if y0 <= 0 or y1 <= 0 or x0 <= 0:
        return np.nan
    t = (np.log(at) - np.log(x0)) / (np.log(x1) - np.log(x0))
    return float(np.exp(np.log(y0) + t * (np.log(y1) - np.log(y0))))


def _runs_by_key(frame: pd.DataFrame) -> dict:
    """``{(suite, trajectory, seed, method, bits, eval_set): run checkpoints sorted by step}``."""
    runs = frame[frame.kind == "run"].sort_values("step")
    return {k: g for k, g in runs.groupby(list(RUN_KEY) + list(SLICE), sort=False)}


def _key(row) -> tuple:
    return tuple(row[c] for c in RUN_KEY + SLICE)


def _at_step(run: pd.DataFrame, step: float, column: str = "qid") -> float:
    hit = run[run.step == step]
    return float(hit[column].iloc[0]) if len(hit) else np.nan


def cooldown_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cooldown branch end: its QiD (``qid_after``), the run's QiD interpolated log-log
    at the branch end's D (``qid_equal_d``) and at the branch point (``qid_before``), their ratios
    ``ratio_equal_d`` = after / equal-D and ``ratio_before`` = after / before, and the same for the
    16-bit loss (``loss16_after``, ``loss16_equal_d``: linear in log D); with the branch's arm,
    lr_factor and bootstrap ``cluster``."""
    frame = check_frame(frame)
    runs, out = _runs_by_key(frame), []
    for _, b in frame[frame.kind == "branch"].iterrows():
        run = runs.get(_key(b))
        if run is None:
            continue
        x = run.tokens.to_numpy(float)
        eq = interp_loglog(x, run.qid.to_numpy(float), float(b.tokens))
        l16 = interp_loglog(x, run.loss16.to_numpy(float), float(b.tokens))
        before = _at_step(run, b.branch_from)
        out.append({**{c: b[c] for c in RUN_KEY + SLICE}, "arm": b.arm, "lr_factor": b.lr_factor,
                    "cluster": f"{b.arm}|seed{b.seed}",
                    "n_params": b.n_params, "branch_from": int(b.branch_from), "tokens": b.tokens,
                    "qid_after": b.qid, "qid_equal_d": eq, "qid_before": before,
                    "ratio_equal_d": b.qid / eq, "ratio_before": b.qid / before,
                    "loss16_after": b.loss16, "loss16_equal_d": l16})
    return pd.DataFrame(out)


def summarize_ratio(table: pd.DataFrame, ratio: str, by: Sequence[str] = SLICE, n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """Per group of ``by``: geometric mean of ``table[ratio]`` with its cluster-bootstrap CI over
    ``table.cluster`` (``geo_mean_ci``); ratios with a non-positive side are dropped and counted."""
    out = []
    for key, s in slices(table, by):
        out.append({**key, **geo_mean_ci(s[ratio].to_numpy(float), s.cluster.to_numpy(), n_boot, seed)})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- c. peak lr

def lr_multiplier_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's peak lr over the peak lr of its size's reference arm (same n_params, lr_factor 1,
    constant schedule): 1 for reference arms, e.g. 0.5 or 2 for ``h384-l4-lr0.5x`` / ``-lr2x``."""
    base = frame[is_reference_arm(frame) & (frame.schedule == "constant")].groupby("n_params").peak_lr.first()
    return frame.peak_lr / frame.n_params.map(base)


def lr_arm_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint of a peak-lr variant arm (run checkpoints, branch ends, averages):
    its QiD over the reference arm's (lr_factor 1) at the same size, kind, step (and branch point),
    seed and slice.
    Columns: slice, kind, multiplier, step, tokens, branch_from, qid, qid_base, ratio."""
    f = check_frame(frame)
    f = f[f.schedule == "constant"].assign(multiplier=lr_multiplier_of(f[f.schedule == "constant"]))
    keys = ["n_params", "seed", "kind", "step", "branch_from", *SLICE]
    reference = is_reference_arm(f)
    base = f[reference][keys + ["qid"]].rename(columns={"qid": "qid_base"})
    variant = f[~reference].copy()
    variant["branch_from"], base["branch_from"] = variant.branch_from.fillna(-1), base.branch_from.fillna(-1)
    m = variant.merge(base, on=keys, how="inner")
    m["ratio"] = m.qid / m.qid_base
    cols = [*SLICE, "arm", "seed", "kind", "multiplier", "step", "tokens", "branch_from", "qid", "qid_base", "ratio"]
    return m[cols].sort_values([*SLICE, "multiplier", "kind", "step"]).reset_index(drop=True)


# ---------------------------------------------------------------- d. weight averaging

def averaging_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per LAWA average: its QiD over the run's checkpoint at the branch point it ends at
    (``ratio`` = averaged / not), and both 16-bit losses; with its arm, lr_factor and ``cluster``."""
    frame = check_frame(frame)
    runs, out = _runs_by_key(frame), []
    for _, a in frame[frame.kind == "average"].iterrows():
        run = runs.get(_key(a))
        if run is None:
            continue
        q, l16 = _at_step(run, a.branch_from), _at_step(run, a.branch_from, "loss16")
        out.append({**{c: a[c] for c in RUN_KEY + SLICE}, "arm": a.arm, "lr_factor": a.lr_factor,
                    "cluster": f"{a.arm}|seed{a.seed}",
                    "branch_from": int(a.branch_from), "tokens": a.tokens, "qid_avg": a.qid, "qid_run": q,
                    "ratio": a.qid / q, "loss16_avg": a.loss16, "loss16_run": l16})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- e. cosine runs

def cosine_ends(frame: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every cosine run (its largest step per suite, trajectory, seed)."""
    cos = frame[(frame.kind == "run") & (frame.schedule == "cosine")]
    last = cos.groupby(list(RUN_KEY)).step.transform("max")
    return cos[cos.step == last]


def cosine_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cosine run end: its QiD over the constant-lr run of the same arm and seed,
    interpolated log-log at the same D (``ratio_const``), and over the cooldown branch end of that
    run nearest in log D (``ratio_branch``, its D in ``branch_tokens``); 16-bit losses beside; with
    its arm, lr_factor and ``cluster``."""
    f = check_frame(frame)
    const = f[(f.kind == "run") & (f.schedule == "constant")]
    runs = {k: g.sort_values("step") for k, g in const.groupby(["arm", "seed", *SLICE])}
    branches = {k: g for k, g in f[(f.kind == "branch") & (f.schedule == "constant")].groupby(["arm", "seed", *SLICE])}
    out = []
    for _, c in cosine_ends(f).iterrows():
        k = (c.arm, c.seed, *(c[s] for s in SLICE))
        run, br = runs.get(k), branches.get(k)
        if run is None:
            continue
        x = run.tokens.to_numpy(float)
        q_const = interp_loglog(x, run.qid.to_numpy(float), float(c.tokens))
        near = br.iloc[int(np.argmin(np.abs(np.log(br.tokens.to_numpy(float) / c.tokens))))] if br is not None else None
        out.append({**{s: c[s] for s in SLICE}, "suite": c.suite, "arm": c.arm, "lr_factor": c.lr_factor, "seed": c.seed,
                    "cluster": f"{c.arm}|seed{c.seed}", "step": c.step, "tokens": c.tokens, "qid_cos": c.qid,
                    "qid_const": q_const, "ratio_const": c.qid / q_const,
                    "branch_tokens": near.tokens if near is not None else np.nan,
                    "qid_branch": near.qid if near is not None else np.nan,
                    "ratio_branch": c.qid / near.qid if near is not None else np.nan,
                    "loss16_cos": c.loss16, "loss16_const": interp_loglog(x, run.loss16.to_numpy(float), float(c.tokens)),
                    "loss16_branch": near.loss16 if near is not None else np.nan})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- f. law forms, held out

@dataclass(frozen=True)
class Form:
    """A log-linear QiD form: log QiD = c + sum_j theta_j * term_j(frame), fitted by least squares."""

    name: str
    terms: tuple[str, ...]


def _terms(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The candidate regressors: log D (tokens), -log N, -log P, decay (1 - lr/peak past warmup, 0..1)
    and decay_share (tokens trained while the lr decayed over D)."""
    d = frame.tokens.to_numpy(float)
    return {"logD": np.log(d), "logN": -np.log(frame.n_params.to_numpy(float)), "logP": -np.log(frame.bits.to_numpy(float)),
            "decay": frame.decay.to_numpy(float), "decay_share": frame.decay_tokens.to_numpy(float) / d}


FORMS = (Form("ouyang", ("logD", "logN", "logP")),
         Form("ouyang+decay", ("logD", "logN", "logP", "decay")),
         Form("ouyang+decay+share", ("logD", "logN", "logP", "decay", "decay_share")))


def fit_predict(form: Form, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Predicted log QiD of ``test`` from ``form`` fitted by least squares on log QiD of ``train``
    (QiD > 0); a term constant over ``train`` (e.g. log P within one bit width) is left out."""
    params, te = fit_params(form, train), _terms(test)
    use = [t for t in params if t != "const"]
    B = np.column_stack([np.ones(len(test))] + [te[t] for t in use])
    return B @ np.array([params["const"], *(params[t] for t in use)])


def fit_params(form: Form, rows: pd.DataFrame) -> dict[str, float]:
    """The fitted coefficients of ``form`` on ``rows`` (QiD > 0): ``{term: theta}`` in log units
    (logD's is beta, logN's alpha, logP's gamma, decay's delta), terms constant over rows left out."""
    if len(rows) == 0:
        raise QidlabError(f"no points to fit the form {form.name!r} on")
    X = _terms(rows)
    use = [t for t in form.terms if np.ptp(X[t]) > 1e-12]
    A = np.column_stack([np.ones(len(rows))] + [X[t] for t in use])
    theta, *_ = np.linalg.lstsq(A, np.log(rows.qid.to_numpy(float)), rcond=None)
    return {"const": float(theta[0]), **{t: float(v) for t, v in zip(use, theta[1:])}}


def law_points(frame: pd.DataFrame, min_tokens: float = 4e6) -> pd.DataFrame:
    """The points a law comparison uses: reference-arm constant-lr run checkpoints, cooldown branch ends
    and cosine run checkpoints with D >= ``min_tokens`` (averages and peak-lr variants left out),
    with a ``target`` flag on branch ends and cosine ends and the ``cluster`` label."""
    f = check_frame(frame)
    f = f[is_reference_arm(f) & (f.kind != "average") & (f.tokens >= min_tokens)]
    ends = cosine_ends(f).index
    return f.assign(target=(f.kind == "branch") | f.index.isin(ends), cluster=cluster_labels(f))


def _protocol_predictions(points: pd.DataFrame, forms: Sequence[Form], protocol: str) -> pd.DataFrame:
    """Log errors (predicted - measured log QiD) of each form on the target points: ``loso`` fits on
    every other cluster's points; ``const`` fits on constant-lr runs only (all clusters)."""
    pos = points[points.qid > 0]
    tests = pos[pos.target]
    pieces = []
    for cluster, test in tests.groupby("cluster"):
        train = pos[pos.cluster != cluster] if protocol == "loso" else pos[(pos.kind == "run") & (pos.schedule == "constant")]
        if len(train) == 0:
            continue
        errs = {f.name: fit_predict(f, train, test) - np.log(test.qid.to_numpy(float)) for f in forms}
        pieces.append(pd.DataFrame({"cluster": cluster, "kind": np.where(test.kind == "branch", "branch", "cosine"), **errs}))
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


def _median_diff_ci(errs: pd.DataFrame, a: str, b: str, n_boot: int, seed: int) -> tuple[float, float, float]:
    """median|err_a| - median|err_b| and its 95% CI from resampling clusters."""
    ea, eb = np.abs(errs[a].to_numpy()), np.abs(errs[b].to_numpy())
    reps = [np.median(ea[i]) - np.median(eb[i]) for i in _Clusters(errs.cluster).rows(n_boot, seed)]
    return (float(np.median(ea) - np.median(eb)), *_percentile(reps))


def compare_forms(frame: pd.DataFrame, min_tokens: float = 4e6, forms: Sequence[Form] = FORMS,
                  protocols: Sequence[str] = ("loso", "const"), by: Sequence[str] = SLICE,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per slice and protocol: each form's median |log error| (natural log of predicted/measured QiD)
    and mean log error (bias) on held-out branch ends and cosine ends (``law_points``), and the
    difference of median |log error| of the first form minus each other form with its cluster-
    bootstrap CI (> 0: the other form predicts better). ``winner``: the form with the smallest median,
    "tie" when the CI of that difference against the first form includes 0, "same fit" when the
    forms' extra terms are constant over the training rows (protocol ``const``: no decay there)."""
    points, out = law_points(frame, min_tokens), []
    for key, s in slices(points, by):
        for protocol in protocols:
            errs = _protocol_predictions(s, forms, protocol)
            if errs.empty:
                continue
            out.append(_form_row(key, protocol, errs, forms, (~(s.qid > 0)).sum(), n_boot, seed))
    return pd.DataFrame(out)


def _form_row(key: dict, protocol: str, errs: pd.DataFrame, forms: Sequence[Form], dropped: int,
              n_boot: int, seed: int) -> dict:
    row = {**key, "protocol": protocol, "n": len(errs), "clusters": errs.cluster.nunique(), "dropped": int(dropped)}
    first = forms[0].name
    for f in forms:
        row[f"med_{f.name}"] = float(np.median(np.abs(errs[f.name])))
        row[f"bias_{f.name}"] = float(errs[f.name].mean())
    best = min(forms, key=lambda f: row[f"med_{f.name}"]).name
    for f in forms[1:]:
        row[f"diff_{f.name}"], row[f"lo_{f.name}"], row[f"hi_{f.name}"] = _median_diff_ci(errs, first, f.name, n_boot, seed)
    separated = best == first and all(row[f"lo_{f.name}"] < 0 and row[f"hi_{f.name}"] < 0 for f in forms[1:])
    separated = separated or (best != first and row[f"lo_{best}"] > 0)
    same = all(abs(row[f"diff_{f.name}"]) < 1e-12 and row[f"hi_{f.name}"] - row[f"lo_{f.name}"] < 1e-12 for f in forms[1:])
    row["winner"] = "same fit" if same else best if separated else "tie"
    return row


def form_coefficients(frame: pd.DataFrame, form: Form = FORMS[1], min_tokens: float = 4e6,
                      by: Sequence[str] = SLICE, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per slice: ``form``'s coefficients fitted on every ``law_points`` row with QiD > 0 (a term
    constant over the slice left out), each with a 95% CI from resampling clusters and refitting.
    Columns: the slice, term, value, lo, hi, n, clusters (``decay``'s value is delta: QiD x
    exp(delta) at a fully decayed lr, equal D and N)."""
    points, out = law_points(frame, min_tokens), []
    for key, s in slices(points[points.qid > 0], by):
        hat, c = fit_params(form, s), _Clusters(s.cluster)
        reps = [fit_params(form, s.iloc[i]) for i in c.rows(n_boot, seed)]
        for t, v in hat.items():
            lo, hi = _percentile([r.get(t, np.nan) for r in reps])
            out.append({**key, "term": t, "value": v, "lo": lo, "hi": hi, "n": len(s), "clusters": c.n})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- g. batch order and seeds

def _reference_runs(frame: pd.DataFrame, min_tokens: float) -> pd.DataFrame:
    """Run checkpoints (kind run) of reference-lr arms with D >= ``min_tokens``; needs ``batch_order``."""
    frame = check_frame(frame, (*NEEDED, "batch_order"))
    return frame[(frame.kind == "run") & is_reference_arm(frame) & (frame.tokens >= min_tokens)]


def _is_first_seed(runs: pd.DataFrame) -> pd.Series:
    """True on the rows of each arm's lowest seed among ``runs``."""
    return runs.seed == runs.groupby("arm").seed.transform("min")


def _paired(runs: pd.DataFrame, base: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """``runs`` beside ``base``'s checkpoint of the same suite, arm, step and slice (``base``'s qid,
    loss16 and seed with ``suffix``): ``ratio`` = qid over base's, ``loss16_diff`` = loss16 minus
    base's, ``cluster`` = the arm."""
    keys = ["suite", "arm", "step", *SLICE]
    pairs = runs.merge(base[[*keys, "qid", "loss16", "seed"]], on=keys, suffixes=("", suffix))
    return pairs.assign(ratio=pairs.qid / pairs[f"qid{suffix}"], loss16_diff=pairs.loss16 - pairs[f"loss16{suffix}"],
                        cluster=pairs.arm)


def batch_order_ratios(frame: pd.DataFrame, min_tokens: float = 0.0) -> pd.DataFrame:
    """One row per checkpoint of a shuffled-batch run (``batch_order`` "shuffled"; reference lr, kind
    run, D >= ``min_tokens``): its QiD over the contiguous-batch run of the same arm (its lowest seed)
    at the same step and slice (``ratio`` = shuffled / contiguous) and ``loss16_diff`` = loss16(shuffled)
    - loss16(contiguous). ``cluster``: the arm (every shuffled seed shares its contiguous run)."""
    runs = _reference_runs(frame, min_tokens)
    contiguous = runs[runs.batch_order == "contiguous"]
    pairs = _paired(runs[runs.batch_order == "shuffled"], contiguous[_is_first_seed(contiguous)], "_contiguous")
    return pairs[["suite", "arm", "step", *SLICE, "seed", "seed_contiguous", "tokens", "qid", "qid_contiguous",
                  "ratio", "loss16_diff", "cluster", "lr_factor"]]


def matched_loss_ratios(frame: pd.DataFrame, min_tokens: float = 0.0) -> pd.DataFrame:
    """Shuffled vs contiguous batches at equal 16-bit loss instead of equal D: for each checkpoint of
    a shuffled-batch run (reference lr, kind run, D >= ``min_tokens``, QiD > 0), the contiguous run of
    its arm (lowest seed; its checkpoints with D >= ``min_tokens`` and QiD > 0) interpolated
    piecewise-linearly in (loss16, log QiD) and (loss16, log D) at the shuffled checkpoint's loss16,
    where that loss lies inside the contiguous run's range (else the checkpoint is left out).
    ``ratio`` = QiD(shuffled) / QiD(contiguous) at equal loss16; ``tokens_ratio`` = D(shuffled) /
    D(contiguous) at equal loss16; ``cluster``: the arm."""
    runs = _reference_runs(frame, min_tokens)
    runs = runs[runs.qid > 0]
    contiguous = runs[runs.batch_order == "contiguous"]
    contiguous = contiguous[_is_first_seed(contiguous)]
    keys = ["suite", "arm", *SLICE]
    curves = {k: c.sort_values("loss16") for k, c in contiguous.groupby(keys)}
    out = []
    for k, shuffled in runs[runs.batch_order == "shuffled"].groupby(keys):
        curve = curves.get(k)
        if curve is None or len(curve) < 2:
            continue
        x = curve.loss16.to_numpy(float)
        inside = shuffled[(shuffled.loss16 >= x[0]) & (shuffled.loss16 <= x[-1])]
        q = np.exp(np.interp(inside.loss16, x, np.log(curve.qid.to_numpy(float))))
        d = np.exp(np.interp(inside.loss16, x, np.log(curve.tokens.to_numpy(float))))
        out.append(inside[[*keys, "seed", "step", "tokens", "loss16", "qid", "lr_factor"]].assign(
            qid_contiguous=q, tokens_contiguous=d, ratio=inside.qid.to_numpy(float) / q,
            tokens_ratio=inside.tokens.to_numpy(float) / d, cluster=inside.arm))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def seed_ratios(frame: pd.DataFrame, order: str, min_tokens: float = 0.0) -> pd.DataFrame:
    """Replicate spread: for each arm with two or more seeds of batch order ``order`` (reference lr,
    kind run, D >= ``min_tokens``), each other seed's QiD over the lowest seed's at the same step and
    slice (``ratio``), ``loss16_diff`` likewise; ``cluster``: the arm."""
    runs = _reference_runs(frame, min_tokens)
    runs = runs[runs.batch_order == order]
    first = _is_first_seed(runs)
    pairs = _paired(runs[~first], runs[first], "_first")
    return pairs[["suite", "arm", "step", *SLICE, "seed", "seed_first", "tokens", "ratio", "loss16_diff", "cluster",
                  "lr_factor"]]
