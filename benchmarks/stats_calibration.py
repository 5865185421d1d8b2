"""Calibration of ``autovid.stats.compare_arms`` by simulation: the seed-level Welch test next to the per-video test.

Simulates ablations whose truth is known, with the model of tests/test_stats.py: each draw has V=300 test
videos of difficulty logit b_v ~ N(0, 1.5²) (drawn afresh per draw, shared by both arms), every seed of an arm
is an independent search + retrain with a logit offset u_s ~ N(0, 0.5²) (a per-seed accuracy SD of about 9
points, the videos' binomial noise included), and a video is correct with probability sigmoid(b_v + u_s + shift).
For 3 vs 3 and 5 vs 5 seeds it prints, side by side in one run:

- false-positive rate at α=0.05 under the null (the same method twice, shift 0): the seed-level ``p_value`` of
  ``compare_arms`` and the per-video sign-flip ``p_networks`` of the same call (which holds the trained seeds
  fixed; run with ``n_perm=200`` instead of the default 10 000 to keep it fast);
- coverage of the 95 % CI for the true Δ, the expected per-seed accuracy difference on the drawn videos (by
  Gauss–Hermite quadrature over seed offsets, as in the tests), at gaps of 5, 10 and 16 points;
- power at those gaps (a gap is the difference of population accuracy, videos and seeds, the shift solved for
  it) with the analytic power of the noncentral t for comparison, and the per-video test's rejection rate;
- ``seed_power``'s minimal detectable difference at the simulated seed SD, and ``seeds_needed`` for 5 points.

Every figure is a rate over simulated draws: it depends on the draws and the seed (and the numpy/scipy versions
that generate them), not on the machine; only the run time printed last does.

Run: ``.venv/bin/python benchmarks/stats_calibration.py`` (about half a minute on one core). Environment variables
(no argument parsing): ``BENCH_DRAWS`` (draws per row, default 2000), ``BENCH_SEED`` (default 0).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy import optimize
from scipy import stats as sp
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autovid import stats  # noqa: E402

VIDEOS = 300
VIDEO_SD = 1.5  # SD of the videos' difficulty logits
SEED_LOGIT_SD = 0.5  # SD of a seed's logit offset: about 9 points of per-seed accuracy SD on 300 videos
ALPHA = 0.05
N_PERM = 200  # permutations of the per-video test (compare_arms' default is 10 000)
SEED_COUNTS = (3, 5)
GAPS = (0.05, 0.10, 0.16)

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(40)
_GH_W = _GH_W / _GH_W.sum()


# The simulation model of tests/test_stats.py (copied: benchmarks do not import from tests/).


def _population_accuracy(offset: float, video_sd: float, seed_sd: float) -> float:
    """E[sigmoid(offset + z + u)] for z ~ N(0, video_sd²), u ~ N(0, seed_sd²), by Gauss–Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float((w * expit(offset + math.hypot(video_sd, seed_sd) * x)).sum() / w.sum())


def _simulate(rng: np.random.Generator, offset: float, seeds: int, difficulty: np.ndarray) -> np.ndarray:
    """[seeds, videos] 0/1 correctness on these video difficulties, each seed a fresh logit offset."""
    u = rng.normal(0.0, SEED_LOGIT_SD, seeds)
    p = expit(offset + difficulty[None, :] + u[:, None])  # (S, V)
    return (rng.random(p.shape) < p).astype(float)


def _expected_seed_accuracy(difficulty: np.ndarray, offset: float) -> float:
    """E_u[mean_v sigmoid(offset + b_v + u)] over seed offsets u: the accuracy a seed is expected to reach on
    these videos. Its difference between arms is the Δ that compare_arms targets."""
    p = expit(offset + difficulty[None, :] + SEED_LOGIT_SD * _GH_X[:, None])  # (nodes, V)
    return float(_GH_W @ p.mean(axis=1))


def _seed_accuracy_sd(offset: float) -> float:
    """SD of one seed's accuracy on 300 population videos: seed variation plus the binomial noise of the videos."""
    p = expit(offset + VIDEO_SD * _GH_X[None, :] + SEED_LOGIT_SD * _GH_X[:, None])  # (seed node, video node)
    per_seed = p @ _GH_W  # accuracy of a network with this offset on the video population
    between = _GH_W @ (per_seed - _GH_W @ per_seed) ** 2
    binomial = _GH_W @ (p * (1 - p)) @ _GH_W / VIDEOS
    return math.sqrt(between + binomial)


def _shift_for_gap(gap: float) -> float:
    """The logit shift of one arm that raises the population accuracy (videos and seeds) by ``gap``."""
    base = _population_accuracy(0.0, VIDEO_SD, SEED_LOGIT_SD)
    return optimize.brentq(lambda s: _population_accuracy(s, VIDEO_SD, SEED_LOGIT_SD) - base - gap, 0.0, 5.0)


# ------------------------------------------------------------------------------------------------ benchmark


def _run(rng: np.random.Generator, draws: int, seeds: int, shift: float) -> dict[str, np.ndarray]:
    """compare_arms on ``draws`` simulated ablations of ``seeds`` vs ``seeds``; per draw: the two p-values,
    whether the CI covers the true Δ, and the pooled seed SD."""
    p_value, p_networks, covered, seed_sd = (np.empty(draws) for _ in range(4))
    for i in range(draws):
        z = rng.normal(0.0, VIDEO_SD, VIDEOS)
        arm, ref = _simulate(rng, shift, seeds, z), _simulate(rng, 0.0, seeds, z)
        truth = _expected_seed_accuracy(z, shift) - _expected_seed_accuracy(z, 0.0) if shift else 0.0
        r = stats.compare_arms(arm, ref, alpha=ALPHA, n_perm=N_PERM, rng=rng)
        p_value[i], p_networks[i], seed_sd[i] = r["p_value"], r["p_networks"], r["seed_sd"]
        covered[i] = r["delta_ci_low"] <= truth <= r["delta_ci_high"]
    return {"p_value": p_value, "p_networks": p_networks, "covered": covered, "seed_sd": seed_sd}


def _rate(hits: np.ndarray) -> str:
    """A rate over draws with its Monte Carlo standard error (NaN p-values count as no rejection)."""
    r = float(np.mean(hits))
    return f"{r:.3f} ±{math.sqrt(r * (1 - r) / len(hits)):.3f}"


def _analytic_power(gap: float, shift: float, seeds: int) -> float:
    """Two-sided level-α two-sample t-test (df = 2n − 2) at ncp = gap / sqrt((sd_ref² + sd_arm²) / n)."""
    df = 2 * seeds - 2
    ncp = gap / math.sqrt((_seed_accuracy_sd(0.0) ** 2 + _seed_accuracy_sd(shift) ** 2) / seeds)
    crit = sp.t.ppf(1 - ALPHA / 2, df)
    return float(sp.nct.sf(crit, df, ncp) + sp.nct.sf(crit, df, -ncp))


def main() -> None:
    draws = int(os.environ.get("BENCH_DRAWS", "2000"))
    seed = int(os.environ.get("BENCH_SEED", "0"))
    started = time.perf_counter()
    shifts = {gap: _shift_for_gap(gap) for gap in GAPS}
    scenarios = [(n, gap) for n in SEED_COUNTS for gap in (0.0, *GAPS)]
    streams = np.random.SeedSequence(seed).spawn(len(scenarios))  # one stream per row: rows do not share draws
    results = {(n, gap): _run(np.random.default_rng(s), draws, n, shifts.get(gap, 0.0))
               for (n, gap), s in zip(scenarios, streams)}
    sd = _seed_accuracy_sd(0.0)

    print(f"compare_arms calibration by simulation: {draws} draws per row, seed {seed} (BENCH_DRAWS, BENCH_SEED); "
          f"numpy {np.__version__}, scipy {scipy.__version__}")
    print("Figures are rates over simulated draws, ± their Monte Carlo standard error: they depend on the draws and "
          "the seed, not on the machine.")
    print(f"Model: {VIDEOS} test videos per draw, difficulty logit ~ N(0, {VIDEO_SD}²); seed offset ~ "
          f"N(0, {SEED_LOGIT_SD}²); hit ~ Bernoulli(sigmoid(difficulty + offset + shift)).")
    print(f"seed-level = compare_arms' p_value (Welch on per-seed accuracies); per-video = its p_networks "
          f"(sign-flip test holding the trained seeds fixed), with n_perm={N_PERM} to keep it fast.")
    pooled = {n: math.sqrt(float(np.mean(results[(n, 0.0)]["seed_sd"] ** 2))) for n in SEED_COUNTS}
    print(f"per-seed SD (points): {100 * sd:.2f} by quadrature (the model); pooled over the null draws "
          + ", ".join(f"{100 * pooled[n]:.2f} ({n} vs {n})" for n in SEED_COUNTS))

    print(f"\nfalse-positive rate at alpha={ALPHA} under the null (the same method twice)")
    print(f"  {'seeds':<8} {'seed-level':>14} {'per-video':>14}")
    for n in SEED_COUNTS:
        r = results[(n, 0.0)]
        print(f"  {f'{n} vs {n}':<8} {_rate(r['p_value'] < ALPHA):>14} {_rate(r['p_networks'] < ALPHA):>14}")

    print(f"\ncoverage of the {100 * (1 - ALPHA):.0f} % CI for the true Δ (expected per-seed accuracy difference on "
          "the drawn videos), with a real shift")
    print(f"  {'seeds':<8} " + " ".join(f"{f'gap {100 * g:.0f} pts':>14}" for g in GAPS))
    for n in SEED_COUNTS:
        print(f"  {f'{n} vs {n}':<8} " + " ".join(f"{_rate(results[(n, g)]['covered'] == 1):>14}" for g in GAPS))

    print(f"\npower at alpha={ALPHA} (gap = population accuracy difference; analytic = noncentral t, df 2n-2, "
          "the two arms' seed SDs)")
    print(f"  {'seeds':<8} {'gap (pts)':>9} {'seed-level':>14} {'analytic':>9} {'per-video':>14}")
    for n in SEED_COUNTS:
        for g in GAPS:
            r = results[(n, g)]
            print(f"  {f'{n} vs {n}':<8} {100 * g:>9.0f} {_rate(r['p_value'] < ALPHA):>14} "
                  f"{_analytic_power(g, shifts[g], n):>9.3f} {_rate(r['p_networks'] < ALPHA):>14}")

    print(f"\nseed_power MDD (power 0.8, alpha={ALPHA}) at the simulated seed SD {100 * sd:.2f} points: "
          + ", ".join(f"{n} vs {n} {100 * stats.seed_power(sd, n, n):.1f} points" for n in SEED_COUNTS))
    print(f"seeds_needed for 5 points (power 0.8): {stats.seeds_needed(sd, 0.05, alpha=ALPHA)} seeds per arm")
    print(f"\nrun time {time.perf_counter() - started:.1f} s (the only machine-dependent figure)")


if __name__ == "__main__":
    main()
