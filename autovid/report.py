"""Ablation, ranking and segment-sweep reports: tables with confidence statistics, and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from scipy import stats

from autovid.files import write_csv_atomic, write_text_atomic
from autovid.stats import accuracy_ci, compare_arms, holm, kendall_tau_ci, seed_power, seeds_needed

__all__ = [
    "ABLATION_COLUMNS",
    "ABLATION_INPUT_COLUMNS",
    "Correctness",
    "SEEDS_COLUMNS",
    "SEGMENTS_COLUMNS",
    "SEGMENTS_COMPARISON_COLUMNS",
    "SEGMENTS_INPUT_COLUMNS",
    "ablation_table",
    "accuracy_vs_params_figure",
    "plot_accuracy_vs_params",
    "plot_rank_scatter",
    "plot_segments",
    "power_statement",
    "provenance_line",
    "rank_correlation",
    "rank_scatter_figure",
    "seeds_table",
    "segments_comparisons",
    "segments_figure",
    "segments_table",
    "operator_agreement",
    "summary_table",
    "top_operators",
    "null_control_markdown",
    "versus_random_markdown",
    "write_ablation_report",
]

log = logging.getLogger(__name__)

# One row per (arm, seed): accuracies are fractions in [0, 1]; costs are measured CPU-seconds.
ABLATION_INPUT_COLUMNS = ("arm", "seed", "top1", "top5", "params", "flops", "search_cost_s", "retrain_cost_s")
# One row per arm: top-1 over seeds with its seed-level CI, the comparison with the reference arm at the seed level
# (Δ = arm − reference, as fractions; Welch across seeds, Holm-adjusted over the report's comparisons), the
# per-video test on these trained networks (p_networks, not a method comparison), size, and costs in CPU-seconds
# per seed (the mean over seeds).
ABLATION_COLUMNS = (
    "arm", "seeds", "test_videos", "top1_mean", "top1_ci_low", "top1_ci_high",
    "delta_vs_ref", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "significant", "p_networks",
    "params", "flops", "search_cpu_s", "top5_mean", "retrain_cpu_s", "top1_std",
)
SEEDS_COLUMNS = ("arm", "seed", "top1", "test_videos")
SEGMENTS_INPUT_COLUMNS = ("mode", "num_segments", "frames", "top1")
SEGMENTS_COLUMNS = ("mode", "num_segments", "frames", "top1_mean", "top1_std", "runs")

CONFIDENCE = 0.95
POWER = 0.8  # the power at which reports state the minimum detectable difference
TARGET_DIFFERENCE = 0.05  # reports say how many seeds per arm a difference of this size (5 points) needs

Correctness = Mapping[tuple[str, int], np.ndarray]
"""Per-test-video 0/1 correctness of each (arm, seed), the same video order for every key."""


# --------------------------------------------------------------------------------------------- ablation


def ablation_table(
    results: pd.DataFrame,
    correct: Correctness,
    *,
    reference: str,
    alpha: float = 0.05,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """One row per arm (first-appearance order) with ``ABLATION_COLUMNS``.

    The unit of replication is the seed (an independent search and retrain): top-1 and its CI are over the
    per-seed accuracies (``stats.accuracy_ci``: t interval, Wilson for one seed); Δ, its CI and ``p_value`` compare
    each arm with ``reference`` across seeds (``stats.compare_arms``, Welch); ``p_holm`` adjusts the p-values of
    all the table's comparisons (Holm) and ``significant`` is ``p_holm < alpha``. ``p_networks`` is the per-video
    test of these trained networks, kept as such. The reference row has Δ = 0 and NaN tests. ``top1_std`` is the
    sample SD of per-seed accuracy (NaN for one seed); ``params``, ``flops`` and the costs are means over seeds.
    """
    _require_columns(results, ABLATION_INPUT_COLUMNS, "ablation results")
    _check_fractions(results, ("top1", "top5"))
    results = results.assign(arm=results["arm"].astype(str))
    arms = list(dict.fromkeys(results["arm"]))
    if reference not in arms:
        raise ValueError(f"reference arm {reference!r} is not in the ablation results; arms: {', '.join(arms)}")
    matrices = _correctness_by_arm(results, correct)
    rng = np.random.default_rng(0) if rng is None else rng
    no_comparison = {"delta": 0.0, "delta_ci_low": math.nan, "delta_ci_high": math.nan, "p_value": math.nan,
                     "p_networks": math.nan}
    rows = []
    for arm, part in results.groupby("arm", sort=False):
        c = matrices[arm]
        top1 = accuracy_ci(c, confidence=CONFIDENCE)
        cmp = no_comparison if arm == reference else compare_arms(c, matrices[reference], alpha=1 - CONFIDENCE, rng=rng)
        rows.append({
            "arm": arm, "seeds": c.shape[0], "test_videos": c.shape[1],
            "top1_mean": top1.mean, "top1_ci_low": top1.low, "top1_ci_high": top1.high,
            "delta_vs_ref": cmp["delta"], "delta_ci_low": cmp["delta_ci_low"], "delta_ci_high": cmp["delta_ci_high"],
            "p_value": cmp["p_value"], "p_networks": cmp["p_networks"],
            "params": part["params"].mean(), "flops": part["flops"].mean(),
            "search_cpu_s": part["search_cost_s"].mean(), "top5_mean": part["top5"].mean(),
            "retrain_cpu_s": part["retrain_cost_s"].mean(),
            "top1_std": float(np.std(c.mean(axis=1), ddof=1)) if c.shape[0] > 1 else math.nan,
        })
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["significant"] = table["p_holm"] < alpha  # NaN (no seed-level test) compares False
    return table[list(ABLATION_COLUMNS)]


def seeds_table(results: pd.DataFrame, correct: Correctness) -> pd.DataFrame:
    """``SEEDS_COLUMNS``: one row per (arm, seed), the observations every method comparison rests on."""
    matrices = _correctness_by_arm(results.assign(arm=results["arm"].astype(str)), correct)
    rows = []
    for arm, c in matrices.items():
        seeds = [int(s) for s in results.loc[results["arm"].astype(str) == arm, "seed"]]
        rows += [{"arm": arm, "seed": seed, "top1": float(hits.mean()), "test_videos": len(hits)}
                 for seed, hits in zip(dict.fromkeys(seeds), c)]
    return pd.DataFrame(rows, columns=list(SEEDS_COLUMNS))


def power_statement(table: pd.DataFrame, *, alpha: float) -> str:
    """What the seeds run can detect: the pooled per-seed SD, the minimum detectable difference of each
    comparison's seed counts (two-sided level ``alpha`` at 80 % power), and the seeds a 5-point difference needs.

    ``table`` needs ``seeds`` and ``top1_std`` per row (the first row is compared with; the reference's count is
    taken from the row whose Δ is 0 and has no test)."""
    with_sd = table.dropna(subset=["top1_std"])
    if with_sd.empty:
        return ("Seed-level power: unknown (every arm has one seed, so seed-to-seed variation is not measured; "
                "run at least 2 seeds per arm, 5 for a useful test).")
    df = with_sd["seeds"] - 1
    sd = float(np.sqrt((df * with_sd["top1_std"] ** 2).sum() / df.sum()))
    counts = sorted({int(n) for n in table["seeds"]})
    n_small, n_large = counts[0], counts[-1]
    mdd_small = seed_power(sd, n_small, n_small, alpha=alpha, power=POWER)
    needed = seeds_needed(sd, TARGET_DIFFERENCE, alpha=alpha, power=POWER)
    span = (f"{100 * mdd_small:.1f} points ({n_small} vs {n_small} seeds)" if n_small == n_large else
            f"{100 * mdd_small:.1f} points ({n_small} vs {n_small} seeds) to "
            f"{100 * seed_power(sd, n_large, n_large, alpha=alpha, power=POWER):.1f} points ({n_large} vs {n_large})")
    need = (f"{needed} seeds per arm" if needed is not None else "more than 1000 seeds per arm")
    return (
        f"Seed-level power: per-seed top-1 varies with SD {100 * sd:.1f} points (pooled over arms); at α = {alpha:g} "
        f"and power {POWER:g} a comparison detects a difference of {span} before the Holm correction; "
        f"a {100 * TARGET_DIFFERENCE:.0f}-point difference needs {need}."
    )


def write_ablation_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    *,
    budget_note: str,
    correct: Correctness,
    reference: str = "darts-p3d",
    alpha: float = 0.05,
    budget: str = "",
    provenance: Mapping[str, str] | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` (``ablation_table``), ``seeds.csv`` (``seeds_table``) and
    ``accuracy_vs_params.png`` into ``out_dir``.

    report.md opens with the provenance (commit, config and manifest hashes) and the seed-level power, then the
    budget (``budget``, one line, if given; the measured compute; ``budget_note``), the table with seed-level
    CIs and Holm-adjusted comparisons against ``reference``, the conclusions the data support, and the per-video
    tests of these trained networks. Returns ``{"markdown", "csv", "seeds", "plot"}`` paths.
    """
    table = ablation_table(results, correct, reference=reference, alpha=alpha, rng=rng)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "seeds": out / "seeds.csv",
             "plot": out / "accuracy_vs_params.png"}
    write_csv_atomic(table, paths["csv"])
    write_csv_atomic(seeds_table(results, correct), paths["seeds"])
    n_videos = int(table["test_videos"].iloc[0])
    budget_lines = [f"Budget: {budget.strip()}"] if budget.strip() else []
    budget_lines.append(
        f"Measured compute: {results['search_cost_s'].sum() / 3600:.2f} CPU-hours of search and "
        f"{results['retrain_cost_s'].sum() / 3600:.2f} CPU-hours of retraining over {len(results)} runs (arm × seed)."
    )
    write_text_atomic(
        paths["markdown"],
        provenance_line(provenance) + "\n\n"
        + f"Test set: {n_videos} videos, the same for every run. " + power_statement(table, alpha=alpha) + "\n\n"
        + "\n".join(budget_lines) + "\n\n" + budget_note.strip() + "\n\n"
        + "## Results\n\n" + _ablation_markdown(table, reference) + "\n\n"
        + _method_note(reference, alpha, comparisons=int(table["p_value"].notna().sum())) + "\n\n"
        + "## Conclusions supported by the data\n\n" + _conclusions(table, reference, alpha) + "\n\n"
        + "## These trained networks, video by video\n\n" + _networks_note(table, reference, alpha) + "\n\n"
        + "![top-1 vs parameters](accuracy_vs_params.png)\n"
    )
    plot_accuracy_vs_params(table, paths["plot"])
    log.info("ablation report written to %s", out)
    return paths


def provenance_line(provenance: Mapping[str, str] | None) -> str:
    """``Provenance: commit …, config …, manifest ….`` (what produced a report's figures), or a warning."""
    if not provenance:
        return "Provenance: not recorded (the figures below cannot be traced to a commit, config and data)."
    return "Provenance: " + ", ".join(f"{k} {v}" for k, v in provenance.items()) + "."


def plot_accuracy_vs_params(table: pd.DataFrame, path: str | Path) -> Path:
    """Writes :func:`accuracy_vs_params_figure` to ``path`` (PNG)."""
    return _save(accuracy_vs_params_figure(table), path)


def accuracy_vs_params_figure(table: pd.DataFrame) -> Figure:
    """Top-1 (percent) against parameters (log x) with 95 % CI error bars, one labelled marker per arm."""
    _require_columns(table, ("arm", "top1_mean", "top1_ci_low", "top1_ci_high", "params"), "ablation table")
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    markers = "osD^vP*Xph<>"
    for i, row in enumerate(table.itertuples(index=False)):
        yerr = [[100 * (row.top1_mean - row.top1_ci_low)], [100 * (row.top1_ci_high - row.top1_mean)]]
        ax.errorbar(
            row.params,
            100 * row.top1_mean,
            yerr=yerr,
            fmt=markers[i % len(markers)],
            capsize=4,
            markersize=7,
            label=row.arm,
        )
        ax.annotate(
            str(row.arm), (row.params, 100 * row.top1_mean), textcoords="offset points", xytext=(6, 6), fontsize=8
        )
    if (table["params"] > 0).all():
        ax.set_xscale("log")
        # ticks at 1-2-5 per decade, labelled 20 k / 1.5 M: matplotlib's default labels every minor tick of a
        # span under two decades as 2×10^4, 3×10^4, ..., which overlap into a smear
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_count_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs parameters (mean, 95 % CI over seeds and videos)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _count_label(value: float, _position: int | None = None) -> str:
    """1500 -> '1.5 k', 2e6 -> '2 M' (axis labels for parameter and FLOP counts)."""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _correctness_by_arm(results: pd.DataFrame, correct: Correctness) -> dict[str, np.ndarray]:
    """arm -> [seeds, videos] correctness, stacked in the results' seed order; checks keys and lengths."""
    vectors = {(str(arm), int(seed)): np.asarray(v, dtype=float) for (arm, seed), v in correct.items()}
    keys = list(dict.fromkeys(zip(results["arm"], results["seed"].astype(int))))
    missing = [f"{arm} seed {seed}" for arm, seed in keys if (arm, seed) not in vectors]
    if missing:
        raise ValueError(f"no per-video correctness for {', '.join(missing)}")
    lengths = {vectors[k].shape for k in keys}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(
            f"correctness vectors must be 1-D and of one length (the same test videos), got {sorted(lengths)}"
        )
    for (arm, seed), top1 in zip(zip(results["arm"], results["seed"].astype(int)), results["top1"]):
        # test/acc and the correctness vector come from the same evaluation; a mismatch means mixed-up keys
        if not pd.isna(top1) and abs(vectors[arm, seed].mean() - top1) > 1e-6:
            log.warning("%s seed %d: top1 %.4f differs from its per-video correctness mean %.4f",
                        arm, seed, top1, vectors[arm, seed].mean())
    by_arm: dict[str, list[np.ndarray]] = {}
    for arm, seed in keys:
        by_arm.setdefault(arm, []).append(vectors[arm, seed])
    return {arm: np.stack(rows) for arm, rows in by_arm.items()}


def _ablation_markdown(table: pd.DataFrame, reference: str) -> str:
    header = ["arm", "seeds", "top-1 % [95 % CI]", f"Δ vs {reference}, points [95 % CI]", "p", "p (Holm)", "params",
              "FLOPs / clip", "search (CPU-h / seed)", "retrain (CPU-h / seed)"]
    rows = []
    for r in table.itertuples(index=False):
        is_ref = r.arm == reference
        tested = not is_ref and not math.isnan(r.p_value)
        rows.append(
            [
                str(r.arm),
                str(r.seeds),
                f"{100 * r.top1_mean:.1f} [{100 * r.top1_ci_low:.1f}, {100 * r.top1_ci_high:.1f}]",
                "reference" if is_ref else f"{100 * r.delta_vs_ref:+.1f} " + (
                    f"[{100 * r.delta_ci_low:+.1f}, {100 * r.delta_ci_high:+.1f}]" if tested else "[needs 2+ seeds]"),
                _p(r.p_value) if tested else "–",
                (_p(r.p_holm) + (" *" if r.significant else "")) if tested else "–",
                _human(r.params),
                _human(r.flops),
                f"{r.search_cpu_s / 3600:.3f}",
                f"{r.retrain_cpu_s / 3600:.3f}",
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _method_note(reference: str, alpha: float, *, comparisons: int) -> str:
    return (
        "Each seed is one independent search and retrain, the unit of replication. Top-1: mean of the per-seed "
        "accuracies, 95 % t interval over seeds (Wilson interval over videos for a single run). "
        f"Δ: arm − {reference}, 95 % CI and p from Welch's t-test across seeds (seeds are not paired between arms). "
        f"p (Holm): adjusted over the {comparisons} comparisons of this report; * marks p (Holm) < {alpha:g}. "
        "Per-seed accuracies: seeds.csv. Costs: measured CPU-hours per seed."
    )


def _conclusions(table: pd.DataFrame, reference: str, alpha: float) -> str:
    """One line per arm that differs from the reference at the seed level after the Holm correction."""
    supported = []
    for r in table.itertuples(index=False):
        if r.arm == reference or not r.significant:
            continue
        # state the winner first, so the difference and its CI read as positive points
        winner, loser, sign = (r.arm, reference, 1) if r.delta_vs_ref > 0 else (reference, r.arm, -1)
        low, high = sorted((sign * r.delta_ci_low, sign * r.delta_ci_high))
        supported.append(f"- {winner} beats {loser} by {100 * abs(r.delta_vs_ref):.1f} points "
                         f"(95 % CI {100 * low:.1f}–{100 * high:.1f}; {r.seeds} and "
                         f"{int(table.loc[table['arm'] == reference, 'seeds'].iloc[0])} seeds), "
                         f"p = {_p(r.p_value)}, Holm-adjusted {_p(r.p_holm)}")
    if not supported:
        untested = [str(r.arm) for r in table.itertuples(index=False) if r.arm != reference and math.isnan(r.p_value)]
        supported = [f"No arm differs significantly from {reference} at α = {alpha:g} (seed level, Holm)."]
        if untested:
            supported.append(f"Not tested (fewer than 2 seeds, or no seed-to-seed variation): {', '.join(untested)}.")
    return "\n".join(supported)


def _networks_note(table: pd.DataFrame, reference: str, alpha: float) -> str:
    """The per-video sign-flip test of each arm's trained networks against the reference's: labelled as what it
    is, a statement about these networks (another draw of seeds need not reproduce it), never the method answer."""
    lines = [f"Whether these particular trained networks differ from {reference}'s on these videos (per-video "
             "sign-flip test of seed-averaged correctness; it holds the seeds fixed, so it says nothing about the "
             "methods):"]
    for r in table.itertuples(index=False):
        if r.arm != reference:
            lines.append(f"- {r.arm}: p = {_p(r.p_networks)}" + (f" (< {alpha:g})" if r.p_networks < alpha else ""))
    return "\n".join(lines)


def _p(p: float) -> str:
    # 1 / (10 000 + 1), the smallest permutation p-value, reads as 0.0001; smaller ones would round to 0
    return "< 0.0001" if p < 0.00005 else f"{p:.4f}" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------- versus random


def versus_random_markdown(result: Mapping[str, Any]) -> str:
    """vs_random.md: the searched method against random genotypes of its space, with the genotype's share of
    variance (ICC) and the spatial control against chance (``ablation.versus_random_stats`` plus provenance)."""
    icc, st = result["icc"], result["standing"]
    searched = ", ".join(f"{100 * a:.1f}" for a in result["searched_top1"])
    lines = [
        provenance_line(result.get("provenance")),
        "",
        f"Searched: {result['seeds']} seed(s), each its own search and retrain: top-1 {searched} % "
        f"(genotypes {', '.join(dict.fromkeys(result['searched']))}).",
        f"Random: {result['random_samples']} uniform genotypes, each retrained under every seed: mean top-1 "
        f"{100 * result['random_top1_mean']:.1f} %.",
        f"Genotype share of variance among the random genotypes (one-way ICC over seeds): {_icc(icc)}.",
        f"Searched standing: percentile {st['percentile']:.0f} of the random genotypes' means "
        f"(95 % CI {st['percentile_ci_low']:.0f}–{st['percentile_ci_high']:.0f}); Δ vs their mean "
        f"{100 * st['delta']:+.1f} points"
        + (
            f" (95 % CI {100 * st['delta_ci_low']:+.1f} to {100 * st['delta_ci_high']:+.1f}, Welch p = "
            f"{_p(st['p_value'])})"
            if not math.isnan(st["p_value"])
            else " (no seed-level test: needs 2+ seeds)"
        )
        + ".",
        f"Spatial control (conv_1 on every edge, no frame mixing in the cell): top-1 "
        f"{100 * result['control_top1']:.1f} % against chance {100 * result['chance']:.1f} %.",
    ]
    return "\n".join(lines) + "\n"


def null_control_markdown(result: Mapping[str, Any]) -> str:
    """null_control.md: the real searches beside the same searches on shuffled labels
    (``ablation.null_control_stats`` plus provenance)."""
    def line(labels: str, title: str) -> str:
        r = result[labels]
        entropy = ", ".join(f"{h:.2f}" for h in r["entropy"])
        accuracy = ", ".join(f"{100 * a:.1f}" for a in r["val_acc"])
        return (f"- {title}: operator agreement between seeds {100 * r['agreement']:.0f} %; final α entropy "
                f"{entropy} · ln #ops; α-half top-1 {accuracy} %; genotypes {', '.join(r['genotypes'])}")

    separate = "lies below every null one" if result["entropies_separate"] else "does not lie below every null one"
    return "\n".join([
        provenance_line(result.get("provenance")),
        "",
        f"{result['seeds']} seeds, each searched on the true labels and on labels permuted across the train videos "
        "(search.shuffle_labels, a fixed permutation per seed):",
        line("true", "true labels"),
        line("shuffled", "shuffled labels (null)"),
        f"Agreement gain over the null: {100 * result['agreement_gain']:+.0f} points. Every real final α entropy "
        f"{separate}.",
    ]) + "\n"


def _icc(icc: Mapping[str, float]) -> str:
    if math.isnan(icc["icc"]):
        return "not measured (needs 2+ seeds)"
    ci = "" if math.isnan(icc["ci_low"]) else f" (95 % CI {icc['ci_low']:.2f}–{icc['ci_high']:.2f})"
    return f"{icc['icc']:.2f}{ci}, F-test p = {_p(icc['p_value'])}"


# --------------------------------------------------------------------------------------------- ranking


def rank_correlation(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2_000,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Kendall τ (with its 95 % bootstrap CI) and Spearman ρ, with two-sided p-values, between two scorings.

    Returns ``{"kendall_tau", "kendall_p", "kendall_ci_low", "kendall_ci_high", "spearman_rho", "spearman_p",
    "n", "note"}``; NaN (and a note saying why) where a scoring is constant (the CI also where too few resamples
    are usable, see ``autovid.stats.kendall_tau_ci``). Deterministic: ``rng`` defaults to ``np.random.default_rng(0)``.
    """
    tau = kendall_tau_ci(np.asarray(a, dtype=float), np.asarray(b, dtype=float), confidence=CONFIDENCE,
                         n_boot=n_boot, rng=rng)
    rho = stats.spearmanr(a, b)
    return {
        "kendall_tau": tau["tau"],
        "kendall_p": tau["p_value"],
        "kendall_ci_low": tau["ci_low"],
        "kendall_ci_high": tau["ci_high"],
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "n": int(len(a)),
        "note": ("correlation undefined: one side scored every genotype the same (raise the budget)"
                 if len(set(a)) < 2 or len(set(b)) < 2 else ""),
    }


def plot_rank_scatter(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    path: str | Path,
    labels: tuple[str, str] = ("weight-sharing score", "standalone accuracy"),
    *,
    point_labels: Sequence[str] | None = None,
) -> Path:
    """Writes :func:`rank_scatter_figure` to ``path`` (PNG)."""
    return _save(rank_scatter_figure(a, b, labels, point_labels=point_labels), path)


def rank_scatter_figure(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    labels: tuple[str, str] = ("weight-sharing score", "standalone accuracy"),
    *,
    point_labels: Sequence[str] | None = None,
) -> Figure:
    """Scatter of scoring ``a`` (x, axis label ``labels[0]``) against ``b`` (y, ``labels[1]``).

    The title gives Kendall τ with its 95 % bootstrap CI, and Spearman ρ.

    ``point_labels`` (e.g. genotype hashes) annotate the points.
    """
    corr = rank_correlation(a, b)
    fig = _figure(5.0, 4.5)
    ax = fig.add_subplot()
    ax.scatter(a, b, s=28, alpha=0.8)
    if point_labels is not None:
        for x, y, text in zip(a, b, point_labels):
            ax.annotate(str(text), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(
        f"Kendall τ = {corr['kendall_tau']:.3f} [{corr['kendall_ci_low']:.2f}, {corr['kendall_ci_high']:.2f}], "
        f"Spearman ρ = {corr['spearman_rho']:.3f} (n = {corr['n']})"
    )
    ax.grid(True, alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------- segments


def segments_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, num_segments) of the segments-vs-dense sweep: top-1 mean/std over runs.

    Input rows: ``mode`` ("segments"|"dense"), ``num_segments``, ``frames`` (total frames seen), ``top1``.
    """
    _require_columns(results, SEGMENTS_INPUT_COLUMNS, "segment sweep results")
    _check_fractions(results, ("top1",))
    grouped = results.groupby(["mode", "num_segments"], sort=True)
    table = pd.DataFrame(
        {
            "frames": grouped["frames"].first(),
            "top1_mean": grouped["top1"].mean(),
            "top1_std": grouped["top1"].std(ddof=1),
            "runs": grouped["top1"].size(),
        }
    )
    return table.reset_index()[list(SEGMENTS_COLUMNS)]


SEGMENTS_COMPARISON_COLUMNS = ("num_segments", "seeds", "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm",
                               "significant")


def segments_comparisons(hits: Mapping[tuple[str, int, int], np.ndarray], *, alpha: float = 0.05) -> pd.DataFrame:
    """Segments vs dense at each K, across seeds: Δ = segments − dense top-1 (``stats.compare_arms``, Welch over
    seeds; NaN with one seed), Holm-adjusted over the Ks. ``hits`` maps (mode, K, seed) to per-video 0/1 hits."""
    rows = []
    for k in sorted({k for _, k, _ in hits}):
        arms = {mode: np.stack([h for (m, kk, _), h in sorted(hits.items()) if m == mode and kk == k])
                for mode in ("segments", "dense") if any(m == mode and kk == k for m, kk, _ in hits)}
        if len(arms) < 2:
            continue
        cmp = compare_arms(arms["segments"], arms["dense"], alpha=alpha)
        rows.append({"num_segments": k, "seeds": min(len(a) for a in arms.values()), **{
            key: cmp[key] for key in ("delta", "delta_ci_low", "delta_ci_high", "p_value")}})
    table = pd.DataFrame(rows, columns=[c for c in SEGMENTS_COMPARISON_COLUMNS if c not in ("p_holm", "significant")])
    table["p_holm"] = holm(table["p_value"].to_numpy()) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    return table[list(SEGMENTS_COMPARISON_COLUMNS)]


def plot_segments(results: pd.DataFrame, path: str | Path) -> Path:
    """Writes :func:`segments_figure` to ``path`` (PNG)."""
    return _save(segments_figure(results), path)


def segments_figure(results: pd.DataFrame) -> Figure:
    """Top-1 (percent) against the number of segments (log2 x), one line per sampling mode, ±std bars."""
    table = segments_table(results)
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    styles = ("o-", "s--", "D:", "^-.")  # distinct markers and lines, so overlapping modes stay visible
    for i, (mode, part) in enumerate(table.groupby("mode", sort=True)):
        std = 100 * part["top1_std"].fillna(0.0)
        ax.errorbar(
            part["num_segments"],
            100 * part["top1_mean"],
            yerr=std,
            fmt=styles[i % len(styles)],
            capsize=4,
            label=str(mode),
        )
    ks = sorted(table["num_segments"].unique())
    if ks and min(ks) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("segments K (dense: one clip of the same total frames)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("TSN segments vs one dense clip")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


# --------------------------------------------------------------------------------------------- CLI table


def summary_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | Mapping[str, str]) -> str:
    """A plain-text fixed-width table of ``rows`` for the terminal.

    ``columns`` lists the keys to show, or maps key -> header. Numbers are right-aligned (floats to 4
    significant digits, integers with thousands separators), text left-aligned; a missing value is "-".
    """
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    keys = list(headers)
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    numeric = [all(_is_number(row.get(k)) or row.get(k) is None for row in rows) and bool(rows) for k in keys]
    widths = [max([len(headers[k])] + [len(r[i]) for r in cells]) for i, k in enumerate(keys)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line([headers[k] for k in keys]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


# --------------------------------------------------------------------------------------------- helpers


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {', '.join(missing)}; need {', '.join(columns)}")
    if df.empty:
        raise ValueError(f"{what} are empty")


def _check_fractions(df: pd.DataFrame, columns: Sequence[str]) -> None:
    # Accuracies are fractions everywhere (as `evaluate` returns them); a percent slipping in would
    # silently print 5000 %, so refuse it.
    for c in columns:
        values = df[c].dropna()
        if ((values < 0) | (values > 1)).any():
            raise ValueError(f"column {c!r} must hold fractions in [0, 1], got values up to {values.max()}")


def _human(n: float) -> str:
    if pd.isna(n):
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _figure(w: float, h: float) -> Figure:
    # A bare Figure on the Agg canvas: no pyplot state, no global backend switch, safe in worker threads.
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path


def top_operators(alphas_json: str, k: int = 2) -> list[tuple[str, int, list[tuple[str, float]]]]:
    """Per (cell, edge): its ``k`` heaviest operators with their softmax(α) weights, heaviest first."""
    alphas = json.loads(alphas_json)
    ops = list(alphas["ops"])
    out = []
    for cell in ("normal", "reduce"):
        for edge, weights in enumerate(alphas.get(cell) or []):
            ranked = sorted(zip(ops, map(float, weights)), key=lambda pair: -pair[1])
            out.append((cell, edge, ranked[:k]))
    return out


def operator_agreement(genotypes: Sequence[str]) -> float:
    """Mean pairwise agreement of genotypes (JSON) on their operators: per node, the size of the shared
    multiset of incoming-edge operators, summed and divided by the number of edges (1 = same operators)."""
    from collections import Counter
    from itertools import combinations

    from autovid.nas.genotype import Genotype

    def nodes(genotype: Genotype) -> list[Counter]:
        return [Counter(op for op, _ in node) for cell in genotype.cell_types for node in genotype.nodes(cell)]

    parsed = [nodes(Genotype.from_json(g)) for g in genotypes]
    if len(parsed) < 2:
        raise ValueError("operator agreement needs at least two genotypes")
    scores = []
    for a, b in combinations(parsed, 2):
        shared = sum(sum((x & y).values()) for x, y in zip(a, b, strict=True))
        scores.append(shared / sum(sum(x.values()) for x in a))
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------- Pareto front


def pareto_figure(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]], *, label: str = "trial") -> Figure:
    """Every trial as a grey point and the Pareto front highlighted, one panel per pair of objectives.

    Front members are labelled by their `label` column and joined by a staircase in panels of two objectives
    (for three or more, a member of the front may look dominated in a single 2-D projection)."""
    from itertools import combinations

    from autovid.pareto import feasible_rows, pareto_mask

    if len(objectives) < 2:
        raise ValueError("a Pareto plot needs two or more objectives")
    values = frame[[m for m, _ in objectives]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float) \
        if len(frame) else np.empty((0, len(objectives)))
    feasible = feasible_rows(frame)
    on_front = pareto_mask(values, [mode for _, mode in objectives], feasible)
    pairs = list(combinations(range(len(objectives)), 2))
    cols = min(len(pairs), 3)
    rows = -(-len(pairs) // cols)
    fig = _figure(4.6 * cols, 3.8 * rows)
    labels = frame[label].astype(str).tolist() if label in frame else [str(i) for i in range(len(frame))]
    for n, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, n + 1)
        (xm, xmode), (ym, ymode) = objectives[i], objectives[j]
        dominated = ~on_front & feasible
        ax.scatter(values[dominated, i], values[dominated, j], color="0.6", s=22, label="dominated")
        if not feasible.all():  # broke a constraint of the study: never on the front
            ax.scatter(values[~feasible, i], values[~feasible, j], color="0.6", marker="x", s=22, label="infeasible")
        ax.scatter(values[on_front, i], values[on_front, j], color="C3", s=34, zorder=3, label="Pareto front")
        for k in np.flatnonzero(on_front):
            ax.annotate(labels[k], (values[k, i], values[k, j]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if len(objectives) == 2 and on_front.sum() > 1:
            # the edge of the dominated region: between two members (sorted by x), the level is that of the one
            # whose x is better, i.e. the right one when x is maximised ("pre") and the left one otherwise
            order = np.argsort(values[on_front, i])
            ax.step(values[on_front, i][order], values[on_front, j][order], where="pre" if xmode == "max" else "post",
                    color="C3", lw=1, alpha=0.6)
        ax.set_xlabel(f"{xm} ({xmode})")
        ax.set_ylabel(f"{ym} ({ymode})")
        for axis, metric in ((ax.xaxis, xm), (ax.yaxis, ym)):
            if metric.endswith(("params", "flops")):  # 80 M rather than an offset "1e8" over the axis
                axis.set_major_formatter(FuncFormatter(_count_label))
        ax.grid(True, alpha=0.3)
        if n == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Pareto front: {int(on_front.sum())} of {len(frame)} trials")
    return fig


def write_pareto(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]], out_dir: str | Path) -> tuple[Path, Path]:
    """`pareto.csv` (exactly the non-dominated rows of `frame`) and `pareto.png` in `out_dir`, atomically."""
    import io

    from autovid.files import write_bytes_atomic
    from autovid.pareto import pareto_front

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = write_csv_atomic(pareto_front(frame, objectives), out / "pareto.csv")
    buffer = io.BytesIO()
    pareto_figure(frame, objectives).savefig(buffer, dpi=110, format="png")
    png = write_bytes_atomic(out / "pareto.png", buffer.getvalue())
    return csv, png
