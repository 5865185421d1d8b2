"""Ablation, ranking and segment-sweep reports: pure tables (pandas), statistics (scipy) and PNG plots (matplotlib Agg)."""

from __future__ import annotations

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

__all__ = [
    "ABLATION_COLUMNS",
    "ABLATION_INPUT_COLUMNS",
    "SEGMENTS_COLUMNS",
    "SEGMENTS_INPUT_COLUMNS",
    "ablation_table",
    "alpha_heatmap",
    "plot_accuracy_vs_params",
    "plot_rank_scatter",
    "plot_segments",
    "rank_correlation",
    "segments_table",
    "summary_table",
    "write_ablation_report",
]

log = logging.getLogger(__name__)

# One row per (arm, seed): accuracies are fractions in [0, 1]; costs are measured seconds.
ABLATION_INPUT_COLUMNS = ("arm", "seed", "top1", "top5", "params", "flops", "search_cost_s", "retrain_cost_s")
# One row per arm. Costs are hours per seed (the mean over seeds of one search / one retrain).
ABLATION_COLUMNS = (
    "arm", "top1_mean", "top1_std", "top5_mean", "params", "flops", "search_cost_h", "retrain_cost_h", "seeds",
)
SEGMENTS_INPUT_COLUMNS = ("mode", "num_segments", "frames", "top1")
SEGMENTS_COLUMNS = ("mode", "num_segments", "frames", "top1_mean", "top1_std", "runs")


# --------------------------------------------------------------------------------------------- ablation


def ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per-seed results into one row per arm (arms keep their first-appearance order).

    ``top1_std`` is the sample standard deviation (ddof=1; NaN for a single seed); ``params`` and
    ``flops`` are means over seeds (a searched arm may find a different network per seed);
    ``search_cost_h``/``retrain_cost_h`` are the mean cost of one seed, in hours.
    """
    _require_columns(results, ABLATION_INPUT_COLUMNS, "ablation results")
    _check_fractions(results, ("top1", "top5"))
    grouped = results.groupby("arm", sort=False)
    table = pd.DataFrame(
        {
            "top1_mean": grouped["top1"].mean(),
            "top1_std": grouped["top1"].std(ddof=1),
            "top5_mean": grouped["top5"].mean(),
            "params": grouped["params"].mean(),
            "flops": grouped["flops"].mean(),
            "search_cost_h": grouped["search_cost_s"].mean() / 3600.0,
            "retrain_cost_h": grouped["retrain_cost_s"].mean() / 3600.0,
            "seeds": grouped["seed"].nunique(),
        }
    )
    return table.reset_index()[list(ABLATION_COLUMNS)]


def write_ablation_report(results: pd.DataFrame, out_dir: str | Path, *, budget_note: str) -> dict[str, Path]:
    """Write ``report.md`` (table + budget note), ``report.csv`` and ``accuracy_vs_params.png`` into ``out_dir``.

    Returns ``{"markdown": ..., "csv": ..., "plot": ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(results)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "accuracy_vs_params.png"}
    table.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(
        "# Ablation report\n\n"
        + _ablation_markdown(table)
        + "\n\nTop-1 is the mean ± sample standard deviation over seeds; costs are hours per seed, measured.\n\n"
        + "## Budget\n\n"
        + budget_note.strip()
        + "\n\n![top-1 vs parameters](accuracy_vs_params.png)\n"
    )
    plot_accuracy_vs_params(table, paths["plot"])
    log.info("ablation report written to %s", out)
    return paths


def plot_accuracy_vs_params(table: pd.DataFrame, path: str | Path) -> Path:
    """Top-1 (percent) against parameters (log x) with ±std error bars, one labelled marker per arm."""
    _require_columns(table, ("arm", "top1_mean", "top1_std", "params"), "ablation table")
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    markers = "osD^vP*Xph<>"
    for i, row in enumerate(table.itertuples(index=False)):
        std = 0.0 if pd.isna(row.top1_std) else 100 * row.top1_std
        ax.errorbar(
            row.params, 100 * row.top1_mean, yerr=std, fmt=markers[i % len(markers)], capsize=4, markersize=7, label=row.arm
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
    ax.set_title("Accuracy vs parameters (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _count_label(value: float, _position: int | None = None) -> str:
    """1500 -> '1.5 k', 2e6 -> '2 M' (axis labels for parameter and FLOP counts)."""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _ablation_markdown(table: pd.DataFrame) -> str:
    header = ["arm", "top-1 (%)", "top-5 (%)", "params", "FLOPs / clip", "search (h)", "retrain (h)", "seeds"]
    rows = []
    for r in table.itertuples(index=False):
        std = "n/a" if pd.isna(r.top1_std) else f"{100 * r.top1_std:.1f}"
        rows.append(
            [
                str(r.arm),
                f"{100 * r.top1_mean:.1f} ± {std}",
                f"{100 * r.top5_mean:.1f}",
                _human(r.params),
                _human(r.flops),
                f"{r.search_cost_h:.3f}",
                f"{r.retrain_cost_h:.3f}",
                str(r.seeds),
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- ranking


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Kendall τ and Spearman ρ (with two-sided p-values) between two scorings of the same items.

    Returns ``{"kendall_tau", "kendall_p", "spearman_rho", "spearman_p", "n"}``; NaN where a scoring is constant.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D scorings of the same length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("rank correlation needs at least two items")
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return {
        "kendall_tau": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "n": int(len(x)),
    }


def plot_rank_scatter(
    a: Sequence[float],
    b: Sequence[float],
    path: str | Path,
    labels: tuple[str, str] = ("weight-sharing score", "standalone accuracy"),
    *,
    point_labels: Sequence[str] | None = None,
) -> Path:
    """Scatter of scoring ``a`` (x, axis label ``labels[0]``) against ``b`` (y, ``labels[1]``), τ and ρ in the title.

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
    ax.set_title(f"Kendall τ = {corr['kendall_tau']:.3f}, Spearman ρ = {corr['spearman_rho']:.3f} (n = {corr['n']})")
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


# --------------------------------------------------------------------------------------------- alphas


def alpha_heatmap(
    alphas: np.ndarray,
    ops: Sequence[str],
    path: str | Path,
    *,
    title: str = "softmax(α)",
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Heatmap of architecture weights.

    ``alphas`` is ``[edges, ops]`` (one map, rows labelled ``row_labels`` or ``edge i``) or
    ``[epochs, edges, ops]`` (one panel per op: epoch on x, edge on y, how each op's weight evolves).
    """
    a = np.asarray(alphas, dtype=float)
    if a.ndim not in (2, 3) or a.shape[-1] != len(ops):
        raise ValueError(f"alphas must be [edges, ops] or [epochs, edges, ops] with {len(ops)} ops, got shape {a.shape}")
    vmax = float(np.nanmax(a)) if a.size else 1.0
    if a.ndim == 2:
        edges = a.shape[0]
        fig = _figure(1.0 + 0.8 * len(ops), 1.2 + 0.35 * edges)
        ax = fig.add_subplot()
        im = ax.imshow(a, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_xticks(range(len(ops)), list(ops), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(edges), list(row_labels) if row_labels is not None else [f"edge {i}" for i in range(edges)], fontsize=8)
        if a.size <= 200:  # numbers stay readable only on small maps
            for (i, j), v in np.ndenumerate(a):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 * vmax else "k")
        ax.set_title(title)
        fig.colorbar(im, ax=ax)
        return _save(fig, path)

    epochs, edges, _ = a.shape
    cols = min(4, len(ops))
    nrows = math.ceil(len(ops) / cols)
    fig = _figure(3.2 * cols, 2.4 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(ops):
            ax.set_visible(False)
            continue
        im = ax.imshow(a[:, :, k].T, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, origin="lower")
        ax.set_title(ops[k], fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("edge", fontsize=8)
    fig.suptitle(title)
    fig.colorbar(im, ax=axes.ravel().tolist())
    return _save(fig, path)


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
