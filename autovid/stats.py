"""Confidence statistics for ablations: bootstrap intervals, paired permutation tests, power, rank correlation."""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "Interval",
    "bootstrap_accuracy_ci",
    "kendall_tau_ci",
    "min_detectable_difference",
    "paired_comparison",
    "percentile_with_ci",
]

# Bootstrap replicates are drawn in chunks of at most this many [replicate, video] cells (32 MiB of float64),
# so that 10 000 replicates over a few thousand test videos never hold the whole matrix at once.
_CHUNK_CELLS = 4_000_000


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval (unpacks as ``mean, low, high``)."""

    mean: float
    low: float
    high: float


def bootstrap_accuracy_ci(
    correct: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    rng: np.random.Generator | None = None,
) -> Interval:
    """Mean accuracy with a two-level percentile bootstrap CI over seeds and test videos.

    ``correct`` is ``[seeds, videos]`` (a 1-D vector is one seed): 0/1 or fractional correctness, the same test
    videos in every row. Each replicate resamples seeds with replacement and videos with replacement (the same
    video indices for every seed), so the interval covers the accuracy expected over both the video population
    and training seeds. With one seed only videos are resampled. Per-video noise enters both levels, so the
    interval errs wide when seeds barely differ; with very few seeds and large seed-to-seed variation it errs
    narrow (three seeds are a small sample of seeds).
    """
    c = _correctness(correct, "correct")
    rng = _rng(rng)
    seeds, videos = c.shape
    replicates = np.empty(n_boot)
    for start, size in _chunks(n_boot, videos):
        per_video = _seed_resampled_means(c, size, rng)  # (size, V)
        replicates[start:start + size] = _video_resampled_means(per_video, rng)
    low, high = _percentiles(replicates, confidence)
    return Interval(float(c.mean()), low, high)


def paired_comparison(
    arm: np.ndarray,
    ref: np.ndarray,
    *,
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    n_perm: int = 10_000,
    rng: np.random.Generator | None = None,
) -> dict[str, float | bool]:
    """Compare two arms scored on the same test videos: Δ = arm − ref accuracy, its CI and a p-value.

    ``arm`` and ``ref`` are ``[seeds, videos]`` (seed counts may differ; columns are the same videos). The CI is a
    paired bootstrap: one set of resampled videos for both arms, seeds resampled within each arm. The p-value is a
    two-sided sign-flip permutation test on the per-video differences of seed-averaged correctness, conditional
    on the trained seeds, with the (b + 1) / (m + 1) correction so it is never 0. The two can disagree: the test
    asks whether these trained networks differ, the CI also whether another draw of seeds would.

    Returns ``{"delta", "delta_ci_low", "delta_ci_high", "p_value", "significant"}``.
    """
    a, r = _correctness(arm, "arm"), _correctness(ref, "ref")
    if a.shape[1] != r.shape[1]:
        raise ValueError(f"arm and ref must be scored on the same test videos, got {a.shape[1]} and {r.shape[1]}")
    rng = _rng(rng)
    videos = a.shape[1]
    replicates = np.empty(n_boot)
    for start, size in _chunks(n_boot, videos):
        diff = _seed_resampled_means(a, size, rng) - _seed_resampled_means(r, size, rng)  # (size, V)
        replicates[start:start + size] = _video_resampled_means(diff, rng)
    low, high = _percentiles(replicates, confidence)
    p_value = _sign_flip_p_value(a.mean(axis=0) - r.mean(axis=0), n_perm, rng)
    return {
        "delta": float(a.mean() - r.mean()),
        "delta_ci_low": low,
        "delta_ci_high": high,
        "p_value": p_value,
        "significant": bool(p_value < alpha),
    }


def min_detectable_difference(n_videos: int, *, alpha: float = 0.05, power: float = 0.8, p: float = 0.5) -> float:
    """Smallest accuracy difference (a fraction) that a two-sided level-``alpha`` test detects with ``power``.

    Normal approximation for two independent proportions on ``n_videos`` each, at accuracy ``p`` (0.5 is the
    worst case): ``sqrt(2 p (1 − p) / n) · (z_{1−α/2} + z_power)``. It ignores the pairing of the two arms on the
    same videos, which only lowers the variance of the difference, so for the paired test it is conservative.
    """
    if n_videos < 1:
        raise ValueError(f"n_videos must be positive, got {n_videos}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(math.sqrt(2 * p * (1 - p) / n_videos) * z)


def kendall_tau_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 2_000,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Kendall τ-b with scipy's two-sided p-value and a percentile bootstrap CI over resampled items.

    Resamples where either scoring is constant (τ undefined) are skipped; the CI is NaN when fewer than half of
    the replicates are valid, or when τ itself is undefined. Returns ``{"tau", "p_value", "ci_low", "ci_high"}``.
    """
    x, y = _paired_scores(a, b)
    result = stats.kendalltau(x, y)
    tau, p_value = float(result.statistic), float(result.pvalue)
    rng = _rng(rng)
    n = len(x)
    replicates = []
    for _, size in _chunks(n_boot, n * n):
        idx = rng.integers(0, n, size=(size, n))
        replicates.append(_tau_b(x[idx], y[idx]))
    taus = np.concatenate(replicates)
    taus = taus[~np.isnan(taus)]
    if math.isnan(tau) or len(taus) < n_boot / 2:
        low = high = math.nan
    else:
        low, high = _percentiles(taus, confidence)
    return {"tau": tau, "p_value": p_value, "ci_low": low, "ci_high": high}


def percentile_with_ci(
    value: float,
    others: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Percentile (0–100) of ``value`` among ``others`` with a bootstrap CI resampling ``others``.

    The percentile counts the scores strictly below ``value`` plus half of the ties, so a searched genotype that
    equals every random genotype sits at 50. Returns ``{"percentile", "ci_low", "ci_high"}``.
    """
    scores = np.asarray(others, dtype=float).ravel()
    if scores.size == 0 or np.isnan(scores).any():
        raise ValueError("others must be a non-empty array of scores without NaN")
    # Each other genotype contributes 1 (below), 0.5 (tie) or 0 (above); the percentile is their mean.
    rank = (scores < value) + 0.5 * (scores == value)
    rng = _rng(rng)
    replicates = np.empty(n_boot)
    for start, size in _chunks(n_boot, scores.size):
        replicates[start:start + size] = _video_resampled_means(np.broadcast_to(rank, (size, scores.size)), rng)
    low, high = _percentiles(100 * replicates, confidence)
    return {"percentile": float(100 * rank.mean()), "ci_low": low, "ci_high": high}


# --------------------------------------------------------------------------------------------- helpers


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


def _correctness(values: np.ndarray, name: str) -> np.ndarray:
    c = np.atleast_2d(np.asarray(values, dtype=float))
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"{name} must be a non-empty [seeds, videos] array, got shape {np.shape(values)}")
    if np.isnan(c).any() or (c < 0).any() or (c > 1).any():
        raise ValueError(f"{name} must hold correctness fractions in [0, 1]")
    return c


def _paired_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D scorings of the same length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("rank correlation needs at least two items")
    return x, y


def _chunks(n_boot: int, cells_per_replicate: int) -> Iterator[tuple[int, int]]:
    """(start, size) blocks of replicates that keep each block under ``_CHUNK_CELLS`` cells."""
    if n_boot < 1:
        raise ValueError(f"the number of replicates must be positive, got {n_boot}")
    step = max(1, _CHUNK_CELLS // max(1, cells_per_replicate))
    for start in range(0, n_boot, step):
        yield start, min(step, n_boot - start)


def _seed_resampled_means(c: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, V): per-video mean over a with-replacement resample of the seeds (rows of ``c``), per replicate."""
    seeds = c.shape[0]
    if seeds == 1:  # nothing to resample: one seed says nothing about seed-to-seed variation
        return np.broadcast_to(c, (size, c.shape[1]))
    counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=size)  # (size, S): times each seed is drawn
    return counts @ c / seeds


def _video_resampled_means(per_video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(size,): mean of each row of ``per_video`` over a with-replacement resample of its columns (videos)."""
    size, videos = per_video.shape
    idx = rng.integers(0, videos, size=(size, videos))
    return np.take_along_axis(per_video, idx, axis=1).mean(axis=1)


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def _sign_flip_p_value(diff: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip test of mean(diff) = 0: under H0 each video's difference is as likely negated."""
    observed = abs(diff.sum())
    # Sums of the same numbers in another order differ by rounding; count those as ties, not as smaller.
    tol = 1e-9 * max(1.0, float(np.abs(diff).sum()))
    at_least = 0
    for _, size in _chunks(n_perm, len(diff)):
        signs = np.where(rng.random((size, len(diff))) < 0.5, -1.0, 1.0)
        at_least += int((np.abs(signs @ diff) >= observed - tol).sum())
    return (at_least + 1) / (n_perm + 1)


def _tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row pair of ``x`` and ``y`` (both (B, n)); NaN where a row is constant.

    τ-b = Σ sign(Δx)·sign(Δy) / sqrt(Σ sign(Δx)² · Σ sign(Δy)²) over item pairs: the same statistic as
    scipy.stats.kendalltau, vectorised over replicates (resampling with replacement makes many ties).
    """
    sx = np.sign(x[:, :, None] - x[:, None, :])  # (B, n, n)
    sy = np.sign(y[:, :, None] - y[:, None, :])
    untied_x, untied_y = (sx * sx).sum(axis=(1, 2)), (sy * sy).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=(1, 2)) / np.sqrt(untied_x * untied_y)
    return np.where((untied_x == 0) | (untied_y == 0), np.nan, tau)
