"""Pareto dominance over trial results: which trials no other trial beats on every objective at once.

    a dominates b  ⇔  a is at least as good as b on every objective and strictly better on one

Ties are not dominance: two trials with equal values on every objective are both on the front (or both off
it). A trial missing a value (NaN, an errored trial) is never on the front and dominates nothing, and so is an
infeasible trial (one that broke a constraint of the study, `feasible` False): a front is a choice among the
architectures the user can deploy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

Objective = tuple[str, str]  # (metric column, "max" | "min")

__all__ = ["FEASIBLE", "Objective", "dominates", "feasible_rows", "pareto_front", "pareto_mask"]

FEASIBLE = "feasible"  # the column of a trial table saying whether a trial met the study's constraints


def _as_minimised(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Flip the sign of maximised columns so that lower is better everywhere."""
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"values must be (trials, {len(modes)}), got shape {values.shape}")
    unknown = [m for m in modes if m not in ("max", "min")]
    if unknown:
        raise ValueError(f"modes must be 'max' or 'min', got {unknown}")
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return values * sign


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether point `a` Pareto-dominates point `b` under `modes` (one "max"/"min" per objective)."""
    pair = _as_minimised(np.asarray([a, b], dtype=float), modes)
    if np.isnan(pair).any():
        return False
    return bool(np.all(pair[0] <= pair[1]) and np.any(pair[0] < pair[1]))


def pareto_mask(values: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str],
                feasible: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
    """A boolean array: True for the rows of `values` (trials × objectives) that no other row dominates, among
    the rows `feasible` marks True (default: all); an infeasible row is never on the front and dominates nothing.

    O(n² k), which is nothing for the hundreds of trials a study has. Not Optuna's front (``Study.best_trials``):
    that covers the trials of an Optuna study only, while these fronts are over result tables (Tune summaries,
    ablation arms) whose failed rows carry NaN."""
    points = _as_minimised(np.asarray(values, dtype=float).reshape(-1, len(modes)), modes)
    valid = ~np.isnan(points).any(axis=1)
    if feasible is not None:
        valid &= np.asarray(feasible, dtype=bool).reshape(-1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = points[valid]
        dominated = np.all(others <= points[i], axis=1) & np.any(others < points[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def feasible_rows(frame: pd.DataFrame) -> np.ndarray:
    """The frame's `feasible` column as booleans (a missing value is not feasible); all True without the column."""
    if FEASIBLE not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    return frame[FEASIBLE].map(lambda v: v is True or v == 1 or str(v).lower() == "true").to_numpy(dtype=bool)


def pareto_front(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The feasible rows of `frame` (see `feasible_rows`) on the Pareto front of `objectives`, in the frame's
    order (index reset)."""
    missing = [metric for metric, _ in objectives if metric not in frame.columns]
    if missing:
        raise ValueError(f"no column for objective(s) {missing}")
    values = frame[[metric for metric, _ in objectives]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    mask = pareto_mask(values, [mode for _, mode in objectives], feasible_rows(frame))
    return frame[mask].reset_index(drop=True)
