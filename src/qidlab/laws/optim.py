"""Pure numerical pieces of fitting: Huber loss, weighted least squares, and an
L-BFGS that runs many independent problems at once (one per start or per bootstrap
replicate). No I/O, no knowledge of laws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative: r^2/2 inside |r| <= delta, delta*(|r| - delta/2) outside."""
    deriv = np.clip(r, -delta, delta)
    return deriv * (r - 0.5 * deriv), deriv


def weighted_lstsq(A: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                   lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> np.ndarray:
    """Least squares theta for A @ theta ~ y inside the box [lower, upper] (None: no box), one
    solution per row of ``weights`` (B, n).

    Returns (k,) without weights, else (B, k); a singular replicate gives NaNs. The
    unconstrained solution is kept when it lies inside the box; otherwise the box-constrained
    optimum (scipy's bounded-variable least squares, exact for this convex problem)."""
    if weights is None:
        return _bounded_lstsq(A, y, lower, upper)
    B, (n, k) = weights.shape[0], A.shape
    out = np.full((B, k), np.nan)
    chunk = max(1, 4_000_000 // max(n * k, 1))  # bound the (chunk, n, k) stack
    for start in range(0, B, chunk):
        sw = np.sqrt(weights[start:start + chunk])  # (c, n)
        Q, R = np.linalg.qr(sw[:, :, None] * A)  # batched thin QR: (c, n, k), (c, k, k)
        diag = np.abs(np.diagonal(R, axis1=1, axis2=2))
        full_rank = diag.min(axis=1) > 1e-10 * np.maximum(diag.max(axis=1), 1e-300)
        rhs = np.einsum("cnk,cn->ck", Q, sw * y)
        with np.errstate(all="ignore"):
            x = np.linalg.solve(np.where(full_rank[:, None, None], R, np.eye(k)), rhs[..., None])[..., 0]
        for j in np.flatnonzero(full_rank):
            xj = x[j]
            if lower is not None and not (np.all(xj >= lower) and np.all(xj <= upper)):
                xj = _bounded_lstsq(A * sw[j][:, None], y * sw[j], lower, upper)
            out[start + j] = xj
    return out


def _bounded_lstsq(A, y, lower, upper):
    x = np.linalg.lstsq(A, y, rcond=None)[0]
    if lower is None or (np.all(x >= lower) and np.all(x <= upper)):
        return x
    from scipy.optimize import lsq_linear

    return np.clip(lsq_linear(A, y, bounds=(lower, upper), method="bvls").x, lower, upper)


@dataclass
class BatchResult:
    x: np.ndarray  # (S, k) solutions
    f: np.ndarray  # (S,) objective values
    converged: np.ndarray  # (S,) bool
    iterations: int


ValueGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def minimize_batched(
    fg: ValueGrad,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    max_iter: int = 2000,
    memory: int = 10,
    gtol: float = 1e-10,
    ftol: float = 1e-14,
    max_backtracks: int = 40,
) -> BatchResult:
    """Minimise S independent smooth problems with L-BFGS, all at once.

    ``fg(x, idx)`` returns (f, g) for the rows ``idx`` of the batch, x of shape
    (len(idx), k). Each row has its own history and Armijo backtracking line search;
    iterates are kept inside the box [lower, upper] by clipping. A row stops when its
    gradient (inf-norm) is below ``gtol`` or a step improves f by less than
    ``ftol * max(1, |f|)``.
    """
    x = np.clip(np.array(x0, dtype=float), lower, upper)
    S, k = x.shape
    idx_all = np.arange(S)
    f, g = fg(x, idx_all)
    f = np.where(np.isfinite(f), f, np.inf)
    s_hist = np.zeros((memory, S, k))
    y_hist = np.zeros((memory, S, k))
    rho = np.zeros((memory, S))
    scale = np.ones(S)
    active = np.isfinite(f) & (np.max(np.abs(g), axis=1) > gtol)
    converged = ~active & np.isfinite(f)
    it = 0
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        d = -_two_loop(g[idx], s_hist[:, idx], y_hist[:, idx], rho[:, idx], scale[idx], it, memory)
        slope = np.sum(d * g[idx], axis=1)
        bad = ~(slope < 0)
        if bad.any():  # not a descent direction: fall back to steepest descent
            d[bad] = -g[idx][bad]
            slope[bad] = -np.sum(g[idx][bad] ** 2, axis=1)
        if it == 1:
            t = np.minimum(1.0, 1.0 / np.maximum(np.max(np.abs(g[idx]), axis=1), 1e-12))
        else:
            t = np.ones(idx.size)
        x_new, f_new, g_new, ok = _backtrack(fg, x[idx], f[idx], d, slope, t, idx, lower, upper, max_backtracks)
        s = x_new - x[idx]
        y = g_new - g[idx]
        sy = np.sum(s * y, axis=1)
        slot = (it - 1) % memory
        good = ok & (sy > 1e-12 * np.sqrt(np.sum(s * s, axis=1) * np.sum(y * y, axis=1)) + 1e-300)
        s_hist[slot, idx] = np.where(good[:, None], s, 0.0)
        y_hist[slot, idx] = np.where(good[:, None], y, 0.0)
        rho[slot, idx] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        scale[idx] = np.where(good, sy / np.maximum(np.sum(y * y, axis=1), 1e-300), scale[idx])
        improvement = f[idx] - f_new
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        small_grad = np.max(np.abs(_projected(g_new, x_new, lower, upper)), axis=1) <= gtol
        small_step = ok & (improvement <= ftol * np.maximum(1.0, np.abs(f_new)))
        done = small_grad | small_step | ~ok
        converged[idx[done]] = small_grad[done] | small_step[done]
        active[idx[done]] = False
    return BatchResult(x=x, f=f, converged=converged, iterations=it)


def _projected(g, x, lower, upper):
    """Gradient with components that push against an active bound zeroed."""
    at_lo = (x <= lower) & (g > 0)
    at_hi = (x >= upper) & (g < 0)
    return np.where(at_lo | at_hi, 0.0, g)


def _two_loop(g, s_hist, y_hist, rho, scale, it, memory):
    """L-BFGS two-loop recursion, vectorised over rows; rho = 0 marks an empty slot."""
    q = g.copy()
    n_pairs = min(it - 1, memory)
    order = [(it - 2 - j) % memory for j in range(n_pairs)]  # newest first
    alphas = []
    for slot in order:
        a = rho[slot] * np.sum(s_hist[slot] * q, axis=1)
        q -= a[:, None] * y_hist[slot]
        alphas.append(a)
    r = scale[:, None] * q
    for slot, a in zip(reversed(order), reversed(alphas)):
        b = rho[slot] * np.sum(y_hist[slot] * r, axis=1)
        r += s_hist[slot] * (a - b)[:, None]
    return r


def _backtrack(fg, x, f, d, slope, t, idx, lower, upper, max_backtracks, c1=1e-4):
    """Armijo backtracking per row; returns new x, f, g and which rows found a step."""
    n, k = x.shape
    x_new, f_new, g_new = x.copy(), f.copy(), np.zeros((n, k))
    ok = np.zeros(n, dtype=bool)
    pending = np.arange(n)
    for _ in range(max_backtracks):
        trial = np.clip(x[pending] + t[pending, None] * d[pending], lower, upper)
        ft, gt = fg(trial, idx[pending])
        ft = np.where(np.isfinite(ft), ft, np.inf)
        accept = np.isfinite(ft) & (ft <= f[pending] + c1 * t[pending] * slope[pending])
        acc = pending[accept]
        x_new[acc], f_new[acc], g_new[acc] = trial[accept], ft[accept], gt[accept]
        ok[acc] = True
        pending = pending[~accept]
        if pending.size == 0:
            break
        t[pending] *= 0.5
    return x_new, f_new, g_new, ok
