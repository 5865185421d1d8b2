"""Tests for autovid.stats on simulated ablations whose truth is known: coverage, test size, power, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp
from scipy.special import expit

from autovid import stats

SEEDS, VIDEOS = 3, 300


def _population_accuracy(offset: float, video_sd: float, seed_sd: float) -> float:
    """E[sigmoid(offset + z + u)] for z ~ N(0, video_sd²), u ~ N(0, seed_sd²), by Gauss–Hermite quadrature.

    This is the truth the two-level bootstrap targets: the accuracy expected over the population of test videos
    (difficulty z) and of training seeds (shift u), not the accuracy on one drawn set of videos.
    """
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float((w * expit(offset + math.hypot(video_sd, seed_sd) * x)).sum() / w.sum())


def _simulate(rng: np.random.Generator, offset: float, seeds: int, *, video_sd: float = 1.5, seed_sd: float = 0.1,
              difficulty: np.ndarray | None = None) -> np.ndarray:
    """[seeds, videos] 0/1 correctness: a fresh draw of video difficulties (unless given) and seed shifts."""
    z = rng.normal(0.0, video_sd, VIDEOS) if difficulty is None else difficulty
    u = rng.normal(0.0, seed_sd, seeds)
    p = expit(offset + z[None, :] + u[:, None])  # (S, V)
    return (rng.random(p.shape) < p).astype(float)


def test_accuracy_ci_covers_the_population_accuracy():
    truth = _population_accuracy(0.4, 1.5, 0.1)
    rng = np.random.default_rng(1)
    trials, hits, widths = 300, 0, []
    for _ in range(trials):
        mean, low, high = stats.bootstrap_accuracy_ci(_simulate(rng, 0.4, SEEDS), n_boot=1000, rng=rng)
        assert low <= mean <= high
        hits += low <= truth <= high
        widths.append(high - low)
    # 300 intervals: the binomial standard error of the coverage is about 0.013
    assert 0.90 <= hits / trials <= 0.99
    # and the intervals are not trivially wide: ±2 SE of a 300-video mean is about ±0.06
    assert 0.06 < np.mean(widths) < 0.16


def test_accuracy_ci_with_one_seed_resamples_videos_only():
    rng = np.random.default_rng(2)
    c = _simulate(rng, 0.0, 1)
    mean, low, high = stats.bootstrap_accuracy_ci(c, n_boot=4000, rng=rng)
    assert mean == pytest.approx(c.mean())
    se = math.sqrt(mean * (1 - mean) / VIDEOS)  # the binomial standard error of a mean over 300 videos
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)
    # a 1-D vector is one seed
    assert stats.bootstrap_accuracy_ci(c[0], n_boot=4000, rng=np.random.default_rng(3)) == \
        stats.bootstrap_accuracy_ci(c, n_boot=4000, rng=np.random.default_rng(3))


def test_accuracy_ci_widens_with_seed_variation():
    # The same per-seed accuracies spread apart: the seed level of the bootstrap must see it.
    rng = np.random.default_rng(4)
    z = rng.normal(0.0, 1.5, VIDEOS)
    calm = _simulate(rng, 0.0, 5, seed_sd=0.0, difficulty=z)
    noisy = _simulate(rng, 0.0, 5, seed_sd=1.0, difficulty=z)
    _, lo_calm, hi_calm = stats.bootstrap_accuracy_ci(calm, n_boot=2000, rng=rng)
    _, lo_noisy, hi_noisy = stats.bootstrap_accuracy_ci(noisy, n_boot=2000, rng=rng)
    assert hi_noisy - lo_noisy > 1.5 * (hi_calm - lo_calm)


def test_identical_arms_are_not_significant():
    c = _simulate(np.random.default_rng(5), 0.5, SEEDS)
    result = stats.paired_comparison(c, c.copy(), n_boot=500, n_perm=2000)
    assert result["delta"] == 0.0
    assert result["p_value"] == 1.0
    assert result["significant"] is False
    # the same networks in another seed order: every per-video difference is still 0
    assert stats.paired_comparison(c, c[::-1], n_boot=500, n_perm=2000)["p_value"] == 1.0


def test_permutation_test_keeps_its_size_under_the_null():
    # Two arms drawn from the same per-video accuracies (paired on the same videos): rejections at α = 0.05
    # must stay near 5 %. 400 simulations: binomial SE ≈ 0.011.
    rng = np.random.default_rng(6)
    trials, rejections, p_values = 400, 0, []
    for _ in range(trials):
        p = expit(0.3 + rng.normal(0.0, 1.5, VIDEOS))
        arm = (rng.random((3, VIDEOS)) < p).astype(float)
        ref = (rng.random((2, VIDEOS)) < p).astype(float)  # seed counts may differ between arms
        result = stats.paired_comparison(arm, ref, alpha=0.05, n_boot=200, n_perm=500, rng=rng)
        rejections += result["significant"]
        p_values.append(result["p_value"])
    assert rejections / trials <= 0.05 + 0.03
    # under H0 the p-values are roughly uniform, not piled up at 1 (a test that never rejects would pass above)
    assert 0.35 < np.median(p_values) < 0.65


def test_clear_difference_is_significant():
    rng = np.random.default_rng(7)
    arm = (rng.random((SEEDS, VIDEOS)) < 0.8).astype(float)
    ref = (rng.random((SEEDS, VIDEOS)) < 0.3).astype(float)
    result = stats.paired_comparison(arm, ref, n_boot=2000, n_perm=2000, rng=rng)
    assert result["delta"] == pytest.approx(arm.mean() - ref.mean())
    assert result["delta"] == pytest.approx(0.5, abs=0.05)
    assert result["p_value"] < 0.01
    assert result["p_value"] == pytest.approx(1 / 2001)  # no permutation reaches it: the (b+1)/(m+1) floor
    assert 0 < result["delta_ci_low"] < result["delta"] < result["delta_ci_high"]
    assert result["significant"] is True
    flipped = stats.paired_comparison(ref, arm, n_boot=2000, n_perm=2000, rng=np.random.default_rng(7))
    assert flipped["delta"] == pytest.approx(-result["delta"]) and flipped["delta_ci_high"] < 0


def test_paired_comparison_rejects_different_test_sets():
    with pytest.raises(ValueError, match="same test videos"):
        stats.paired_comparison(np.ones((2, 10)), np.ones((2, 11)))


@pytest.mark.parametrize(
    ("n", "alpha", "power", "expected"),
    [
        (300, 0.05, 0.8, 0.1144),  # sqrt(0.5 / 300) · (1.95996 + 0.84162)
        (1000, 0.05, 0.8, 0.0627),
        (300, 0.01, 0.9, math.sqrt(0.5 / 300) * (2.57583 + 1.28155)),
    ],
)
def test_min_detectable_difference(n, alpha, power, expected):
    assert stats.min_detectable_difference(n, alpha=alpha, power=power) == pytest.approx(expected, abs=1e-4)


def test_min_detectable_difference_is_worst_at_half():
    assert stats.min_detectable_difference(300, p=0.9) < stats.min_detectable_difference(300)


def test_kendall_tau_concordant_and_reversed():
    a = np.arange(12.0)
    concordant = stats.kendall_tau_ci(a, a**2)
    assert concordant["tau"] == pytest.approx(1.0)
    assert concordant["p_value"] < 0.001
    assert concordant["ci_low"] == pytest.approx(1.0) and concordant["ci_high"] == pytest.approx(1.0)
    reversed_ = stats.kendall_tau_ci(a, -a)
    assert reversed_["tau"] == pytest.approx(-1.0) and reversed_["ci_high"] == pytest.approx(-1.0)


def test_kendall_tau_ci_on_noisy_scores():
    rng = np.random.default_rng(8)
    x = rng.random(40)
    y = x + rng.normal(0.0, 0.3, 40)
    result = stats.kendall_tau_ci(x, y, n_boot=2000, rng=rng)
    assert result["tau"] == pytest.approx(sp.kendalltau(x, y).statistic)
    assert 0 < result["ci_low"] < result["tau"] < result["ci_high"] < 1


def test_vectorised_tau_matches_scipy_on_tied_resamples():
    # Resampling with replacement makes ties; the vectorised τ-b must agree with scipy on them.
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, 4, 15).astype(float), rng.random(15)
    idx = rng.integers(0, 15, size=(20, 15))
    ours = stats._tau_b(x[idx], y[idx])
    assert ours == pytest.approx([sp.kendalltau(x[i], y[i]).statistic for i in idx])


def test_kendall_tau_ci_is_nan_when_undefined():
    result = stats.kendall_tau_ci(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]), n_boot=100)
    assert math.isnan(result["tau"]) and math.isnan(result["ci_low"]) and math.isnan(result["ci_high"])
    # two items: most resamples repeat one item, so too few are usable for a CI
    two = stats.kendall_tau_ci(np.array([1.0, 2.0]), np.array([1.0, 2.0]), n_boot=100)
    assert two["tau"] == pytest.approx(1.0) and math.isnan(two["ci_low"])


@pytest.mark.parametrize(
    ("value", "others", "percentile"),
    [
        (0.5, [0.1, 0.2, 0.3, 0.4], 100.0),
        (0.0, [0.1, 0.2, 0.3, 0.4], 0.0),
        (0.25, [0.1, 0.2, 0.3, 0.4], 50.0),
        (0.3, [0.1, 0.2, 0.3, 0.4], 62.5),  # two below, one tie counted half: 2.5 / 4
        (0.7, [0.7, 0.7], 50.0),
    ],
)
def test_percentile_known_values(value, others, percentile):
    result = stats.percentile_with_ci(value, np.array(others), n_boot=500)
    assert result["percentile"] == pytest.approx(percentile)
    assert result["ci_low"] <= result["percentile"] <= result["ci_high"]


def test_percentile_ci_narrows_with_more_random_genotypes():
    rng = np.random.default_rng(10)
    few = stats.percentile_with_ci(0.6, rng.random(10), n_boot=2000, rng=rng)
    many = stats.percentile_with_ci(0.6, rng.random(1000), n_boot=2000, rng=rng)
    assert many["percentile"] == pytest.approx(60.0, abs=5.0)
    assert many["ci_high"] - many["ci_low"] < 0.5 * (few["ci_high"] - few["ci_low"])


def test_same_rng_seed_same_results():
    rng = np.random.default_rng(11)
    arm, ref = _simulate(rng, 0.5, SEEDS), _simulate(rng, 0.3, 2)
    x, y = rng.random(20), rng.random(20)

    def run(seed: int) -> tuple:
        return (
            stats.bootstrap_accuracy_ci(arm, n_boot=500, rng=np.random.default_rng(seed)),
            stats.paired_comparison(arm, ref, n_boot=500, n_perm=500, rng=np.random.default_rng(seed)),
            stats.kendall_tau_ci(x, y, n_boot=300, rng=np.random.default_rng(seed)),
            stats.percentile_with_ci(0.5, x, n_boot=300, rng=np.random.default_rng(seed)),
        )

    assert run(0) == run(0)
    assert run(0) != run(1)
    # the default generator is seeded too
    assert stats.bootstrap_accuracy_ci(arm, n_boot=500) == stats.bootstrap_accuracy_ci(arm, n_boot=500)


def test_chunking_does_not_change_results(monkeypatch):
    # Small chunks draw the stream in another order (other replicates), but every slot must be filled with a
    # real replicate: the interval agrees with the unchunked one up to Monte Carlo error.
    rng = np.random.default_rng(12)
    c = _simulate(rng, 0.2, SEEDS)
    whole = stats.bootstrap_accuracy_ci(c, n_boot=1000, rng=np.random.default_rng(0))
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 7 * VIDEOS)  # 7 replicates per chunk
    chunked = stats.bootstrap_accuracy_ci(c, n_boot=1000, rng=np.random.default_rng(0))
    assert chunked.mean == whole.mean
    assert chunked.low == pytest.approx(whole.low, abs=0.01) and chunked.high == pytest.approx(whole.high, abs=0.01)


def test_rejects_percentages():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.bootstrap_accuracy_ci(np.full((2, 5), 60.0))
