"""What a scaling law is, as data: variables, parameters, published constants, folds.

Conventions used by every law (see docs/architecture.md, "Data contract"):
  n_params   N, non-embedding parameters
  tokens     D, training tokens
  bits       P, weight bit width
  loss, loss16, qid  in nats per token

A law is evaluated in *log space*: ``log_predict(theta, X)`` returns log y for a
batch of parameter vectors ``theta`` (shape (..., k), in *fit space*: see
``Param.space``) and a dict ``X`` of 1-D arrays (n,).  Fitting, bootstrapping and
inversion are built on that one method, so a new law only has to provide it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

#: Fit-space value standing for "log of zero": a coefficient switched off by a fold.
LOG_ZERO = -1000.0

Space = Literal["linear", "log", "inverse"]


@dataclass(frozen=True)
class Param:
    """One fitted constant of a law.

    name    the paper's name (``k``, ``alpha``, ``gamma_post``)
    bounds  (low, high) in natural units; the fitter keeps the parameter inside
    space   how it is optimised: ``linear`` as is, ``log`` as log(value) (positive
            coefficients), ``inverse`` as 1/value (e.g. Kumar's gamma_post, so that
            exp(-P/gamma_post) is log-linear)
    grid    Approach-3 starting values, in fit space (empty: use ``start``)
    start   one default starting value, in natural units
    """

    name: str
    bounds: tuple[float, float]
    space: Space = "linear"
    grid: tuple[float, ...] = ()
    start: float = 1.0
    doc: str = ""

    def to_fit(self, value: float) -> float:
        if self.space == "log":
            return float(np.log(value)) if value > 0 else LOG_ZERO
        if self.space == "inverse":
            return 0.0 if np.isinf(value) else 1.0 / value
        return float(value)

    def to_natural(self, theta: float) -> float:
        if self.space == "log":
            return float(np.exp(theta))
        if self.space == "inverse":
            return float("inf") if theta == 0 else 1.0 / theta
        return float(theta)

    def fit_bounds(self) -> tuple[float, float]:
        lo, hi = self.bounds
        if self.space == "log":
            return (np.log(lo) if lo > 0 else LOG_ZERO, np.log(hi))
        if self.space == "inverse":  # bounds on gamma -> bounds on 1/gamma (gamma > 0)
            return (1.0 / hi if np.isfinite(hi) else 0.0, 1.0 / lo)
        return (lo, hi)


@dataclass(frozen=True)
class Variable:
    """An input of a law, named as a canonical column. ``default`` is used when the
    column is absent (e.g. activation bits 16 = not quantized). Values must be > 0, or
    >= 0 where ``positive`` is False (e.g. mantissa bits). ``named``: values known by a name
    (Frantar's eff of a compressed representation: ``w4a4`` = 0.747)."""

    name: str
    doc: str
    default: float | None = None
    positive: bool = True
    named: Mapping[str, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Published:
    """Constants as a paper printed them, with where to find them."""

    source: str
    values: Mapping[str, float]
    verified: bool = True
    note: str = ""


@dataclass(frozen=True)
class Fold:
    """When every variable in ``when`` is constant in the data, the parameters in
    ``fix`` cannot be identified: they are fixed (natural units) and their effect is
    absorbed into the coefficient named in ``into``."""

    when: tuple[str, ...]
    fix: Mapping[str, float]
    into: str


@dataclass(frozen=True)
class Law:
    """A scaling law: y = f(X; params), evaluated in log space.

    Subclasses implement ``log_predict``; affine-in-log laws use ``TermsLaw``.
    """

    name: str
    title: str
    formula: str
    quantity: str  # what it predicts: "qid" or "loss"
    targets: tuple[str, ...]  # data columns it is fitted to, first present wins
    variables: tuple[Variable, ...]
    params: tuple[Param, ...]
    published: Mapping[str, Published] = field(default_factory=dict)
    citation: str = ""
    note: str = ""
    folds: tuple[Fold, ...] = ()
    must_vary: tuple[str, ...] = ()

    # -- structure -------------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def is_power_law(self) -> bool:
        """True when log y is affine in the fit-space parameters (exact least squares)."""
        return False

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The law as a JSON document (``qidlab laws --json``): formula, variables, parameters
        with bounds (natural units) and fit space, published constant sets, citation."""
        return {
            "name": self.name, "title": self.title, "formula": self.formula, "quantity": self.quantity,
            "targets": list(self.targets), "fit_method": "lstsq (exact, log space)" if self.is_power_law else
            "huber approach 3 (log space)",
            "variables": [{"name": v.name, "doc": v.doc, "default": v.default} for v in self.variables],
            "params": [{"name": p.name, "bounds": list(p.bounds), "space": p.space, "doc": p.doc} for p in self.params],
            "published": {k: {"source": v.source, "values": dict(v.values), "verified": v.verified, "note": v.note}
                          for k, v in self.published.items()},
            "citation": self.citation, "note": self.note,
        }

    # -- evaluation ------------------------------------------------------------
    def log_predict(self, theta: np.ndarray, X: Mapping[str, np.ndarray]) -> np.ndarray:
        """log y, shape theta.shape[:-1] + (n,). ``theta`` in fit space."""
        raise NotImplementedError

    def log_predict_grad(self, theta: np.ndarray, X: Mapping[str, np.ndarray]):
        """(log y, d log y / d theta) with shapes (..., n) and (..., n, k).

        Default: complex-step differentiation, exact to rounding for any
        ``log_predict`` written with numpy's analytic functions."""
        theta = np.asarray(theta, dtype=float)
        k = theta.shape[-1]
        h = 1e-30
        value = self.log_predict(theta, X)
        grads = []
        for i in range(k):
            step = np.zeros(k, dtype=complex)
            step[i] = 1j * h
            out = self.log_predict(theta + step, X)
            if not np.iscomplexobj(out):
                return value, _central_difference(self, theta, X, value)
            grads.append(out.imag / h)
        return value, np.stack(grads, axis=-1)

    # -- natural <-> fit space -------------------------------------------------
    def to_fit(self, params: Mapping[str, float]) -> np.ndarray:
        return np.array([p.to_fit(params[p.name]) for p in self.params])

    def to_natural(self, theta: Sequence[float]) -> dict[str, float]:
        return {p.name: p.to_natural(float(t)) for p, t in zip(self.params, theta)}

    def predict(self, params: Mapping[str, float], X: Mapping[str, np.ndarray]) -> np.ndarray:
        """y in natural units for named (natural) params; X arrays of shape (n,)."""
        missing = [p for p in self.param_names if p not in params]
        if missing:
            raise ValueError(f"law {self.name!r} needs parameter(s) {', '.join(missing)}")
        return np.exp(self.log_predict(self.to_fit(params), X))

    def default_constants(self) -> dict[str, float]:
        """The first published constant set (the one ``predict`` uses by default)."""
        if not self.published:
            raise ValueError(f"law {self.name!r} has no published constants; give a fit file")
        return dict(next(iter(self.published.values())).values)


def _central_difference(law: Law, theta, X, value):
    k = theta.shape[-1]
    grads = []
    for i in range(k):
        h = 1e-6 * max(1.0, float(np.max(np.abs(theta[..., i]))))
        step = np.zeros(k)
        step[i] = h
        grads.append((law.log_predict(theta + step, X) - law.log_predict(theta - step, X)) / (2 * h))
    return value, np.stack(grads, axis=-1)


def logsumexp(terms: Sequence[np.ndarray]) -> np.ndarray:
    """log(sum(exp(t))) over a list of equally shaped arrays; complex-step safe."""
    stacked = np.stack(np.broadcast_arrays(*terms), axis=0)
    shift = np.max(stacked.real, axis=0)
    return shift + np.log(np.sum(np.exp(stacked - shift), axis=0))


def logsumexp_grad(values: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum_j exp(v_j)) over a list of equally shaped real arrays, and its gradient: the
    derivative by each v_j, its softmax weight exp(v_j - LSE) (the weights sum to 1)."""
    shift = np.maximum.reduce(values)
    weights = [np.exp(v - shift) for v in values]
    total = sum(weights)
    return shift + np.log(total), [w / total for w in weights]


Features = Callable[[Mapping[str, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class TermsLaw(Law):
    """A law whose log is a log-sum-exp of terms affine in the fit-space parameters:

        log y = LSE_j ( A_j(X) @ theta + c_j(X) )

    ``terms(X)`` returns the list of (A_j of shape (n, k), c_j of shape (n,)).
    A single term is a pure power law: it is fitted exactly by least squares.
    Gradients are analytic: sum_j softmax_j * A_j.
    """

    terms: Features | None = None

    @property
    def is_power_law(self) -> bool:
        X = {v.name: np.full(1, 2.0) for v in self.variables}
        return len(self.terms(X)) == 1

    def log_predict(self, theta, X):
        theta = np.asarray(theta)
        values = [c + np.einsum("...k,nk->...n", theta, A) for A, c in self.terms(X)]
        return values[0] if len(values) == 1 else logsumexp(values)

    def log_predict_grad(self, theta, X):
        theta = np.asarray(theta, dtype=float)
        terms = self.terms(X)
        log_y, weights = logsumexp_grad([c + np.einsum("...k,nk->...n", theta, A) for A, c in terms])
        grad = sum(w[..., None] * A for w, (A, _) in zip(weights, terms))
        return log_y, grad


NaturalFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class FunctionLaw(Law):
    """A law given as a plain function of natural parameters: ``fn(X, **params) -> y``.

    ``X`` is a dict of arrays (n,); each parameter arrives as an array of shape
    (..., 1) so that one call evaluates a batch of parameter vectors. Write ``fn``
    with numpy's analytic functions (``**``, ``np.exp``, ``np.log``...) and its
    gradient is exact (complex step); otherwise a central difference is used.
    This is also how user-defined laws are made (see ``qidlab.laws.define_law``).
    """

    fn: NaturalFn | None = None

    def log_predict(self, theta, X):
        theta = np.asarray(theta)
        named = {}
        for i, p in enumerate(self.params):
            t = theta[..., i : i + 1]
            named[p.name] = np.exp(t) if p.space == "log" else (1.0 / t if p.space == "inverse" else t)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.fn(X, **named))


def column(X: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(X[name], dtype=float)


def design(n: int, k: int, entries: Mapping[int, np.ndarray | float]) -> np.ndarray:
    """An (n, k) matrix with the given columns filled (others zero)."""
    A = np.zeros((n, k))
    for j, value in entries.items():
        A[:, j] = value
    return A
