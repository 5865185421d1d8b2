"""Tests for the pure reporting module: tables, rank correlation, plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autovid import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _ablation_results() -> pd.DataFrame:
    rows = []
    for arm, top1, params, search in [("darts-p3d", 0.60, 6.7e5, 3600.0), ("random-p3d", 0.55, 7.0e5, 3600.0), ("r3d_18", 0.42, 3.3e7, 0.0)]:
        for seed in range(3):
            rows.append(
                dict(arm=arm, seed=seed, top1=top1 + 0.01 * seed, top5=min(1.0, top1 + 0.3), params=params,
                     flops=1e9, search_cost_s=search, retrain_cost_s=1800.0 + seed)
            )
    return pd.DataFrame(rows)


def test_ablation_table_one_row_per_arm():
    table = report.ablation_table(_ablation_results())
    assert list(table.columns) == list(report.ABLATION_COLUMNS)
    assert list(table["arm"]) == ["darts-p3d", "random-p3d", "r3d_18"]  # first-appearance order
    darts = table.iloc[0]
    assert darts["top1_mean"] == pytest.approx(0.61)
    assert darts["top1_std"] == pytest.approx(0.01)
    assert darts["search_cost_h"] == pytest.approx(1.0)
    assert darts["retrain_cost_h"] == pytest.approx(1801.0 / 3600)
    assert darts["seeds"] == 3


def test_ablation_table_rejects_missing_columns_and_percentages():
    with pytest.raises(ValueError, match="flops"):
        report.ablation_table(_ablation_results().drop(columns="flops"))
    percent = _ablation_results().assign(top1=lambda d: d["top1"] * 100)
    with pytest.raises(ValueError, match="fractions"):
        report.ablation_table(percent)


def test_write_ablation_report(tmp_path):
    paths = report.write_ablation_report(_ablation_results(), tmp_path / "out", budget_note="Tiny budget: 2 epochs.")
    assert set(paths) == {"markdown", "csv", "plot"}
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == list(report.ABLATION_COLUMNS)
    assert len(csv) == 3
    md = paths["markdown"].read_text()
    assert "| darts-p3d | 61.0 ± 1.0 |" in md
    assert "Tiny budget: 2 epochs." in md
    assert paths["plot"].name == "accuracy_vs_params.png" and _is_png(paths["plot"])


def test_single_seed_arm_has_no_std():
    results = _ablation_results().query("seed == 0")
    table = report.ablation_table(results)
    assert table["top1_std"].isna().all()
    assert "± n/a" in report._ablation_markdown(table)


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
    assert corr["n"] == 5


def test_rank_correlation_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        report.rank_correlation([1, 2, 3], [1, 2])


def test_plot_rank_scatter(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random(10)
    path = report.plot_rank_scatter(a, a + 0.1 * rng.random(10), tmp_path / "rank.png", ("supernet", "standalone"),
                                    point_labels=[f"g{i}" for i in range(10)])
    assert _is_png(path)


def _segment_results() -> pd.DataFrame:
    rows = []
    for mode in ("segments", "dense"):
        for k in (1, 2, 4, 8):
            for seed in range(2):
                rows.append(dict(mode=mode, num_segments=k, frames=2 * k, top1=0.3 + 0.05 * k / 8 + 0.01 * seed, seed=seed))
    return pd.DataFrame(rows)


def test_segments_table_and_plot(tmp_path):
    table = report.segments_table(_segment_results())
    assert list(table.columns) == list(report.SEGMENTS_COLUMNS)
    assert len(table) == 8
    row = table.query("mode == 'dense' and num_segments == 4").iloc[0]
    assert row["frames"] == 8 and row["runs"] == 2
    assert row["top1_mean"] == pytest.approx(0.3 + 0.025 + 0.005)
    assert _is_png(report.plot_segments(_segment_results(), tmp_path / "segments.png"))


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


def test_alpha_heatmap_2d_and_history(tmp_path):
    ops = ["zero", "skip", "conv_3", "max_pool_3"]
    rng = np.random.default_rng(0)
    alphas = rng.dirichlet(np.ones(len(ops)), size=6)  # [edges, ops]
    assert _is_png(report.alpha_heatmap(alphas, ops, tmp_path / "alphas.png"))
    history = rng.dirichlet(np.ones(len(ops)), size=(5, 6))  # [epochs, edges, ops]
    assert _is_png(report.alpha_heatmap(history, ops, tmp_path / "history.png"))
    with pytest.raises(ValueError):
        report.alpha_heatmap(alphas, ops[:3], tmp_path / "bad.png")


def test_count_labels_for_log_axes() -> None:
    from autovid.report import _count_label

    assert [_count_label(v) for v in (50, 1500, 20_000, 2e6, 3.5e9)] == ["50", "1.5 k", "20 k", "2 M", "3.5 G"]
