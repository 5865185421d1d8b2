"""Tests for autovid.stats on simulated ablations whose truth is known: coverage, test size, power, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
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


# ------------------------------------------------------------------------------------ seed-level statistics

# Each seed is an independent search + retrain: its network is offset by u_s ~ N(0, SEED_LOGIT_SD²) on the logit
# scale of every video. 0.5 makes the accuracy of one seed on 300 videos of difficulty N(0, 1.5²) vary from seed
# to seed with an SD of about 9 points, the 300-video binomial noise included (checked below).
SEED_LOGIT_SD = 0.5
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(40)
_GH_W = _GH_W / _GH_W.sum()


def _expected_seed_accuracy(difficulty: np.ndarray, offset: float) -> float:
    """E_u[mean_v sigmoid(offset + b_v + u)] over seed offsets u: the accuracy a seed is expected to reach on
    these videos, by Gauss–Hermite quadrature. Its difference between arms is the Δ that compare_arms targets."""
    p = expit(offset + difficulty[None, :] + SEED_LOGIT_SD * _GH_X[:, None])  # (nodes, V)
    return float(_GH_W @ p.mean(axis=1))


def _seed_accuracy_sd(offset: float) -> float:
    """SD of one seed's accuracy on 300 population videos: seed variation plus the binomial noise of the videos."""
    p = expit(offset + 1.5 * _GH_X[None, :] + SEED_LOGIT_SD * _GH_X[:, None])  # (seed node, video node)
    per_seed = p @ _GH_W  # accuracy of a network with this offset on the video population
    between = _GH_W @ (per_seed - _GH_W @ per_seed) ** 2
    binomial = _GH_W @ (p * (1 - p)) @ _GH_W / VIDEOS
    return math.sqrt(between + binomial)


def _shift_for_gap(gap: float) -> float:
    """The logit shift of one arm that raises the population accuracy (videos and seeds) by ``gap``."""
    base = _population_accuracy(0.0, 1.5, SEED_LOGIT_SD)
    return optimize.brentq(lambda s: _population_accuracy(s, 1.5, SEED_LOGIT_SD) - base - gap, 0.0, 5.0)


def _arm_draws(rng: np.random.Generator, draws: int, seeds_arm: int, seeds_ref: int, shift: float):
    """Yield (arm, ref, difficulty): both arms on one fresh draw of 300 test videos, each seed a fresh network."""
    for _ in range(draws):
        z = rng.normal(0.0, 1.5, VIDEOS)
        arm = _simulate(rng, shift, seeds_arm, seed_sd=SEED_LOGIT_SD, difficulty=z)
        ref = _simulate(rng, 0.0, seeds_ref, seed_sd=SEED_LOGIT_SD, difficulty=z)
        yield arm, ref, z


def test_simulated_seed_sd_is_about_nine_points():
    assert _seed_accuracy_sd(0.0) == pytest.approx(0.09, abs=0.005)


@pytest.mark.parametrize("seeds", [3, 5])
def test_compare_arms_keeps_its_size_across_seeds(seeds):
    # The same method twice: only the seeds differ. 1000 draws: binomial SE of a 5 % rate ≈ 0.007.
    rng = np.random.default_rng(20 + seeds)
    results = [stats.compare_arms(arm, ref, n_perm=200, rng=rng) for arm, ref, _ in _arm_draws(rng, 1000, seeds,
                                                                                              seeds, 0.0)]
    p_seed = np.array([r["p_value"] for r in results])
    p_networks = np.array([r["p_networks"] for r in results])
    assert 0.025 <= (p_seed < 0.05).mean() <= 0.075
    # The per-video test holds the trained networks fixed: it finds the seed-to-seed differences "significant"
    # in most null draws, which is why it is not the method comparison.
    assert (p_networks < 0.05).mean() > 0.3
    # and the simulation has the seed variation it claims: the pooled seed SD estimates it without bias (variance)
    pooled = math.sqrt(np.mean([r["seed_sd"] ** 2 for r in results]))
    assert pooled == pytest.approx(_seed_accuracy_sd(0.0), rel=0.05)


def test_compare_arms_ci_covers_the_expected_seed_difference():
    # A real difference, unequal seed counts. The truth is the expected per-seed accuracy difference on the
    # drawn videos (the seeds are what varies), computed by quadrature over seed offsets.
    rng = np.random.default_rng(30)
    shift, trials, covered = 0.3, 1000, 0
    for arm, ref, z in _arm_draws(rng, trials, 3, 5, shift):
        truth = _expected_seed_accuracy(z, shift) - _expected_seed_accuracy(z, 0.0)
        r = stats.compare_arms(arm, ref, n_perm=50, rng=rng)
        assert r["delta_ci_low"] < r["delta"] < r["delta_ci_high"]
        covered += r["delta_ci_low"] <= truth <= r["delta_ci_high"]
    assert 0.92 <= covered / trials <= 0.98


def _rejection_rate(rng: np.random.Generator, seeds: int, gap: float, draws: int = 1000) -> float:
    shift = _shift_for_gap(gap)
    return float(np.mean([stats.compare_arms(arm, ref, n_perm=50, rng=rng)["p_value"] < 0.05
                          for arm, ref, _ in _arm_draws(rng, draws, seeds, seeds, shift)]))


def test_compare_arms_detects_a_large_gap_with_five_seeds():
    # 16 points with 5 seeds per arm at a 9-point seed SD: the noncentral t predicts power ≈ 0.7.
    rate = _rejection_rate(np.random.default_rng(40), 5, 0.16)
    ncp = 0.16 / (_seed_accuracy_sd(0.0) * math.sqrt(2 / 5))
    crit = sp.t.ppf(0.975, 8)
    predicted = sp.nct.sf(crit, 8, ncp) + sp.nct.cdf(-crit, 8, ncp)
    assert rate >= 0.6
    assert rate == pytest.approx(predicted, abs=0.08)


def test_seed_power_mdd_is_detected_with_eighty_percent():
    mdd = stats.seed_power(_seed_accuracy_sd(0.0), 5, 5)
    assert 0.17 < mdd < 0.2  # ≈ 2.9 · 0.09 · sqrt(2 / 5)
    rate = _rejection_rate(np.random.default_rng(41), 5, mdd)
    assert rate == pytest.approx(0.8, abs=0.1)


def test_compare_arms_matches_welch_on_per_seed_accuracies():
    rng = np.random.default_rng(42)
    arm, ref = _simulate(rng, 0.4, 4, seed_sd=SEED_LOGIT_SD), _simulate(rng, 0.0, 3, seed_sd=SEED_LOGIT_SD)
    r = stats.compare_arms(arm, ref, alpha=0.1, n_perm=500, rng=rng)
    welch = sp.ttest_ind(arm.mean(axis=1), ref.mean(axis=1), equal_var=False)
    ci = welch.confidence_interval(0.9)
    assert r["delta"] == pytest.approx(arm.mean() - ref.mean())
    assert (r["p_value"], r["df"]) == pytest.approx((welch.pvalue, welch.df))
    assert (r["delta_ci_low"], r["delta_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert (r["seeds_arm"], r["seeds_ref"]) == (4, 3)
    pooled = (3 * arm.mean(axis=1).var(ddof=1) + 2 * ref.mean(axis=1).var(ddof=1)) / 5
    assert r["seed_sd"] == pytest.approx(math.sqrt(pooled))
    assert 0 < r["p_networks"] <= 1
    assert stats.compare_arms(arm, ref, n_perm=500, rng=np.random.default_rng(0)) == \
        stats.compare_arms(arm, ref, n_perm=500, rng=np.random.default_rng(0))


def test_compare_arms_has_no_seed_level_test_without_seed_variance():
    rng = np.random.default_rng(43)
    arm, ref = _simulate(rng, 1.0, 1), _simulate(rng, 0.0, 3)
    one_seed = stats.compare_arms(arm, ref, n_perm=500, rng=rng)
    assert one_seed["delta"] == pytest.approx(arm.mean() - ref.mean())
    for key in ("p_value", "delta_ci_low", "delta_ci_high", "df"):
        assert math.isnan(one_seed[key])
    assert one_seed["p_networks"] < 0.05  # the networks differ; whether the methods do, one seed cannot say
    assert one_seed["seed_sd"] == pytest.approx(ref.mean(axis=1).std(ddof=1))  # only ref has df
    # identical seeds in both arms: zero seed variance, a non-zero Δ, and still no seed-level test
    flat = stats.compare_arms(np.tile(arm, (3, 1)), np.tile(ref[:1], (4, 1)), n_perm=500, rng=rng)
    assert flat["delta"] != 0 and flat["seed_sd"] == 0
    assert math.isnan(flat["p_value"]) and math.isnan(flat["delta_ci_low"]) and math.isnan(flat["df"])


def test_compare_arms_rejects_different_test_sets():
    with pytest.raises(ValueError, match="same test videos"):
        stats.compare_arms(np.ones((3, 10)), np.ones((3, 11)))


def test_holm_known_values():
    adjusted = stats.holm([0.01, 0.04, 0.03, math.nan])
    # m = 3: 3 · 0.01, then max(0.03, 2 · 0.03) = 0.06, then max(0.06, 1 · 0.04) = 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert stats.holm([0.4, 0.9, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])
    assert stats.holm([]).shape == (0,)


def test_holm_is_monotone_and_conservative():
    p = np.random.default_rng(44).random(30) ** 3
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all((adjusted >= p) & (adjusted <= 1))
    assert adjusted[order[0]] == pytest.approx(30 * p[order[0]])


@pytest.mark.parametrize(("delta", "expected"), [(0.05, 64), (0.08, 26), (0.1, 17)])
def test_seeds_needed_textbook_values(delta, expected):
    # Cohen's d = delta / sd = 0.5, 0.8, 1.0 at α = 0.05 (two-sided), power 0.8: 64, 26 and 17 per group
    assert stats.seeds_needed(0.1, delta) == expected


@pytest.mark.parametrize(("sd", "delta"), [(0.09, 0.05), (0.09, 0.1), (0.03, 0.05), (0.05, 0.02)])
def test_seeds_needed_agrees_with_seed_power(sd, delta):
    n = stats.seeds_needed(sd, delta)
    assert n is not None and n > 2
    assert stats.seed_power(sd, n, n) <= delta < stats.seed_power(sd, n - 1, n - 1)


def test_seed_power_edge_cases_and_large_sample_limit():
    # many seeds: the t-test is the z-test, MDD = sd · sqrt(2 / n) · (z_0.975 + z_0.8)
    assert stats.seed_power(0.09, 1000, 1000) == pytest.approx(0.09 * math.sqrt(2 / 1000) * 2.80159, rel=0.005)
    assert stats.seed_power(0.0, 3, 3) == 0.0
    assert stats.seed_power(0.09, 3, 5) < stats.seed_power(0.09, 3, 3)
    assert math.isnan(stats.seed_power(math.nan, 5, 5)) and math.isnan(stats.seed_power(0.09, 1, 5))
    assert stats.seeds_needed(0.0) == 2
    assert stats.seeds_needed(math.nan) is None
    assert stats.seeds_needed(0.09, 0.05, max_seeds=20) is None


def test_wilson_interval_known_values():
    mean, low, high = stats.wilson_interval(81, 90)
    z, p, n = sp.norm.ppf(0.975), 0.9, 90
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert mean == 0.9
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.82076, 0.94649), abs=1e-5)
    # no hits: the interval starts at 0 and is not degenerate
    zero = stats.wilson_interval(0, 10)
    assert zero.low == pytest.approx(0.0, abs=1e-12) and zero.high == pytest.approx(z**2 / (10 + z**2))


@pytest.mark.parametrize(("hits", "n"), [(1, 0), (-1, 10), (11, 10), (2.5, 10)])
def test_wilson_interval_rejects_bad_counts(hits, n):
    with pytest.raises(ValueError):
        stats.wilson_interval(hits, n)


def test_icc_shrout_fleiss_example():
    # Shrout & Fleiss (1979), 6 targets × 4 judges: BMS = 11.24, WMS = 6.26, ICC(1,1) = 0.17
    table = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    r = stats.icc_oneway(table)
    assert r["icc"] == pytest.approx((11.2417 - 6.2639) / (11.2417 + 3 * 6.2639), abs=1e-3)
    assert r["f"] == pytest.approx(11.2417 / 6.2639, abs=1e-3)
    assert r["p_value"] == pytest.approx(sp.f.sf(r["f"], 5, 18))
    assert r["ci_low"] < r["icc"] < r["ci_high"]
    assert (r["groups"], r["replicates"]) == (6, 4)


def test_icc_ci_covers_the_true_share_of_variance():
    # genotype effect SD 0.03, seed noise SD 0.03: ICC = 0.5
    rng = np.random.default_rng(45)
    trials, covered, estimates = 300, 0, []
    for _ in range(trials):
        scores = 0.6 + rng.normal(0, 0.03, (30, 1)) + rng.normal(0, 0.03, (30, 3))
        r = stats.icc_oneway(scores)
        covered += r["ci_low"] <= 0.5 <= r["ci_high"]
        estimates.append(r["icc"])
    assert 0.91 <= covered / trials <= 0.99
    assert np.mean(estimates) == pytest.approx(0.5, abs=0.05)


def test_icc_extremes():
    constant = stats.icc_oneway(np.array([[0.5, 0.5, 0.5], [0.7, 0.7, 0.7], [0.1, 0.1, 0.1]]))
    assert constant["icc"] == 1.0 and math.isnan(constant["ci_low"]) and math.isnan(constant["ci_high"])
    noise = stats.icc_oneway(np.random.default_rng(46).normal(0.6, 0.05, (50, 4)))
    assert abs(noise["icc"]) < 0.15 and noise["p_value"] > 0.05 and noise["ci_low"] < 0 < noise["ci_high"]
    for bad in (np.ones((1, 3)), np.ones((3, 1)), np.array([[1.0, math.nan], [2.0, 3.0]]), np.ones(4)):
        with pytest.raises(ValueError):
            stats.icc_oneway(bad)
