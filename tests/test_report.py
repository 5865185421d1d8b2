"""Tests for the reporting module: ablation tables with CIs and paired tests, report.md, rank correlation, plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from autovid import report
from autovid.stats import holm, seed_power, seeds_needed

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _png_size(path) -> tuple[int, int]:
    """Width and height in pixels from the PNG's IHDR chunk (after checking the signature)."""
    assert _is_png(path)
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _only_axes(fig: Figure) -> Axes:
    (ax,) = fig.axes
    fig.canvas.draw()  # tick labels and the legend are laid out only when drawn
    return ax


VIDEOS = 300


def _ablation_results(seeds: int = 3) -> tuple[pd.DataFrame, dict[tuple[str, int], np.ndarray]]:
    """Per-seed rows and per-video correctness of three arms on the same 300 test videos.

    darts-p3d ≈ 0.80, random-p3d ≈ 0.78 (too close to tell apart on 300 videos), r3d_18 ≈ 0.40 (clearly worse).
    """
    rng = np.random.default_rng(0)
    rows, correct = [], {}
    for arm, accuracy, params, search in [("darts-p3d", 0.80, 6.7e5, 3600.0), ("random-p3d", 0.78, 7.0e5, 3600.0),
                                          ("r3d_18", 0.40, 3.3e7, 0.0)]:
        for seed in range(seeds):
            c = (rng.random(VIDEOS) < accuracy).astype(float)
            correct[arm, seed] = c
            rows.append(
                dict(arm=arm, seed=seed, top1=c.mean(), top5=min(1.0, accuracy + 0.15), params=params,
                     flops=1e9, search_cost_s=search, retrain_cost_s=1800.0 + seed)
            )
    return pd.DataFrame(rows), correct


def test_ablation_table_one_row_per_arm():
    results, correct = _ablation_results()
    table = report.ablation_table(results, correct, reference="darts-p3d")
    assert list(table.columns) == list(report.ABLATION_COLUMNS)
    assert list(table["arm"]) == ["darts-p3d", "random-p3d", "r3d_18"]  # first-appearance order
    darts, random, r3d = (table.iloc[i] for i in range(3))
    darts_correct = np.stack([correct["darts-p3d", s] for s in range(3)])
    assert darts["top1_mean"] == pytest.approx(darts_correct.mean())
    assert darts["top1_ci_low"] < darts["top1_mean"] < darts["top1_ci_high"]
    assert darts["top1_std"] == pytest.approx(np.std(darts_correct.mean(axis=1), ddof=1))
    assert darts["seeds"] == 3 and darts["test_videos"] == VIDEOS
    assert darts["search_cpu_s"] == pytest.approx(3600.0)
    assert darts["retrain_cpu_s"] == pytest.approx(1801.0)
    # the reference row compares with nothing
    assert darts["delta_vs_ref"] == 0.0 and np.isnan(darts["p_value"]) and not darts["significant"]
    # 2 points with 3 seeds a side: within noise; 40 points: not
    assert not random["significant"] and random["delta_ci_low"] < 0 < random["delta_ci_high"]
    assert r3d["significant"] and r3d["p_holm"] < 0.01 and r3d["delta_ci_high"] < 0
    assert r3d["delta_vs_ref"] == pytest.approx(table["top1_mean"].iloc[2] - darts["top1_mean"])
    # the seed-level test is Welch's across per-seed accuracies, Holm-adjusted over the two comparisons
    per_seed = {arm: np.stack([correct[arm, s] for s in range(3)]).mean(axis=1) for arm in ("darts-p3d", "r3d_18")}
    welch = stats.ttest_ind(per_seed["r3d_18"], per_seed["darts-p3d"], equal_var=False)
    assert r3d["p_value"] == pytest.approx(welch.pvalue)
    assert table["p_holm"].iloc[1:].tolist() == pytest.approx(list(holm(table["p_value"].iloc[1:])))


def test_ablation_table_rejects_bad_inputs():
    results, correct = _ablation_results()
    with pytest.raises(ValueError, match="flops"):
        report.ablation_table(results.drop(columns="flops"), correct, reference="darts-p3d")
    with pytest.raises(ValueError, match="fractions"):
        report.ablation_table(results.assign(top1=lambda d: d["top1"] * 100), correct, reference="darts-p3d")
    with pytest.raises(ValueError, match=r"'darts-p2d'.*darts-p3d, random-p3d, r3d_18"):
        report.ablation_table(results, correct, reference="darts-p2d")
    with pytest.raises(ValueError, match="r3d_18 seed 2"):
        report.ablation_table(results, {k: v for k, v in correct.items() if k != ("r3d_18", 2)}, reference="darts-p3d")
    with pytest.raises(ValueError, match="one length"):
        report.ablation_table(results, {**correct, ("r3d_18", 2): np.ones(VIDEOS - 1)}, reference="darts-p3d")


def test_write_ablation_report(tmp_path):
    results, correct = _ablation_results()
    provenance = {"commit": "0123abc", "config": "cfg123", "manifest": "man456"}
    paths = report.write_ablation_report(results, tmp_path / "out", budget_note="Tiny budget: 2 epochs.",
                                         correct=correct, budget="9 runs of 2 epochs", provenance=provenance)
    assert set(paths) == {"markdown", "csv", "seeds", "plot"}
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns)[:13] == ["arm", "seeds", "test_videos", "top1_mean", "top1_ci_low", "top1_ci_high",
                                      "delta_vs_ref", "delta_ci_low", "delta_ci_high", "p_value", "p_holm",
                                      "significant", "p_networks"]
    assert len(csv) == 3 and csv["top1_mean"].between(0, 1).all()
    assert (csv["significant"] == (csv["p_holm"] < 0.05)).all()
    seeds = pd.read_csv(paths["seeds"])
    assert list(seeds.columns) == ["arm", "seed", "top1", "test_videos"] and len(seeds) == 9
    assert seeds.loc[(seeds["arm"] == "r3d_18") & (seeds["seed"] == 2), "top1"].item() == pytest.approx(
        correct["r3d_18", 2].mean())
    md = paths["markdown"].read_text()
    lines = md.splitlines()
    assert lines[0] == "Provenance: commit 0123abc, config cfg123, manifest man456."
    assert lines[2].startswith("Test set: 300 videos, the same for every run. Seed-level power: per-seed top-1 varies")
    sd = np.sqrt(np.mean([np.var([correct[a, s].mean() for s in range(3)], ddof=1)
                          for a in ("darts-p3d", "random-p3d", "r3d_18")]))
    assert f"SD {100 * sd:.1f} points" in lines[2]
    assert f"{100 * seed_power(sd, 3, 3):.1f} points (3 vs 3 seeds)" in lines[2]
    assert f"a 5-point difference needs {seeds_needed(sd, 0.05)} seeds per arm" in lines[2]
    assert lines[4] == "Budget: 9 runs of 2 epochs"
    assert "Tiny budget: 2 epochs." in md
    top1 = csv.iloc[0]
    top1_cell = f"{100 * top1.top1_mean:.1f} [{100 * top1.top1_ci_low:.1f}, {100 * top1.top1_ci_high:.1f}]"
    assert f"| darts-p3d | 3 | {top1_cell} | reference | – | – |" in md
    conclusions = md.split("## Conclusions supported by the data\n\n")[1].split("\n\n")[0].splitlines()
    r3d = csv.iloc[2]
    assert conclusions == [
        f"- darts-p3d beats r3d_18 by {-100 * r3d.delta_vs_ref:.1f} points "
        f"(95 % CI {-100 * r3d.delta_ci_high:.1f}–{-100 * r3d.delta_ci_low:.1f}; 3 and 3 seeds), "
        f"p = {report._p(r3d.p_value)}, Holm-adjusted {report._p(r3d.p_holm)}"
    ]
    assert "## These trained networks, video by video" in md and "- random-p3d: p = " in md
    assert paths["plot"].name == "accuracy_vs_params.png" and _png_size(paths["plot"]) == (660, 495)


def test_accuracy_vs_params_figure_draws_each_arm_at_its_mean_with_its_ci():
    results, correct = _ablation_results()
    table = report.ablation_table(results, correct, reference="darts-p3d")
    ax = _only_axes(report.accuracy_vs_params_figure(table))
    assert [str(c.get_label()) for c in ax.containers] == ["darts-p3d", "random-p3d", "r3d_18"]
    for bars, row in zip(ax.containers, table.itertuples(index=False)):
        line, _, (stems,) = bars.lines
        assert np.allclose(line.get_xydata(), [[row.params, 100 * row.top1_mean]])
        ((x_low, low), (x_high, high)), = stems.get_segments()
        assert x_low == x_high == row.params and np.allclose(
            [low, high], [100 * row.top1_ci_low, 100 * row.top1_ci_high]
        )
    assert [t.get_text() for t in ax.texts] == list(table["arm"])  # each marker labelled with its arm
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(table["arm"])
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "top-1 accuracy (%)"
    # the 1-2-5 ticks are labelled as counts (700 k, 1 M, ..., 20 M), not as 10^x powers
    labels = [t.get_text() for t in ax.get_xticklabels() if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert labels and all(label.endswith((" k", " M")) for label in labels), labels


def test_report_says_when_no_arm_differs(tmp_path):
    results, correct = _ablation_results()
    keep = results["arm"] != "r3d_18"
    paths = report.write_ablation_report(results[keep], tmp_path, budget_note="", correct=correct,
                                         reference="random-p3d")
    md = paths["markdown"].read_text()
    assert "No arm differs significantly from random-p3d at α = 0.05 (seed level, Holm)." in md
    assert "beats" not in md
    assert md.startswith("Provenance: not recorded")


def test_per_video_significance_of_these_networks_is_not_a_method_claim(tmp_path):
    # The arm's two seeds land 20 points above and 10 below the reference: the per-video test (seeds held
    # fixed) finds the 5-point mean difference in these networks; across seeds nothing is established.
    rng = np.random.default_rng(1)
    difficulty = rng.random(VIDEOS)
    rows, correct = [], {}
    for arm, shifts in [("ref", [0.0, 0.01]), ("arm", [0.2, -0.1])]:
        for seed, shift in enumerate(shifts):
            c = (difficulty < 0.6 + shift).astype(float)
            correct[arm, seed] = c
            rows.append(dict(arm=arm, seed=seed, top1=c.mean(), top5=1.0, params=1e5, flops=1e8,
                             search_cost_s=0.0, retrain_cost_s=60.0))
    paths = report.write_ablation_report(pd.DataFrame(rows), tmp_path, budget_note="", correct=correct, reference="ref")
    row = pd.read_csv(paths["csv"]).iloc[1]
    assert row["p_networks"] < 0.05 and not row["significant"] and row["delta_ci_low"] < 0 < row["delta_ci_high"]
    md = paths["markdown"].read_text()
    assert "No arm differs significantly from ref at α = 0.05 (seed level, Holm)." in md
    assert "- arm: p = " in md and "(< 0.05)" in md


def _exact_hits(accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """0/1 hits on VIDEOS videos with exactly round(accuracy · VIDEOS) ones, in random places."""
    hits = np.zeros(VIDEOS)
    hits[rng.permutation(VIDEOS)[: round(accuracy * VIDEOS)]] = 1.0
    return hits


def test_holm_decides_significance_across_the_report():
    """Two arms with p ≈ 0.03 each and one with p = 1: each is below 0.05 alone, none after Holm over three."""
    rng = np.random.default_rng(3)
    per_seed = {"ref": [0.50, 0.53, 0.47, 0.50], "a": [0.545, 0.565, 0.525, 0.545], "b": [0.545, 0.565, 0.525, 0.545],
                "c": [0.51, 0.53, 0.47, 0.49]}
    rows, correct = [], {}
    for arm, accuracies in per_seed.items():
        for seed, accuracy in enumerate(accuracies):
            correct[arm, seed] = _exact_hits(accuracy, rng)
            rows.append(dict(arm=arm, seed=seed, top1=correct[arm, seed].mean(), top5=1.0, params=1e5, flops=1e8,
                             search_cost_s=0.0, retrain_cost_s=60.0))
    table = report.ablation_table(pd.DataFrame(rows), correct, reference="ref").set_index("arm")
    assert table.loc["a", "p_value"] < 0.05 and table.loc["b", "p_value"] < 0.05
    # m = 3: the smallest is multiplied by 3, the tied second by 2 but kept monotone (never below the first)
    assert table.loc["a", "p_holm"] == table.loc["b", "p_holm"] == pytest.approx(3 * table.loc["a", "p_value"])
    assert not table["significant"].any()


def test_segments_comparisons_test_segments_against_dense_at_each_k_across_seeds():
    rng = np.random.default_rng(5)
    hits = {}
    for k, gap in ((1, 0.0), (4, 0.25)):
        for seed in range(4):
            hits["dense", k, seed] = _exact_hits(0.5 + rng.normal(0, 0.02), rng)
            hits["segments", k, seed] = _exact_hits(0.5 + gap + rng.normal(0, 0.02), rng)
    table = report.segments_comparisons(hits).set_index("num_segments")
    assert list(table.columns) == list(report.SEGMENTS_COMPARISON_COLUMNS)[1:]
    assert table.loc[4, "significant"] and table.loc[4, "delta"] == pytest.approx(0.25, abs=0.04)
    assert not table.loc[1, "significant"]
    assert table.loc[4, "p_holm"] == pytest.approx(min(1.0, 2 * table.loc[4, "p_value"]))
    one_seed = report.segments_comparisons({key: v for key, v in hits.items() if key[2] == 0})
    assert one_seed["p_value"].isna().all() and not one_seed["significant"].any()


def test_single_seed_arm_has_no_std_and_a_wilson_interval():
    results, correct = _ablation_results(seeds=1)
    table = report.ablation_table(results, correct, reference="darts-p3d")
    assert table["top1_std"].isna().all()
    assert table["p_value"].isna().all() and not table["significant"].any()  # no seed-level test on one seed
    row = table.iloc[0]
    hits = int(correct["darts-p3d", 0].sum())
    wilson = stats.binomtest(hits, VIDEOS).proportion_ci(method="wilson")
    assert (row["top1_ci_low"], row["top1_ci_high"]) == pytest.approx((wilson.low, wilson.high))
    assert "every arm has one seed" in report.power_statement(table, alpha=0.05)


@pytest.mark.parametrize(
    ("b", "tau", "rho"),
    [
        ([1, 2, 3, 4, 5], 1.0, 1.0),  # identical ranking
        ([5, 4, 3, 2, 1], -1.0, -1.0),  # reversed
        ([1, 3, 2, 4, 5], 0.8, 0.9),  # one swapped pair: 9 concordant, 1 discordant; sum d^2 = 2
    ],
)
def test_rank_correlation_hand_made(b, tau, rho):
    corr = report.rank_correlation([1.0, 2.0, 3.0, 4.0, 5.0], b)
    assert corr["kendall_tau"] == pytest.approx(tau)
    assert corr["spearman_rho"] == pytest.approx(rho)
    assert 0.0 <= corr["kendall_p"] <= 1.0 and 0.0 <= corr["spearman_p"] <= 1.0
    # τ from scipy and the bootstrap's τ-b can differ in the last bit at ±1
    assert corr["kendall_ci_low"] - 1e-12 <= corr["kendall_tau"] <= corr["kendall_ci_high"] + 1e-12
    assert corr["n"] == 5


def test_rank_correlation_ci_and_determinism():
    rng = np.random.default_rng(3)
    a = rng.random(30)
    corr = report.rank_correlation(a, a + 0.2 * rng.random(30))
    assert 0.0 < corr["kendall_ci_low"] < corr["kendall_tau"] < corr["kendall_ci_high"] <= 1.0
    assert corr["kendall_p"] < 0.001
    assert report.rank_correlation(a, a + 0.2 * rng.random(30)) != corr
    assert report.rank_correlation(a, a[::-1]) == report.rank_correlation(a, a[::-1])


def test_rank_correlation_of_a_constant_scoring_is_undefined_and_says_so():
    corr = report.rank_correlation([0.25, 0.25, 0.25], [0.1, 0.2, 0.3])
    assert math.isnan(corr["kendall_tau"]) and math.isnan(corr["spearman_rho"])
    assert "undefined" in corr["note"]
    assert report.rank_correlation([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])["note"] == ""


def test_rank_correlation_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        report.rank_correlation([1, 2, 3], [1, 2])


def test_plot_rank_scatter(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random(10)
    b = a + 0.1 * rng.random(10)
    labels = [f"g{i}" for i in range(10)]
    path = report.plot_rank_scatter(a, b, tmp_path / "rank.png", ("supernet", "standalone"), point_labels=labels)
    assert _png_size(path) == (550, 495)  # 5 x 4.5 inches at 110 dpi
    ax = _only_axes(report.rank_scatter_figure(a, b, ("supernet", "standalone"), point_labels=labels))
    (points,) = ax.collections  # one scatter: every (a, b) pair, in order
    assert np.allclose(points.get_offsets(), np.column_stack([a, b]))
    assert [(t.get_text(), *t.xy) for t in ax.texts] == list(zip(labels, a, b))  # each point carries its label
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("supernet", "standalone")
    corr = report.rank_correlation(a, b)
    assert ax.get_title().startswith(f"Kendall τ = {corr['kendall_tau']:.3f} [") and "(n = 10)" in ax.get_title()


def _segment_results() -> pd.DataFrame:
    rows = []
    for mode in ("segments", "dense"):
        for k in (1, 2, 4, 8):
            for seed in range(2):
                rows.append(
                    dict(mode=mode, num_segments=k, frames=2 * k, top1=0.3 + 0.05 * k / 8 + 0.01 * seed, seed=seed)
                )
    return pd.DataFrame(rows)


def test_segments_table_and_plot(tmp_path):
    table = report.segments_table(_segment_results())
    assert list(table.columns) == list(report.SEGMENTS_COLUMNS)
    assert len(table) == 8
    row = table.query("mode == 'dense' and num_segments == 4").iloc[0]
    assert row["frames"] == 8 and row["runs"] == 2
    assert row["top1_mean"] == pytest.approx(0.3 + 0.025 + 0.005)
    assert _png_size(report.plot_segments(_segment_results(), tmp_path / "segments.png")) == (605, 440)
    ax = _only_axes(report.segments_figure(_segment_results()))
    drawn = {str(c.get_label()): c for c in ax.containers}  # one error-bar line per sampling mode
    assert set(drawn) == {"dense", "segments"} and ax.get_legend() is not None
    for mode, bars in drawn.items():
        part = table[table["mode"] == mode].sort_values("num_segments")
        line, _, (stems,) = bars.lines
        assert np.allclose(line.get_xydata(), np.column_stack([part["num_segments"], 100 * part["top1_mean"]]))
        half_widths = [(high - low) / 2 for (_, low), (_, high) in stems.get_segments()]
        assert np.allclose(half_widths, 100 * part["top1_std"])  # ±std bars
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]


def test_summary_table_is_fixed_width():
    rows = [
        dict(trial="t0", lr=0.025, val_acc=0.61234, params=670000, flops=1.2e9, genotype="a1b2c3"),
        dict(trial="trial_long_name", lr=0.1, val_acc=None, params=12, flops=3.4e8, genotype="ffee00"),
    ]
    text = report.summary_table(rows, {"trial": "trial", "lr": "lr", "val_acc": "val acc", "params": "params",
                                       "flops": "FLOPs", "genotype": "genotype"})
    lines = text.splitlines()
    assert lines[0].split() == ["trial", "lr", "val", "acc", "params", "FLOPs", "genotype"]
    assert set(lines[1]) <= {"-", " "}
    assert "670,000" in lines[2] and "0.6123" in lines[2]
    assert lines[3].split()[2] == "-"  # missing val acc
    # numbers right-aligned: the params column ends at the same offset in every data row
    assert lines[2].index("670,000") + len("670,000") == lines[3].index("12") + 2


def test_count_labels_for_log_axes() -> None:
    from autovid.report import _count_label

    assert [_count_label(v) for v in (50, 1500, 20_000, 2e6, 3.5e9)] == ["50", "1.5 k", "20 k", "2 M", "3.5 G"]


def test_operator_agreement_counts_shared_operators_per_node() -> None:
    from autovid.nas.genotype import Genotype
    from autovid.report import operator_agreement

    def g(*ops: str) -> str:
        return Genotype(
            "module", ((ops[0], 0), (ops[1], 0), (ops[2], 1), (ops[3], 0), (ops[4], 2)), (1, 2, 3)
        ).to_json()

    a = g("conv_3", "conv_3", "skip", "sep_conv_3", "conv_1")
    assert operator_agreement([a, a]) == 1.0
    # node 1's two operators swapped between its edges: same multiset, full agreement
    assert operator_agreement([a, g("conv_3", "skip", "conv_3", "sep_conv_3", "conv_1")]) == 1.0
    assert operator_agreement([a, g("conv_1", "conv_3", "skip", "sep_conv_3", "conv_1")]) == 0.8
    assert operator_agreement([a, g("skip", "skip", "skip", "skip", "skip")]) == 0.2
    three = operator_agreement([a, a, g("skip", "skip", "skip", "skip", "skip")])
    assert three == pytest.approx((1.0 + 0.2 + 0.2) / 3)


def test_top_operators_ranks_each_edge() -> None:
    import json

    from autovid.report import top_operators

    alphas = json.dumps({"ops": ["skip", "conv_3", "max_pool_3"], "normal": [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]],
                         "reduce": None})
    assert top_operators(alphas) == [("normal", 0, [("conv_3", 0.5), ("max_pool_3", 0.3)]),
                                     ("normal", 1, [("skip", 0.6), ("max_pool_3", 0.3)])]
