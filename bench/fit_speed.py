"""Benchmark: Hoffmann et al.'s Approach 3 on the bundled Epoch data, three ways.

Data: ``qidlab.data.load("chinchilla-epoch")`` (245 points from Hoffmann et al. 2022 Fig. 4 as
extracted by Besiroglu et al. 2024), the 5 highest losses dropped: 240 points.
Starts: Hoffmann's 4,500-point grid (the chinchilla law's ``Param.grid``), in fit space
(log E, log A, log B, alpha, beta).
Objective: sum over points of huber(1e-3, log L - LSE(log A - alpha log N, log B - beta log D, log E)).

  (a) baseline   a plain Python loop of scipy.optimize.minimize(method="L-BFGS-B"), numeric
                 gradients (no jac), scipy defaults, one start at a time;
  (b) exhaustive qidlab, every start to convergence in one batched L-BFGS
                 (fit_law(..., screen=False));
  (c) default    qidlab with screening: every start takes 20 iterations, the best 128 go on
                 (fit_law(...)).

It prints figures and asserts nothing about time. Usage:

    .venv/bin/python bench/fit_speed.py [--baseline-starts K] [--repeat R] [--skip-baseline] [--screen-check] [--json]

``--baseline-starts K`` runs the baseline on K starts drawn at random (seeded) from the grid and
extrapolates its time to all 4,500 (printed as an extrapolation). ``--screen-check`` also counts
how many starts reach the optimum with and without screening (not timed). ``--json`` prints a JSON
summary on stdout (the human-readable report then goes to stderr).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import scipy
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

import qidlab.data
from qidlab.laws import get_law
from qidlab.laws.fit import FitOptions, fit_law, prepare

NAMES = ("E", "A", "B", "alpha", "beta")
LOG_SPACE = (True, True, True, False, False)  # fit space: log E, log A, log B, alpha, beta
DELTA = 1e-3
EPOCH_REFIT = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}  # their bootstrap SEs
OBJ_RTOL = 1e-9
PARAM_RTOL = 1e-4


def to_fit(params: dict) -> np.ndarray:
    return np.array([np.log(params[n]) if lg else params[n] for n, lg in zip(NAMES, LOG_SPACE)])


def to_natural(theta) -> dict:
    return {n: float(np.exp(t)) if lg else float(t) for n, t, lg in zip(NAMES, theta, LOG_SPACE)}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    return {
        "nproc": nproc, "cpu": cpu, "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "loadavg_at_start": load_average(),
        "thread_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }


def load_average():
    """1-minute load average (None where unavailable): above ~0 before the run means something
    else is using the CPUs and the timings below are inflated."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def load_problem():
    """The 240 points, and Hoffmann's 4,500 starts from the chinchilla law's grid."""
    law = get_law("chinchilla")
    frame = qidlab.data.load("chinchilla-epoch")
    prepared = prepare(frame, law, FitOptions(drop_highest=5))
    logN = np.log(prepared.X["n_params"])
    logD = np.log(prepared.X["tokens"])
    logL = np.log(prepared.y)
    assert tuple(p.name for p in law.params) == NAMES
    starts = np.array(list(itertools.product(*(p.grid for p in law.params))), dtype=float)
    return frame, logN, logD, logL, starts


def make_objective(logN, logD, logL):
    ones = np.ones_like(logN)

    def objective(theta):
        e, a, b, alpha, beta = theta
        pred = logsumexp([a - alpha * logN, b - beta * logD, e * ones], axis=0)
        return float(np.sum(huber(DELTA, logL - pred)))

    return objective


def make_value_and_grad(logN, logD, logL):
    """The same objective with its exact gradient, written here independently of qidlab; only
    used to carry the best baseline start on to the bottom (``polish``), never timed."""

    def value_and_grad(theta):
        e, a, b, alpha, beta = theta
        terms = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
        shift = terms.max(axis=0)
        w = np.exp(terms - shift)
        total = w.sum(axis=0)
        pred = shift + np.log(total)
        w /= total  # d pred / d (term j)
        r = logL - pred
        dh = np.clip(r, -DELTA, DELTA)  # huber'(r)
        f = float(np.sum(dh * (r - 0.5 * dh)))
        v = -dh  # d f / d pred
        g = np.array([np.sum(v * w[2]), np.sum(v * w[0]), np.sum(v * w[1]),
                      np.sum(v * w[0] * -logN), np.sum(v * w[1] * -logD)])
        return f, g

    return value_and_grad


# ---------------------------------------------------------------------------
# (a) baseline


def run_baseline(objective, starts, k, seed, progress):
    n_all = len(starts)
    if k >= n_all:
        chosen = np.arange(n_all)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(n_all, size=k, replace=False))
    results = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, i in enumerate(chosen, 1):
            results.append(minimize(objective, starts[i], method="L-BFGS-B"))
            if progress and (j % 250 == 0 or j == len(chosen)):
                el = time.perf_counter() - t0
                progress(f"  baseline: {j}/{len(chosen)} starts, {el:.1f} s")
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    fs = np.array([r.fun if np.isfinite(r.fun) else np.inf for r in results])
    best = results[int(np.argmin(fs))]
    return {
        "starts_run": int(len(chosen)),
        "starts_total": int(n_all),
        "sampled": bool(len(chosen) < n_all),
        "seed": seed if len(chosen) < n_all else None,
        "time_s": elapsed,
        "time_s_all_starts": elapsed * n_all / len(chosen),
        "cpu_s": cpu,
        "extrapolated": bool(len(chosen) < n_all),
        "best_start": starts[chosen[int(np.argmin(fs))]].tolist(),
        "theta": np.asarray(best.x).tolist(),
        "objective": float(best.fun),
        "params": to_natural(best.x),
        "message": str(best.message),
        "nfev_total": int(sum(r.nfev for r in results)),
        "nit_total": int(sum(r.nit for r in results)),
        "_fs": fs,
    }


def polish(value_and_grad, theta):
    """The best baseline start carried on to the bottom: L-BFGS-B with this script's exact
    gradient and tight tolerances. Tells whether the baseline stopped short of qidlab's
    optimum (same basin) or sits in another minimum."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        out = minimize(value_and_grad, np.asarray(theta), jac=True, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    return {"theta": out.x.tolist(), "objective": float(out.fun), "params": to_natural(out.x),
            "message": str(out.message), "nit": int(out.nit)}


# ---------------------------------------------------------------------------
# (b), (c) qidlab


def run_qidlab(frame, objective, screen: bool, repeat: int):
    times, cpus, result = [], [], None
    for _ in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = fit_law(frame, "chinchilla", drop_highest=5, holdout=(), screen=screen)[0]
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    params = {n: float(result.params[n]) for n in NAMES}
    return {
        "time_s": min(times), "times_s": times, "cpu_s": cpus[int(np.argmin(times))], "n": result.n,
        "objective": objective(to_fit(params)),  # the baseline's objective function, for a fair comparison
        "objective_reported": float(result.metrics["objective"]),
        "params": params,
    }


def screen_check(frame, rtol=1e-8):
    """Why screening is safe here (``--screen-check``; not timed): run every start to convergence
    and count how many reach the optimum; then screen as fit_law does (20 iterations, keep 128)
    and count how many of the kept ones reach it. Uses qidlab's internal ``_Problem``, without
    the final scipy polish that fit_law adds, so the optimum is the batched L-BFGS's own."""
    from qidlab.laws.fit import _Problem, resolve_folds
    from qidlab.laws.optim import minimize_batched

    law = get_law("chinchilla")
    opts = FitOptions(drop_highest=5)
    prep = prepare(frame, law, opts)
    fixed, _ = resolve_folds(law, prep.X)
    problem = _Problem(law, prep.X, np.log(prep.y), fixed, opts)
    fg, starts = problem.value_grad(None), problem.starts()
    full = minimize_batched(fg, starts, problem.lower, problem.upper, max_iter=opts.max_iter)
    f_opt = float(np.min(full.f))
    reach = full.f <= f_opt * (1 + rtol)
    first = minimize_batched(fg, starts, problem.lower, problem.upper, max_iter=opts.screen_iters)
    order = np.argsort(first.f)
    kept = order[: opts.screen_keep]
    second = minimize_batched(fg, first.x[kept], problem.lower, problem.upper, max_iter=opts.max_iter)
    kept_reach = second.f <= f_opt * (1 + rtol)
    # where, in the screening ranking, the starts that reach the optimum (run in full) sit
    ranks = np.flatnonzero(reach[order])
    return {
        "rtol": rtol, "starts": int(len(starts)), "objective_opt": f_opt,
        "reach_optimum_all": int(reach.sum()),
        "kept": int(len(kept)), "kept_reach_optimum": int(kept_reach.sum()),
        "kept_best_objective": float(np.min(second.f)),
        "screen_ranks_of_reaching_starts_first10": ranks[:10].tolist(),
        "reaching_starts_in_top_kept_when_run_in_full": int(np.sum(ranks < len(kept))),
    }


# ---------------------------------------------------------------------------
# comparisons


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def compare(candidate, reference):
    obj_rel = rel(candidate["objective"], reference["objective"])
    par_rel = {n: rel(candidate["params"][n], reference["params"][n]) for n in NAMES}
    worst = max(par_rel.values())
    return {
        "objective_rel_diff": obj_rel, "objective_diff": candidate["objective"] - reference["objective"],
        "param_rel_diff": par_rel, "max_param_rel_diff": worst,
        "same": bool(obj_rel <= OBJ_RTOL and worst <= PARAM_RTOL),
    }


def fmt_params(p):
    return (f"E={p['E']:.6f}  A={p['A']:.4f}  B={p['B']:.3f}  "
            f"alpha={p['alpha']:.6f}  beta={p['beta']:.6f}")


def report_compare(say, label, c):
    verdict = "SAME optimum" if c["same"] else "NOT the same within tolerance"
    say(f"  {label}: {verdict}  (objective rel diff {c['objective_rel_diff']:.2e}, "
        f"{c['objective_diff']:+.3e} absolute; max param rel diff {c['max_param_rel_diff']:.2e} "
        f"[{max(c['param_rel_diff'], key=c['param_rel_diff'].get)}])")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-starts", type=int, default=None, metavar="K",
                    help="run the scipy baseline on K random starts and extrapolate (default: all 4,500)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R", help="best of R runs for (b) and (c) (default 3)")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the scipy baseline")
    ap.add_argument("--seed", type=int, default=0, help="seed for the --baseline-starts sample (default 0)")
    ap.add_argument("--screen-check", action="store_true",
                    help="also count how many starts reach the optimum with and without screening (not timed)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout (report on stderr)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.baseline_starts is not None and args.baseline_starts < 1:
        ap.error("--baseline-starts must be >= 1")

    out = sys.stderr if args.json else sys.stdout

    def say(msg=""):
        print(msg, file=out, flush=True)

    mach = machine()
    frame, logN, logD, logL, starts = load_problem()
    objective = make_objective(logN, logD, logL)
    value_and_grad = make_value_and_grad(logN, logD, logL)
    say("Approach 3 on the Epoch data (Hoffmann et al. 2022 Fig. 4 via Besiroglu et al. 2024)")
    say(f"  points: {len(logL)} (245 bundled, 5 highest losses dropped); starts: {len(starts)} (Hoffmann's grid)")
    say(f"  machine: nproc={mach['nproc']}, {mach['cpu']}, {mach['platform']}")
    say(f"           python {mach['python']}, numpy {mach['numpy']}, scipy {mach['scipy']}; "
        f"1-min load average at start {mach['loadavg_at_start']}")
    say(f"           BLAS thread settings: {mach['thread_env'] or 'none set (library defaults)'}")
    say()

    summary = {"machine": mach, "points": int(len(logL)), "starts": int(len(starts)),
               "repeat": args.repeat, "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}

    baseline = None
    if not args.skip_baseline:
        k = len(starts) if args.baseline_starts is None else min(args.baseline_starts, len(starts))
        say(f"(a) baseline: scipy.optimize.minimize(L-BFGS-B, numeric gradients) over {k} start(s), one at a time")
        baseline = run_baseline(objective, starts, k, args.seed, say)
        fs = baseline.pop("_fs")
        finite = np.isfinite(fs)
        near = int(np.sum(fs <= baseline["objective"] * (1 + 1e-6)))
        baseline["starts_within_1e-6_of_best"] = near
        baseline["starts_nonfinite"] = int((~finite).sum())
        if baseline["extrapolated"]:
            say(f"    ran {baseline['starts_run']} of {baseline['starts_total']} starts (random sample, seed "
                f"{args.seed}) in {baseline['time_s']:.1f} s (process CPU time {baseline['cpu_s']:.1f} s)")
            say(f"    EXTRAPOLATED time for all {baseline['starts_total']} starts: "
                f"{baseline['time_s_all_starts']:.0f} s  (= measured x {baseline['starts_total']}/{baseline['starts_run']})")
            say("    (the best start of a sample need not be the best of the full grid)")
        else:
            say(f"    time: {baseline['time_s']:.1f} s (measured, all {baseline['starts_total']} starts, one run; "
                f"process CPU time {baseline['cpu_s']:.1f} s)")
        say(f"    objective evaluations: {baseline['nfev_total']}, iterations: {baseline['nit_total']}; "
            f"starts within 1e-6 (rel) of the best: {near}")
        say(f"    best objective {baseline['objective']:.12e}  ({baseline['message']})")
        say(f"    {fmt_params(baseline['params'])}")
        baseline["polished"] = polish(value_and_grad, baseline["theta"])
        say(f"    best start carried on (L-BFGS-B, exact gradient, ftol 1e-15, gtol 1e-12; not timed): "
            f"objective {baseline['polished']['objective']:.12e}")
        say(f"    {fmt_params(baseline['polished']['params'])}")
        say()
        summary["baseline"] = baseline

    say(f"(b) qidlab exhaustive: fit_law(frame, 'chinchilla', drop_highest=5, holdout=(), screen=False), best of {args.repeat}")
    exhaustive = run_qidlab(frame, objective, screen=False, repeat=args.repeat)
    say(f"    time: {exhaustive['time_s']:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in exhaustive['times_s'])}; "
        f"process CPU time of the best {exhaustive['cpu_s']:.2f} s)")
    say(f"    objective {exhaustive['objective']:.12e}  (qidlab reports {exhaustive['objective_reported']:.12e})")
    say(f"    {fmt_params(exhaustive['params'])}")
    say()
    say(f"(c) qidlab default (screening 20 iterations, best 128 go on): fit_law(frame, 'chinchilla', "
        f"drop_highest=5, holdout=()), best of {args.repeat}")
    default = run_qidlab(frame, objective, screen=True, repeat=args.repeat)
    say(f"    time: {default['time_s']:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in default['times_s'])}; "
        f"process CPU time of the best {default['cpu_s']:.2f} s)")
    say(f"    objective {default['objective']:.12e}  (qidlab reports {default['objective_reported']:.12e})")
    say(f"    {fmt_params(default['params'])}")
    say()
    summary["exhaustive"], summary["default"] = exhaustive, default

    say(f"Same optimum? (objective within {OBJ_RTOL:g} relative and every parameter within {PARAM_RTOL:g} relative)")
    comparisons = {"default_vs_exhaustive": compare(default, exhaustive)}
    report_compare(say, "(c) vs (b)", comparisons["default_vs_exhaustive"])
    if baseline is not None:
        tag = "best sampled baseline start" if baseline["extrapolated"] else "best baseline start"
        for key, cand in (("exhaustive", exhaustive), ("default", default)):
            comparisons[f"{key}_vs_baseline"] = compare(cand, baseline)
            report_compare(say, f"({'b' if key == 'exhaustive' else 'c'}) vs {tag}", comparisons[f"{key}_vs_baseline"])
        for key, cand in (("exhaustive", exhaustive), ("default", default)):
            comparisons[f"{key}_vs_baseline_polished"] = compare(cand, baseline["polished"])
            report_compare(say, f"({'b' if key == 'exhaustive' else 'c'}) vs {tag}, carried on",
                           comparisons[f"{key}_vs_baseline_polished"])
        if not comparisons["default_vs_baseline"]["same"] and default["objective"] < baseline["objective"]:
            say("    note: qidlab's objective is LOWER than the baseline's: scipy's default L-BFGS-B stops when f")
            say("    improves by < 2.2e-9 absolute (ftol * max(|f|, 1)), about 2e-6 relative on an objective of 1e-3.")
    say()

    if args.screen_check:
        sc = screen_check(frame)
        summary["screen_check"] = sc
        say(f"Screening check (batched L-BFGS alone, no polish; 'reach' = objective within {sc['rtol']:g} "
            f"relative of the best, {sc['objective_opt']:.12e}):")
        say(f"    run to convergence, {sc['reach_optimum_all']} of {sc['starts']} starts reach the optimum")
        say(f"    screened (20 iterations, best {sc['kept']} kept), {sc['kept_reach_optimum']} of the {sc['kept']} "
            f"kept reach it; best kept objective {sc['kept_best_objective']:.12e}")
        say(f"    of the starts that reach it when run in full, {sc['reaching_starts_in_top_kept_when_run_in_full']} "
            f"rank in the screening's top {sc['kept']} (first ranks: {sc['screen_ranks_of_reaching_starts_first10']})")
        say()

    epoch = {"params": EPOCH_REFIT, "objective": objective(to_fit(EPOCH_REFIT))}
    summary["epoch_refit"] = epoch
    say("Epoch's published refit (Besiroglu et al. 2024): " + fmt_params(EPOCH_REFIT))
    say(f"    objective at Epoch's (rounded) values on these 240 points: {epoch['objective']:.12e}")
    epoch_cmp = {}
    for n in NAMES:
        d = default["params"][n] - EPOCH_REFIT[n]
        epoch_cmp[n] = {"qidlab": default["params"][n], "epoch": EPOCH_REFIT[n], "rel_diff": d / EPOCH_REFIT[n],
                        "diff_in_epoch_se": d / EPOCH_SE[n]}
        say(f"    {n:>5}: qidlab {default['params'][n]:12.6g}  Epoch {EPOCH_REFIT[n]:10.6g}  "
            f"rel diff {d / EPOCH_REFIT[n]:+.2%}  ({d / EPOCH_SE[n]:+.2f} of Epoch's bootstrap SE {EPOCH_SE[n]:g})")
    comparisons["default_vs_epoch"] = epoch_cmp
    summary["comparisons"] = comparisons
    say()

    say("Summary")
    say(f"  {'method':<38} {'wall (s)':>9} {'CPU (s)':>9} {'objective':>20}   params")
    rows = []
    if baseline is not None:
        scale = baseline["starts_total"] / baseline["starts_run"]
        label = "(a) scipy loop" + (f" [extrapolated from {baseline['starts_run']}]" if baseline["extrapolated"] else "")
        rows.append((label, baseline["time_s_all_starts"], baseline["cpu_s"] * scale, baseline))
    rows.append(("(b) qidlab exhaustive", exhaustive["time_s"], exhaustive["cpu_s"], exhaustive))
    rows.append(("(c) qidlab default (screening)", default["time_s"], default["cpu_s"], default))
    for label, t, c, r in rows:
        say(f"  {label:<38} {t:>9.2f} {c:>9.2f} {r['objective']:>20.12e}   {fmt_params(r['params'])}")
    if baseline is not None:
        base_t = baseline["time_s_all_starts"]
        base_c = baseline["cpu_s"] * baseline["starts_total"] / baseline["starts_run"]
        summary["speedup"] = {"exhaustive": base_t / exhaustive["time_s"], "default": base_t / default["time_s"],
                              "exhaustive_cpu": base_c / exhaustive["cpu_s"], "default_cpu": base_c / default["cpu_s"]}
        sp = summary["speedup"]
        say(f"  speed-up over the baseline{' (extrapolated)' if baseline['extrapolated'] else ''}, wall time: "
            f"exhaustive x{sp['exhaustive']:.1f}, default x{sp['default']:.1f}; "
            f"CPU time: exhaustive x{sp['exhaustive_cpu']:.1f}, default x{sp['default_cpu']:.1f}")

    mach["loadavg_at_end"] = load_average()
    say(f"  1-min load average at the end: {mach['loadavg_at_end']} (this benchmark alone keeps about one core busy)")

    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
