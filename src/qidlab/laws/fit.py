"""Fitting a law to a measurement table: the public verb ``fit_law`` and the
sklearn-shaped ``LawEstimator``.

How a fit works (docs/architecture.md, "Fitting"):
  * the target (qid or loss, nats) is fitted in log space;
  * laws whose log is affine in their parameters (pure power laws) are solved exactly by
    least squares; the others by Hoffmann et al.'s Approach 3: Huber loss (delta 1e-3) on
    log residuals, summed over points, L-BFGS from a grid of starts (all starts at once);
  * a variable constant in the data folds its terms into a coefficient (``Law.folds``);
  * every solver keeps each parameter inside its declared bounds (``Param.bounds``); a parameter
    that ends on a bound is listed in ``FitResult.at_bound`` (its value is the bound, not an
    estimate the data support);
  * targets <= 0 (QiD noise at high bit widths) are dropped (default) or floored; empty (NaN)
    targets are dropped and counted (``n_missing``);
  * ``weights="ci"`` weights each point by the inverse variance of its log target, from its
    measured 95% CI through the delta method (``noise_weights``);
  * bootstrap CIs resample whole clusters (a model: suite + model, and its training ``run``;
    n_params when nothing else names a model) when a cluster has several points, else points
    (``resampling``; the interval is explained in ``_bootstrap``); hold-out of the largest
    value checks extrapolation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import provenance
from ..errors import NotFittedError, QidlabError
from ..tables import require_columns
from .optim import huber, minimize_batched, weighted_lstsq
from .registry import get_law
from .spec import Law, TermsLaw, logsumexp_grad

if TYPE_CHECKING:
    import pandas as pd

NONPOSITIVE_POLICIES = ("drop", "floor")
WEIGHTS = ("none", "ci")
#: Below this many clusters a cluster-bootstrap interval is flagged as unreliable.
MIN_CLUSTERS = 8


@dataclass(frozen=True)
class FitOptions:
    """How to fit. ``grid`` maps parameter names to start values in fit space (log of
    coefficients fitted in log space); ``resample`` is ``"auto"`` (whole models when a model
    has several points, see ``resampling``), ``"points"``, or column(s) (comma-separated) whose
    values define the clusters a bootstrap draws whole (e.g. ``n_params``); ``weights`` is
    ``"none"`` or ``"ci"`` (inverse-variance weights from the target's measured CI columns,
    ``<target>_ci_low``/``<target>_ci_high``, see ``noise_weights``)."""

    method: str = "auto"  # auto | lstsq | huber
    huber_delta: float = 1e-3
    grid: Mapping[str, Sequence[float]] | None = None
    nonpositive: str = "drop"  # drop | floor
    floor: float = 1e-4  # nats, used by nonpositive="floor"
    drop_highest: int = 0
    bootstrap: int = 0
    resample: str = "auto"
    weights: str = "none"  # none | ci
    seed: int = 0
    holdout: tuple[str, ...] = ("n_params", "tokens")
    target: str | None = None
    max_iter: int = 3000
    screen: bool = True  # multistart screening (below); False runs every start to convergence
    screen_iters: int = 20
    screen_keep: int = 128

    def check(self) -> None:
        if self.method not in ("auto", "lstsq", "huber"):
            raise QidlabError(f"unknown fit method {self.method!r} (use auto, lstsq or huber)")
        if self.nonpositive not in NONPOSITIVE_POLICIES:
            raise QidlabError(f"unknown non-positive policy {self.nonpositive!r} (use drop or floor)")
        if self.huber_delta <= 0:
            raise QidlabError("huber delta must be > 0")
        if self.floor <= 0:
            raise QidlabError("the floor for non-positive targets must be > 0")
        if self.weights not in WEIGHTS:
            raise QidlabError(f"unknown weights {self.weights!r} (use none or ci)", params=("weights",))
        if self.drop_highest < 0 or self.bootstrap < 0:
            raise QidlabError("`drop_highest` and `bootstrap` must be >= 0", params=("drop_highest", "bootstrap"))


@dataclass
class FitResult:
    """One fitted law on one group of data. ``params`` are natural values (None for a
    folded parameter); ``fixed`` holds the values folded parameters were fixed at."""

    law: str
    target: str
    group: dict[str, Any]
    params: dict[str, float | None]
    fixed: dict[str, float]
    folded: dict[str, str]
    n: int
    n_nonpositive: int
    nonpositive_policy: str
    dropped_highest: int
    method: str
    metrics: dict[str, float]
    ci95: dict[str, list[float]] | None = None
    bootstrap: dict[str, Any] | None = None
    holdout: list[dict[str, Any]] = field(default_factory=list)
    n_missing: int = 0  # points whose target is empty (NaN), dropped
    at_bound: list[str] = field(default_factory=list)  # parameters that ended on a declared bound
    weights: str = "none"  # "ci": inverse-variance weights from the measured CIs
    #: variable -> [min, max] of the points fitted (natural units); None in fit files written
    #: before qidlab recorded it (a prediction then says the fitted range is unknown)
    ranges: dict[str, list[float]] | None = None

    def all_params(self) -> dict[str, float]:
        """Every parameter, folded ones at their fixed values: what prediction uses."""
        merged = {k: v for k, v in self.params.items() if v is not None}
        merged.update(self.fixed)
        return merged

    def to_dict(self) -> dict[str, Any]:
        out = {
            "group": self.group, "law": self.law, "target": self.target, "params": self.params,
            "n": self.n, "n_missing": self.n_missing, "n_nonpositive": self.n_nonpositive, "nonpositive_policy": self.nonpositive_policy,
            "dropped_highest": self.dropped_highest, "method": self.method, "metrics": self.metrics,
            "folded": self.folded, "fixed": self.fixed, "holdout": self.holdout, "at_bound": self.at_bound,
            "weights": self.weights,
        }
        if self.ranges is not None:
            out["ranges"] = self.ranges
        if self.ci95 is not None:
            out["ci95"] = self.ci95
            out["bootstrap"] = self.bootstrap
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FitResult":
        keys = cls.__dataclass_fields__
        return cls(**{k: d[k] for k in keys if k in d})


# ---------------------------------------------------------------------------
# data preparation


@dataclass
class Prepared:
    X: dict[str, np.ndarray]
    y: np.ndarray
    target: str
    n_nonpositive: int
    dropped_highest: int
    frame: "pd.DataFrame"
    n_missing: int = 0  # target empty (NaN): dropped
    noise: np.ndarray | None = None  # weights="ci": inverse-variance weights (mean 1), else None


def prepare(frame: "pd.DataFrame", law: Law, opts: FitOptions) -> Prepared:
    """Pick the target, apply ``drop_highest`` and the non-positive policy, collect X."""
    target = opts.target or next((t for t in law.targets if t in frame.columns), None)
    if target is None:
        raise QidlabError(
            f"law {law.name!r} is fitted to {' or '.join(law.targets)}; the table has none of them "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    require_columns(frame, [target], f"fitting {law.name}")
    needed = [v.name for v in law.variables if v.default is None]
    require_columns(frame, needed, f"law {law.name!r}")
    missing = frame[target].isna()
    n_missing = int(missing.sum())
    frame = frame[~missing]
    if len(frame) == 0:
        raise QidlabError(f"no point to fit: {target} is empty (NaN) in all {n_missing} rows")
    dropped = 0
    if opts.drop_highest:
        if opts.drop_highest >= len(frame):
            raise QidlabError(f"`drop_highest` {opts.drop_highest} would drop all {len(frame)} points",
                              params=("drop_highest",))
        frame = frame.drop(frame[target].nlargest(opts.drop_highest).index)
        dropped = opts.drop_highest
    y = frame[target].to_numpy(dtype=float)
    nonpos = ~(y > 0)
    n_nonpos = int(nonpos.sum())
    if opts.nonpositive == "drop":
        frame, y = frame[~nonpos], y[~nonpos]
    else:
        y = np.where(nonpos, opts.floor, y)
    if len(y) == 0:
        raise QidlabError(f"no point with {target} > 0 to fit ({n_nonpos} non-positive dropped)")
    X = {}
    for v in law.variables:
        if v.name in frame.columns:
            values = frame[v.name].to_numpy(dtype=float)
            if np.isnan(values).any():
                rows = np.flatnonzero(np.isnan(values))[:5] + 1
                raise QidlabError(f"column {v.name!r} has empty cells (data rows {', '.join(map(str, rows))}...)")
            if ((values <= 0) if v.positive else (values < 0)).any():
                sign = "> 0" if v.positive else ">= 0"
                raise QidlabError(f"column {v.name!r} must be {sign} for law {law.name!r}")
            X[v.name] = values
        else:
            X[v.name] = np.full(len(y), float(v.default))
    noise = noise_weights(frame, target, y) if opts.weights == "ci" else None
    return Prepared(X=X, y=y, target=target, n_nonpositive=n_nonpos, dropped_highest=dropped, frame=frame,
                    n_missing=n_missing, noise=noise)


def noise_weights(frame: "pd.DataFrame", target: str, y: np.ndarray) -> np.ndarray:
    """Inverse-variance weights of log ``y`` from each point's measured 95% CI (columns
    ``<target>_ci_low``, ``<target>_ci_high``, nats), through the delta method: sd(y) = CI width
    / (2 * 1.96), sd(log y) = sd(y) / y. Scaled to mean 1. Points with target <= 0 are not
    reached (the log-space fit drops or floors them first); a floored point gets the weight of
    its floor value, so it counts little. ``QidlabError`` when a CI is missing or empty."""
    low, high = f"{target}_ci_low", f"{target}_ci_high"
    require_columns(frame, [low, high], "`weights` ci", params=("weights",))
    width = frame[high].to_numpy(dtype=float) - frame[low].to_numpy(dtype=float)
    bad = ~(width > 0)
    if bad.any():
        raise QidlabError(f"`weights` ci: {int(bad.sum())} of {len(width)} points have no measured CI of {target} "
                          f"(empty or zero width); fit them without weights or select rows", params=("weights",))
    sd_log = width / (2 * 1.959964) / y
    w = 1.0 / sd_log**2
    return w / w.mean()


def constant_columns(X: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Variables whose values do not vary (relative spread < 1e-12)."""
    out = {}
    for name, x in X.items():
        if x.size and np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))):
            out[name] = float(x[0])
    return out


def resolve_folds(law: Law, X: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict[str, str]]:
    """Which parameters the data cannot identify: {param: fixed natural value}, {param: why}."""
    const = constant_columns(X)
    for name in law.must_vary:
        if name in const:
            raise QidlabError(
                f"law {law.name!r} needs {name} to vary, but it is constant ({const[name]:g}) in this data"
            )
    fixed, why = {}, {}
    for fold in law.folds:
        if all(v in const for v in fold.when):
            where = ", ".join(f"{v} = {const[v]:g}" for v in fold.when)
            for p, value in fold.fix.items():
                fixed[p] = value
                why[p] = f"{where} is constant in this fit; its term is absorbed into {fold.into}"
    return fixed, why


# ---------------------------------------------------------------------------
# the numerical core


class _Problem:
    """log-space fit of ``law`` with some parameters fixed: objective, gradient, starts."""

    def __init__(self, law: Law, X, logy, fixed: Mapping[str, float], opts: FitOptions):
        self.law, self.X, self.logy, self.opts = law, X, logy, opts
        self.k = len(law.params)
        self.fixed_idx = [i for i, p in enumerate(law.params) if p.name in fixed]
        self.free_idx = [i for i, p in enumerate(law.params) if p.name not in fixed]
        self.theta_fixed = np.array([law.params[i].to_fit(fixed[law.params[i].name]) for i in self.fixed_idx])
        bounds = [law.params[i].fit_bounds() for i in self.free_idx]
        self.lower = np.array([b[0] for b in bounds])
        self.upper = np.array([b[1] for b in bounds])
        self._terms = None
        if isinstance(law, TermsLaw):
            self._terms = [
                (A[:, self.free_idx], c + (A[:, self.fixed_idx] @ self.theta_fixed if self.fixed_idx else 0.0))
                for A, c in law.terms(X)
            ]

    def full(self, x: np.ndarray) -> np.ndarray:
        theta = np.zeros(x.shape[:-1] + (self.k,))
        theta[..., self.free_idx] = x
        if self.fixed_idx:
            theta[..., self.fixed_idx] = self.theta_fixed
        return theta

    def log_predict(self, x: np.ndarray) -> np.ndarray:
        return self.law.log_predict(self.full(x), self.X)

    def value_grad(self, weights: np.ndarray | None):
        """fg(x, idx) for minimize_batched: summed (weighted) Huber loss of log residuals."""
        delta = self.opts.huber_delta

        def fg(x, idx):
            w = 1.0 if weights is None else (weights if weights.ndim == 1 else weights[idx])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if self._terms is not None:
                    vals = [x @ A.T + c for A, c in self._terms]  # J arrays (m, n)
                    lp, soft = (vals[0], [1.0]) if len(vals) == 1 else logsumexp_grad(vals)
                    h, dh = huber(lp - self.logy, delta)
                    v = w * dh
                    g = sum((v * s) @ A for s, (A, _) in zip(soft, self._terms))
                else:
                    lp, jac = self.law.log_predict_grad(self.full(x), self.X)
                    h, dh = huber(lp - self.logy, delta)
                    v = w * dh
                    g = np.einsum("mn,mnk->mk", v, jac)[:, self.free_idx]
                f = np.sum(w * h, axis=1)
            bad = ~np.isfinite(f) | ~np.all(np.isfinite(g), axis=1)
            f = np.where(bad, np.inf, f)
            g = np.where(bad[:, None], 0.0, g)
            return f, g

        return fg

    def starts(self) -> np.ndarray:
        axes = []
        grid = self.opts.grid or {}
        for i in self.free_idx:
            p = self.law.params[i]
            values = grid.get(p.name) or p.grid or (p.to_fit(p.start),)
            axes.append(np.asarray(values, dtype=float))
        return np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(self.free_idx))

    # -- solvers --
    def solve_lstsq(self, weights=None) -> np.ndarray:
        """Exact (weighted) least squares inside the parameters' bounds."""
        (A, c), = self._terms
        return weighted_lstsq(A, self.logy - c, weights, self.lower, self.upper)

    def at_bound(self, x: np.ndarray) -> list[str]:
        """Free parameters whose fit-space value ``x`` lies on a bound (within 1e-6, relative)."""
        out = []
        for j, i in enumerate(self.free_idx):
            lo, hi, v = self.lower[j], self.upper[j], float(x[j])
            if v <= lo + 1e-6 * max(1.0, abs(lo)) or v >= hi - 1e-6 * max(1.0, abs(hi)):
                out.append(self.law.params[i].name)
        return out

    def solve_huber(self, starts: np.ndarray, weights=None, polish: int = 0):
        """Batched L-BFGS from every start. With screening (default, for more starts than
        ``screen_keep``), all starts first take ``screen_iters`` iterations and only the
        ``screen_keep`` best go on to convergence; bench/fit_speed.py shows this finds the
        same optimum as running all 4,500 of Hoffmann's starts to the end."""
        fg = self.value_grad(weights)
        o = self.opts
        if (weights is None or weights.ndim == 1) and o.screen and len(starts) > o.screen_keep:
            first = minimize_batched(fg, starts, self.lower, self.upper, max_iter=o.screen_iters)
            starts = first.x[np.argsort(first.f)[: o.screen_keep]]
        res = minimize_batched(fg, starts, self.lower, self.upper, max_iter=o.max_iter)
        if not polish:
            return res.x, res.f
        from scipy.optimize import minimize

        order = np.argsort(res.f)[:polish]
        best_x, best_f = res.x[order[0]], res.f[order[0]]
        for j in order:
            if not np.isfinite(res.f[j]):
                continue
            out = minimize(
                lambda z: tuple(a[0] for a in fg(z[None], np.zeros(1, dtype=int))),
                res.x[j], jac=True, method="L-BFGS-B", bounds=list(zip(self.lower, self.upper)),
                options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
            )
            if out.fun < best_f:
                best_x, best_f = out.x, float(out.fun)
        return best_x, best_f


def _fit_arrays(law: Law, X, y, fixed, opts: FitOptions, weights=None, starts=None, noise=None):
    """Fit on arrays; returns (problem, free-parameter solution(s), objective, method).

    ``weights`` (B, n): one fit per row (bootstrap replicates; include ``noise`` in them);
    ``noise`` (n,): the point weights of the single fit (``weights`` None)."""
    problem = _Problem(law, X, np.log(y), fixed, opts)
    method = opts.method
    if method == "auto":
        method = "lstsq" if law.is_power_law else "huber"
    if method == "lstsq":
        if not law.is_power_law:
            raise QidlabError(f"law {law.name!r} is not a pure power law; fit it with method 'huber'")
        if weights is not None:
            return problem, problem.solve_lstsq(weights), None, method
        x = problem.solve_lstsq(None if noise is None else noise[None])
        x = x if noise is None else x[0]
        resid = problem.log_predict(x) - problem.logy
        return problem, x, float(np.sum((1.0 if noise is None else noise) * resid**2)), method
    if starts is None:
        starts = problem.starts()
    if weights is None:
        x, f = problem.solve_huber(starts, weights=noise, polish=5)
        return problem, x, f, method
    x, _ = problem.solve_huber(starts, weights=weights)
    return problem, x, None, method


def _metrics(problem: _Problem, x: np.ndarray, objective: float, method: str) -> dict[str, float]:
    r = problem.log_predict(x) - problem.logy
    ss_tot = float(np.sum((problem.logy - problem.logy.mean()) ** 2))
    if np.ptp(problem.logy) <= 1e-12 * max(1.0, float(np.max(np.abs(problem.logy)))):
        ss_tot = 0.0  # every target the same (up to rounding): R2 is undefined, not a number
    rel = np.abs(np.expm1(r))
    return {
        "objective": objective,
        "rmse_log": float(np.sqrt(np.mean(r**2))),
        "r2_log": float(1 - np.sum(r**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "mape": float(np.mean(rel) * 100),
        "max_ape": float(np.max(rel) * 100),
        "loss_kind": "squared log residual" if method == "lstsq" else f"huber(delta={problem.opts.huber_delta})",
    }


def _natural(law: Law, problem: _Problem, x: np.ndarray) -> dict[str, float]:
    theta = problem.full(np.asarray(x))
    return {p.name: p.to_natural(float(t)) for p, t in zip(law.params, theta)}


def cluster_columns(frame: "pd.DataFrame") -> list[str]:
    """The columns that name a model in ``frame``: suite + model (+ run, the training seed,
    when any row has one); n_params (+ run) when no model column names one; [] when none."""
    run = ["run"] if "run" in frame.columns and frame["run"].notna().any() else []
    if "model" in frame.columns and frame["model"].notna().any():
        return [c for c in ("suite",) if c in frame.columns] + ["model"] + run
    return (["n_params"] if "n_params" in frame.columns else []) + run


def resampling(frame: "pd.DataFrame", resample: str) -> tuple[np.ndarray | None, list[str]]:
    """What a bootstrap draws: (cluster code per row, the cluster columns), or (None, []) for
    independent points. ``resample``: "auto" (whole models, ``cluster_columns``, when some model
    has several points and there are 3 models or more: with 2, most replicates would hold one
    model only and identify nothing; else points), "points", or column(s)."""
    if resample == "points":
        return None, []
    if resample == "auto":
        cols = cluster_columns(frame)
        if not cols:
            return None, []
        codes = _cluster_codes(frame, cols)
        n_clusters = int(codes.max()) + 1
        return (codes, cols) if 3 <= n_clusters < len(frame) else (None, [])
    cols = [c.strip() for c in resample.split(",") if c.strip()]
    require_columns(frame, cols, "`resample`", params=("resample",))
    codes = _cluster_codes(frame, cols)
    if codes.max() + 1 < 2:
        raise QidlabError(f"`resample` {resample}: needs at least 2 groups, found {int(codes.max()) + 1}",
                          params=("resample",))
    return codes, cols


def _cluster_codes(frame: "pd.DataFrame", cols: Sequence[str]) -> np.ndarray:
    """0..G-1 per row: which combination of ``cols`` values it has (an empty cell is a value)."""
    return frame.groupby(list(cols), dropna=False, sort=True).ngroup().to_numpy()


def _bootstrap(law, prepared: Prepared, fixed, opts: FitOptions, x_hat):
    """95% intervals of the free parameters from ``opts.bootstrap`` refits on resampled data.

    Points (``resample="points"``, or no model with several points): a multinomial draw of
    points, percentile interval (many independent points: the percentile interval is adequate).

    Clusters (the default when a model contributes several points: its checkpoints and bit
    widths share the model's quirks, so they are not independent): whole clusters are drawn, and
    the interval is the BCa interval (Efron 1987) with a small-sample expansion. BCa because it
    needs only refits (B resamples and G leave-one-cluster-out jackknife fits), so it serves the
    exact least-squares and the Huber solvers alike, and it corrects the percentile interval's
    median bias and skewness, in fit space and so for any monotone reparametrisation. A wild
    cluster bootstrap would need a linear model (not the Huber laws); a studentized one a
    cluster-robust standard error per replicate, which the Huber solver does not give. A
    cluster bootstrap's spread is that of the CR0 sandwich, about (G-1)/G of the variance, and
    the estimate is referred to a normal where G clusters warrant a t with G-1 degrees of
    freedom; so each interval end's distance from the estimate is multiplied by
    sqrt(G/(G-1)) * t(0.975, G-1) / z(0.975), the CR1 + t(G-1) correction of Cameron, Gelbach
    and Miller (2008) (1.44 at G = 6, 1.17 at 12, 1.06 at 30). tests/test_cluster_coverage.py
    checks the coverage with per-model random effects. Below ``MIN_CLUSTERS`` clusters the
    result carries a warning: no resampling interval is reliable from so few."""
    rng = np.random.default_rng(opts.seed)
    n, B = len(prepared.y), opts.bootstrap
    codes, cols = resampling(prepared.frame, opts.resample)
    if codes is None:
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(float)
    else:
        G = int(codes.max()) + 1
        draws = rng.multinomial(G, np.full(G, 1.0 / G), size=B)
        weights = draws[:, codes].astype(float)
    if prepared.noise is not None:
        weights = weights * prepared.noise
    starts = np.repeat(np.asarray(x_hat)[None], B, axis=0)
    problem, xs, _, _ = _fit_arrays(law, prepared.X, prepared.y, fixed, opts, weights=weights, starts=starts)
    thetas = problem.full(xs)
    ok = np.all(np.isfinite(thetas), axis=1)
    theta_hat = problem.full(np.asarray(x_hat))
    info: dict[str, Any] = {"replicates": B, "failed": int((~ok).sum()), "seed": opts.seed,
                            "resample": "points" if codes is None else "+".join(cols),
                            "interval": "percentile"}
    if codes is not None:
        jack = _jackknife(law, prepared, fixed, opts, codes, x_hat)
        info.update(interval="bca", clusters=G, cluster_by=list(cols), expansion=round(_expansion(G), 4))
        if G < MIN_CLUSTERS:
            info["warning"] = (f"only {G} clusters ({'+'.join(cols)}): cluster-bootstrap intervals are unreliable "
                               f"below {MIN_CLUSTERS}; read them as rough")
    if codes is None and opts.resample == "auto" and cluster_columns(prepared.frame):
        G = int(_cluster_codes(prepared.frame, cluster_columns(prepared.frame)).max()) + 1
        if 1 < G < len(prepared.y):
            info["warning"] = (f"only {G} clusters ({'+'.join(cluster_columns(prepared.frame))}): resampled points, "
                               "so the intervals ignore that the points of one model are correlated")
    if info["failed"] > 0.1 * B:
        info["warning"] = ((info.get("warning", "") + "; ") if info.get("warning") else "") + (
            f"{info['failed']} of {B} replicates could not be fitted (they lacked the spread to identify every "
            "parameter): the intervals come from the rest")
    ci = {}
    for i, p in enumerate(law.params):
        if p.name in fixed:
            continue
        reps = thetas[ok, i]
        if codes is None:
            lo, hi = np.percentile(reps, [2.5, 97.5])
        else:
            lo, hi = _bca(reps, theta_hat[i], jack[:, i], _expansion(G))
            fit_lo, fit_hi = p.fit_bounds()
            lo, hi = max(lo, fit_lo), min(hi, fit_hi)  # the expansion stays inside the declared bounds
        ends = sorted([p.to_natural(lo), p.to_natural(hi)])
        ci[p.name] = [float(ends[0]), float(ends[1])]
    info["params"] = _replicate_params(law, thetas[ok], fixed)
    return ci, info


def _jackknife(law, prepared: Prepared, fixed, opts: FitOptions, codes: np.ndarray, x_hat) -> np.ndarray:
    """Fit-space parameters of the G leave-one-cluster-out fits, (G, k)."""
    G = int(codes.max()) + 1
    weights = (codes[None, :] != np.arange(G)[:, None]).astype(float)
    if prepared.noise is not None:
        weights = weights * prepared.noise
    starts = np.repeat(np.asarray(x_hat)[None], G, axis=0)
    problem, xs, _, _ = _fit_arrays(law, prepared.X, prepared.y, fixed, opts, weights=weights, starts=starts)
    return problem.full(xs)


def _expansion(G: int) -> float:
    """sqrt(G/(G-1)) * t(0.975, G-1) / z(0.975): the small-sample widening of a G-cluster interval."""
    from scipy.special import ndtri, stdtrit

    return float(np.sqrt(G / (G - 1)) * stdtrit(G - 1, 0.975) / ndtri(0.975))


def _bca(reps: np.ndarray, hat: float, jack: np.ndarray, expansion: float = 1.0) -> tuple[float, float]:
    """The 95% BCa interval of replicates ``reps`` around the estimate ``hat``, acceleration from
    the jackknife values ``jack`` (NaN ones ignored), each end's distance from ``hat`` then
    multiplied by ``expansion``."""
    from scipy.special import ndtr, ndtri

    reps = reps[np.isfinite(reps)]
    B = len(reps)
    if B == 0:
        return float("nan"), float("nan")
    below = (np.sum(reps < hat) + 0.5 * np.sum(reps == hat)) / B
    z0 = ndtri(np.clip(below, 0.5 / B, 1 - 0.5 / B))
    jack = jack[np.isfinite(jack)]
    d = jack.mean() - jack if len(jack) else np.zeros(1)
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = float(np.sum(d**3) / denom) if denom > 0 else 0.0
    z = ndtri(np.array([0.025, 0.975]))
    shifted = z0 + z
    with np.errstate(divide="ignore", invalid="ignore"):
        adj = ndtr(z0 + shifted / (1 - a * shifted))
    adj = np.where(1 - a * shifted > 0, adj, [0.0, 1.0])  # extreme acceleration: the replicates' range
    lo, hi = np.quantile(reps, np.clip(adj, 0.0, 1.0))
    return float(hat + expansion * (lo - hat)), float(hat + expansion * (hi - hat))


def _replicate_params(law, thetas, fixed) -> dict[str, list[float]]:
    """Each free parameter's value (natural units) in every successful bootstrap replicate: what
    prediction intervals (``qidlab.laws.uncertainty``) are computed from."""
    return {p.name: [p.to_natural(float(t)) for t in thetas[:, i]]
            for i, p in enumerate(law.params) if p.name not in fixed}


def fitted_ranges(law: Law, prepared: Prepared) -> dict[str, list[float]]:
    """[min, max] of each variable of ``law`` over the points fitted (variables the data has)."""
    return {v.name: [float(prepared.X[v.name].min()), float(prepared.X[v.name].max())]
            for v in law.variables if v.name in prepared.frame.columns}


def _group_codes(values):
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    return codes, uniques


def _holdout(law, prepared: Prepared, opts: FitOptions) -> list[dict[str, Any]]:
    out = []
    for col in opts.holdout:
        if col not in law.variable_names or col not in prepared.frame.columns:
            continue
        x = prepared.X[col]
        levels = np.unique(x)
        if len(levels) < 3:
            continue
        test = x == levels[-1]
        Xtr = {k: v[~test] for k, v in prepared.X.items()}
        Xte = {k: v[test] for k, v in prepared.X.items()}
        fixed, _ = resolve_folds(law, Xtr)
        noise = None if prepared.noise is None else prepared.noise[~test]
        try:
            problem, xs, _, _ = _fit_arrays(law, Xtr, prepared.y[~test], fixed, opts, noise=noise)
        except QidlabError:
            continue
        pred = np.exp(law.log_predict(problem.full(xs), Xte))
        rel = np.abs(pred / prepared.y[test] - 1)
        out.append({
            "held_out": col, "value": float(levels[-1]), "n_train": int((~test).sum()), "n_test": int(test.sum()),
            "mape": float(rel.mean() * 100), "max_ape": float(rel.max() * 100),
            "rmse_log": float(np.sqrt(np.mean(np.log(pred / prepared.y[test]) ** 2))),
        })
    return out


def fit_group(frame: "pd.DataFrame", law: Law | str, opts: FitOptions, group: dict | None = None) -> FitResult:
    """Fit ``law`` to one table (one group). See the module docstring."""
    law = get_law(law)
    opts.check()
    prepared = prepare(frame, law, opts)
    fixed, why = resolve_folds(law, prepared.X)
    n_free = len(law.params) - len(fixed)
    if len(prepared.y) < n_free:
        raise QidlabError(
            f"{len(prepared.y)} usable points cannot determine {n_free} parameters of {law.name!r}"
            + (f" (group {group})" if group else "")
        )
    problem, x, objective, method = _fit_arrays(law, prepared.X, prepared.y, fixed, opts, noise=prepared.noise)
    natural = _natural(law, problem, x)
    result = FitResult(
        law=law.name, target=prepared.target, group=dict(group or {}),
        params={k: (None if k in fixed else v) for k, v in natural.items()},
        fixed={k: float(v) for k, v in fixed.items()}, folded=why, n=len(prepared.y),
        n_nonpositive=prepared.n_nonpositive, nonpositive_policy=opts.nonpositive,
        dropped_highest=prepared.dropped_highest, method=method,
        metrics=_metrics(problem, x, objective, method), n_missing=prepared.n_missing,
        at_bound=problem.at_bound(x), weights=opts.weights,
        ranges=fitted_ranges(law, prepared),
    )
    if opts.bootstrap:
        result.ci95, result.bootstrap = _bootstrap(law, prepared, fixed, opts, x)
    result.holdout = _holdout(law, prepared, opts)
    return result


def fit_law(frame: "pd.DataFrame", law: Law | str, by: Sequence[str] | str | None = None, **options) -> list[FitResult]:
    """Fit ``law`` to a canonical table, one fit per group of ``by`` (None: one fit).

    Options are those of ``FitOptions``. Returns a list of ``FitResult``."""
    opts = FitOptions(**options)
    law = get_law(law)
    if not by:
        return [fit_group(frame, law, opts)]
    by = [by] if isinstance(by, str) else list(by)
    require_columns(frame, by, "--by")
    results = []
    for key, sub in frame.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        group = {c: _plain(v) for c, v in zip(by, key)}
        results.append(fit_group(sub, law, opts, group))
    return results


#: Columns whose rows are rarely meant to share one law: other suites, eval sets, methods.
POOLING = ("suite", "eval_set", "method")


def pooled_columns(frame: "pd.DataFrame", by: Sequence[str] | None = None) -> dict[str, int]:
    """The ``POOLING`` columns one fit of ``frame`` per group of ``by`` would pool, with their
    number of values (choose one by selecting rows, or fit one law per value with ``by``)."""
    return {c: int(frame[c].nunique()) for c in POOLING
            if c in frame.columns and frame[c].nunique() > 1 and c not in (by or ())}


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def fit_document(law: Law | str, fits: Sequence[FitResult], *, data: Mapping[str, Any],
                 by: Sequence[str] | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``qidlab fit --json`` document of ``fits``: law, formula, ``data`` (where the table
    came from), grouping, options, one entry per fitted group, and provenance (versions, code
    revision). ``qidlab.laws.solve.law_params(fit=...)`` reads it back."""
    law = get_law(law)
    return {"law": law.name, "formula": law.formula, "data": dict(data), "by": list(by or []),
            "options": dict(options or {}), "fits": [f.to_dict() for f in fits], "provenance": provenance.record()}


class LawEstimator:
    """sklearn-shaped fitter: ``LawEstimator("ouyang2024").fit(df).predict(df)``.

    ``__init__`` only stores arguments; ``fit`` sets ``params_`` (natural values, folded
    parameters at their fixed values) and ``result_`` (the full ``FitResult``)."""

    def __init__(self, law: Law | str, **options):
        self.law = law
        self.options = options

    def fit(self, frame: "pd.DataFrame") -> "LawEstimator":
        self.result_ = fit_group(frame, self.law, FitOptions(**self.options))
        self.params_ = self.result_.all_params()
        return self

    def predict(self, frame: "pd.DataFrame") -> np.ndarray:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this LawEstimator({self.law!r}) is not fitted yet: call fit() first")
        law = get_law(self.law)
        X = {}
        for v in law.variables:
            if v.name in frame.columns:
                X[v.name] = frame[v.name].to_numpy(dtype=float)
            elif v.default is not None:
                X[v.name] = np.full(len(frame), float(v.default))
            else:
                raise QidlabError(f"predict needs column {v.name!r}")
        return law.predict(self.params_, X)
