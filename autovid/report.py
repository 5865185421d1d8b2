"""Ablation, ranking and segment-sweep reports: tables with confidence statistics, and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from scipy import stats

from autovid.files import write_csv_atomic, write_text_atomic
from autovid.stats import bootstrap_accuracy_ci, kendall_tau_ci, min_detectable_difference, paired_comparison

__all__ = [
    "ABLATION_COLUMNS",
    "ABLATION_INPUT_COLUMNS",
    "Correctness",
    "SEGMENTS_COLUMNS",
    "SEGMENTS_INPUT_COLUMNS",
    "ablation_table",
    "plot_accuracy_vs_params",
    "plot_rank_scatter",
    "plot_segments",
    "rank_correlation",
    "segments_table",
    "operator_agreement",
    "summary_table",
    "top_operators",
    "write_ablation_report",
]

log = logging.getLogger(__name__)

# One row per (arm, seed): accuracies are fractions in [0, 1]; costs are measured CPU-seconds.
ABLATION_INPUT_COLUMNS = ("arm", "seed", "top1", "top5", "params", "flops", "search_cost_s", "retrain_cost_s")
# One row per arm: top-1 over seeds and test videos with its bootstrap CI, the paired comparison with the
# reference arm (Δ = arm − reference, as fractions), size, and costs in CPU-seconds per seed (the mean over seeds).
ABLATION_COLUMNS = (
    "arm", "seeds", "test_videos", "top1_mean", "top1_ci_low", "top1_ci_high",
    "delta_vs_ref", "delta_ci_low", "delta_ci_high", "p_value", "significant",
    "params", "flops", "search_cpu_s", "top5_mean", "retrain_cpu_s", "top1_std",
)
SEGMENTS_INPUT_COLUMNS = ("mode", "num_segments", "frames", "top1")
SEGMENTS_COLUMNS = ("mode", "num_segments", "frames", "top1_mean", "top1_std", "runs")

CONFIDENCE = 0.95
POWER = 0.8  # the power at which report.md states the minimum detectable difference

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

    Accuracy and its CI come from ``correct`` (two-level bootstrap over seeds and videos); Δ, its CI and the
    p-value compare each arm with ``reference`` on the same videos (``autovid.stats.paired_comparison``). The
    reference row has Δ = 0, NaN CI and p-value, and ``significant`` False. ``top1_std`` is the sample standard
    deviation of per-seed accuracy (NaN for one seed); ``params``, ``flops`` and the costs are means over seeds.
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
                     "significant": False}
    rows = []
    for arm, part in results.groupby("arm", sort=False):
        c = matrices[arm]
        top1 = bootstrap_accuracy_ci(c, confidence=CONFIDENCE, rng=rng)
        cmp = no_comparison if arm == reference else paired_comparison(
            c, matrices[reference], confidence=CONFIDENCE, alpha=alpha, rng=rng
        )
        rows.append({
            "arm": arm, "seeds": c.shape[0], "test_videos": c.shape[1],
            "top1_mean": top1.mean, "top1_ci_low": top1.low, "top1_ci_high": top1.high,
            "delta_vs_ref": cmp["delta"], "delta_ci_low": cmp["delta_ci_low"], "delta_ci_high": cmp["delta_ci_high"],
            "p_value": cmp["p_value"], "significant": cmp["significant"],
            "params": part["params"].mean(), "flops": part["flops"].mean(),
            "search_cpu_s": part["search_cost_s"].mean(), "top5_mean": part["top5"].mean(),
            "retrain_cpu_s": part["retrain_cost_s"].mean(),
            "top1_std": float(np.std(c.mean(axis=1), ddof=1)) if c.shape[0] > 1 else math.nan,
        })
    return pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))


def write_ablation_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    *,
    budget_note: str,
    correct: Correctness,
    reference: str = "darts-p3d",
    alpha: float = 0.05,
    budget: str = "",
    rng: np.random.Generator | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` (``ablation_table``) and ``accuracy_vs_params.png`` into ``out_dir``.

    report.md opens with the minimum difference detectable on this test set, then the budget (``budget``, one
    line, if given; the measured compute; ``budget_note``), the table with CIs and paired comparisons against
    ``reference``, and the conclusions the data support. Returns ``{"markdown": ..., "csv": ..., "plot": ...}``.
    """
    table = ablation_table(results, correct, reference=reference, alpha=alpha, rng=rng)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "accuracy_vs_params.png"}
    write_csv_atomic(table, paths["csv"])
    n_videos = int(table["test_videos"].iloc[0])
    mdd = min_detectable_difference(n_videos, alpha=alpha, power=POWER)
    budget_lines = [f"Budget: {budget.strip()}"] if budget.strip() else []
    budget_lines.append(
        f"Measured compute: {results['search_cost_s'].sum() / 3600:.2f} CPU-hours of search and "
        f"{results['retrain_cost_s'].sum() / 3600:.2f} CPU-hours of retraining over {len(results)} runs (arm × seed)."
    )
    write_text_atomic(
        paths["markdown"],
        f"Test set: {n_videos} videos; the minimum detectable difference between two arms "
        f"(α = {alpha:g}, power {POWER:g}) is {100 * mdd:.1f} points.\n\n"
        + "\n".join(budget_lines) + "\n\n" + budget_note.strip() + "\n\n"
        + "## Results\n\n" + _ablation_markdown(table, reference) + "\n\n"
        + _method_note(reference, alpha) + "\n\n"
        + "## Conclusions supported by the data\n\n" + _conclusions(table, reference, alpha) + "\n\n"
        + "![top-1 vs parameters](accuracy_vs_params.png)\n"
    )
    plot_accuracy_vs_params(table, paths["plot"])
    log.info("ablation report written to %s", out)
    return paths


def plot_accuracy_vs_params(table: pd.DataFrame, path: str | Path) -> Path:
    """Top-1 (percent) against parameters (log x) with 95 % CI error bars, one labelled marker per arm."""
    _require_columns(table, ("arm", "top1_mean", "top1_ci_low", "top1_ci_high", "params"), "ablation table")
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    markers = "osD^vP*Xph<>"
    for i, row in enumerate(table.itertuples(index=False)):
        yerr = [[100 * (row.top1_mean - row.top1_ci_low)], [100 * (row.top1_ci_high - row.top1_mean)]]
        ax.errorbar(
            row.params, 100 * row.top1_mean, yerr=yerr, fmt=markers[i % len(markers)], capsize=4, markersize=7, label=row.arm
        )
        ax.annotate(str(row.arm), (row.params, 100 * row.top1_mean), textcoords="offset points", xytext=(6, 6), fontsize=8)
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
    return _save(fig, path)


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
    header = ["arm", "seeds", "top-1 % [95 % CI]", f"Δ vs {reference}, points [95 % CI]", "p", "params",
              "FLOPs / clip", "search (CPU-h / seed)", "retrain (CPU-h / seed)"]
    rows = []
    for r in table.itertuples(index=False):
        is_ref = r.arm == reference
        rows.append(
            [
                str(r.arm),
                str(r.seeds),
                f"{100 * r.top1_mean:.1f} [{100 * r.top1_ci_low:.1f}, {100 * r.top1_ci_high:.1f}]",
                "reference" if is_ref else
                f"{100 * r.delta_vs_ref:+.1f} [{100 * r.delta_ci_low:+.1f}, {100 * r.delta_ci_high:+.1f}]",
                "–" if is_ref else _p(r.p_value) + (" *" if r.significant else ""),
                _human(r.params),
                _human(r.flops),
                f"{r.search_cpu_s / 3600:.3f}",
                f"{r.retrain_cpu_s / 3600:.3f}",
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _method_note(reference: str, alpha: float) -> str:
    return (
        "Top-1: mean over seeds and test videos; 95 % CI by a two-level bootstrap (seeds and videos resampled). "
        f"Δ: arm − {reference} on the same test videos, 95 % CI by a paired bootstrap (videos, and seeds within "
        "each arm). p: two-sided sign-flip permutation test on per-video differences of seed-averaged correctness; it "
        f"holds the trained seeds fixed, so a claim also needs the CI to exclude 0. * marks p < {alpha:g}, "
        "not corrected for multiple comparisons. Costs: measured CPU-hours per seed."
    )


def _conclusions(table: pd.DataFrame, reference: str, alpha: float) -> str:
    """One line per arm that differs from the reference: significant and a CI that excludes 0.

    The p-value conditions on the trained seeds; the CI also resamples them. With large seed-to-seed variation
    the p-value alone would call differences that another draw of seeds need not reproduce, so an arm with
    p < alpha but a CI that spans 0 is listed as unresolved instead.
    """
    supported, unresolved = [], []
    for r in table.itertuples(index=False):
        if r.arm == reference or not r.significant:
            continue
        if r.delta_ci_low > 0 or r.delta_ci_high < 0:
            # state the winner first, so the difference and its CI read as positive points
            winner, loser, sign = (r.arm, reference, 1) if r.delta_vs_ref > 0 else (reference, r.arm, -1)
            low, high = sorted((sign * r.delta_ci_low, sign * r.delta_ci_high))
            supported.append(f"- {winner} beats {loser} by {100 * abs(r.delta_vs_ref):.1f} points "
                             f"(95 % CI {100 * low:.1f}–{100 * high:.1f}), p = {_p(r.p_value)}")
        else:
            unresolved.append(f"- {r.arm} vs {reference}: p = {_p(r.p_value)} on these seeds, but the 95 % CI over "
                              f"seeds and videos ({100 * r.delta_ci_low:+.1f} to {100 * r.delta_ci_high:+.1f} points) "
                              "includes 0; more seeds are needed before claiming a difference.")
    if not supported:
        supported = [f"No arm differs significantly from {reference} at α = {alpha:g}."]
    return "\n".join(supported + unresolved)


def _p(p: float) -> str:
    # 1 / (10 000 + 1), the smallest permutation p-value, reads as 0.0001; smaller ones would round to 0
    return "< 0.0001" if p < 0.00005 else f"{p:.4f}" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------- ranking


def rank_correlation(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 2_000, rng: np.random.Generator | None = None
) -> dict[str, float]:
    """Kendall τ (with its 95 % bootstrap CI) and Spearman ρ, with two-sided p-values, between two scorings.

    Returns ``{"kendall_tau", "kendall_p", "kendall_ci_low", "kendall_ci_high", "spearman_rho", "spearman_p",
    "n", "note"}``; NaN (and a note saying why) where a scoring is constant (the CI also where too few resamples are usable, see
    ``autovid.stats.kendall_tau_ci``). Deterministic: ``rng`` defaults to ``np.random.default_rng(0)``.
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
    a: Sequence[float],
    b: Sequence[float],
    path: str | Path,
    labels: tuple[str, str] = ("weight-sharing score", "standalone accuracy"),
    *,
    point_labels: Sequence[str] | None = None,
) -> Path:
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
    return _save(fig, path)


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


def plot_segments(results: pd.DataFrame, path: str | Path) -> Path:
    """Top-1 (percent) against the number of segments (log2 x), one line per sampling mode, ±std bars."""
    table = segments_table(results)
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    styles = ("o-", "s--", "D:", "^-.")  # distinct markers and lines, so overlapping modes stay visible
    for i, (mode, part) in enumerate(table.groupby("mode", sort=True)):
        std = 100 * part["top1_std"].fillna(0.0)
        ax.errorbar(
            part["num_segments"], 100 * part["top1_mean"], yerr=std, fmt=styles[i % len(styles)], capsize=4, label=str(mode)
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
    return _save(fig, path)


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

    from autovid.pareto import pareto_mask

    if len(objectives) < 2:
        raise ValueError("a Pareto plot needs two or more objectives")
    values = frame[[m for m, _ in objectives]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float) \
        if len(frame) else np.empty((0, len(objectives)))
    on_front = pareto_mask(values, [mode for _, mode in objectives])
    pairs = list(combinations(range(len(objectives)), 2))
    cols = min(len(pairs), 3)
    rows = -(-len(pairs) // cols)
    fig = _figure(4.6 * cols, 3.8 * rows)
    labels = frame[label].astype(str).tolist() if label in frame else [str(i) for i in range(len(frame))]
    for n, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, n + 1)
        (xm, xmode), (ym, ymode) = objectives[i], objectives[j]
        ax.scatter(values[~on_front, i], values[~on_front, j], color="0.6", s=22, label="dominated")
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
