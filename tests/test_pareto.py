"""Pareto dominance on hand-made points (ties, NaN, mixed directions) and the pareto.csv / pareto.png writer."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autovid.pareto import dominates, pareto_front, pareto_mask
from autovid.report import pareto_figure, write_pareto

MAX_MIN = ("max", "min")  # accuracy up, cost down


def test_dominance_needs_one_strict_improvement() -> None:
    assert dominates([0.9, 10], [0.8, 10], MAX_MIN)  # better accuracy, same cost
    assert dominates([0.8, 5], [0.8, 10], MAX_MIN)  # same accuracy, cheaper
    assert not dominates([0.8, 10], [0.8, 10], MAX_MIN)  # a tie is not dominance
    assert not dominates([0.9, 20], [0.8, 10], MAX_MIN)  # a trade-off
    assert not dominates([0.8, 10], [0.9, 5], MAX_MIN)
    assert not dominates([math.nan, 1], [0.1, 100], MAX_MIN)
    assert dominates([1, 1], [2, 2], ("min", "min")) and not dominates([2, 2], [1, 1], ("min", "min"))


def test_front_of_hand_made_points_with_ties() -> None:
    points = [
        [0.90, 100],  # 0: front (most accurate)
        [0.90, 100],  # 1: tie with 0, both on the front
        [0.80, 50],   # 2: front (trade-off)
        [0.80, 60],   # 3: dominated by 2 (same accuracy, dearer)
        [0.70, 50],   # 4: dominated by 2 (same cost, less accurate)
        [0.50, 10],   # 5: front (cheapest)
        [0.85, 100],  # 6: dominated by 0 and 1
        [math.nan, 1],  # 7: no value: never on the front, dominates nothing
    ]
    assert pareto_mask(points, MAX_MIN).tolist() == [True, True, True, False, False, True, False, False]


def test_mask_agrees_with_pairwise_dominance_on_random_points() -> None:
    rng = np.random.default_rng(0)
    for modes in (("max", "min"), ("min", "min", "max")):
        # few distinct values: many ties and equal coordinates
        points = rng.integers(0, 4, size=(40, len(modes))).astype(float)
        expected = [not any(dominates(q, p, modes) for q in points) for p in points]
        assert pareto_mask(points, modes).tolist() == expected


def test_single_point_and_empty_input() -> None:
    assert pareto_mask([[0.5, 3.0]], MAX_MIN).tolist() == [True]
    assert pareto_mask(np.empty((0, 2)), MAX_MIN).tolist() == []


def test_bad_modes_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="max' or 'min"):
        pareto_mask([[1, 2]], ("max", "up"))
    with pytest.raises(ValueError, match="no column"):
        pareto_front(pd.DataFrame({"a": [1]}), [("a", "max"), ("b", "min")])


def _summary() -> pd.DataFrame:
    return pd.DataFrame({
        "trial": ["t0", "t1", "t2", "t3", "t4"],
        "val/acc": [0.9, 0.8, 0.8, 0.6, 0.9],
        "genotype/flops": [300, 100, 200, 50, 300],
        "genotype/latency_ms": [3.0, 1.5, 1.0, 2.0, 3.0],
    })


def test_pareto_front_keeps_the_frames_rows_and_order() -> None:
    front = pareto_front(_summary(), [("val/acc", "max"), ("genotype/flops", "min")])
    assert front["trial"].tolist() == ["t0", "t1", "t3", "t4"]  # t2 is dominated by t1; t0 and t4 tie


def test_write_pareto_csv_lists_exactly_the_front_and_a_png(tmp_path: Path) -> None:
    frame = _summary()
    objectives = [("val/acc", "max"), ("genotype/flops", "min"), ("genotype/latency_ms", "min")]
    csv, png = write_pareto(frame, objectives, tmp_path)
    written = pd.read_csv(csv)
    values = frame[[m for m, _ in objectives]].to_numpy()
    expected = [t for t, p in zip(frame["trial"], values)
                if not any(dominates(q, p, [d for _, d in objectives]) for q in values)]
    assert written["trial"].tolist() == expected == ["t0", "t1", "t2", "t3", "t4"]  # three objectives: all trade off
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.csv", "pareto.png"]  # no temporaries left


def test_figure_has_one_panel_per_pair_of_objectives() -> None:
    objectives = [("val/acc", "max"), ("genotype/flops", "min"), ("genotype/latency_ms", "min")]
    fig = pareto_figure(_summary(), objectives)
    assert len(fig.axes) == len(list(itertools.combinations(objectives, 2)))
    with pytest.raises(ValueError, match="two or more"):
        pareto_figure(_summary(), objectives[:1])


def test_infeasible_trials_are_never_on_the_front_and_dominate_nothing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"trial": ["a", "b", "c", "d"], "val/acc": [0.9, 0.8, 0.7, 0.6],
                          "genotype/params": [100, 50, 60, 10], "feasible": [False, True, True, None]})
    objectives = [("val/acc", "max"), ("genotype/params", "min")]
    # without constraints a, b and d are the front; a broke a constraint and d's feasibility is unknown, so
    # neither is on it, and c (dominated by b only) stays off while b, the lone feasible non-dominated trial, is on
    assert pareto_front(frame.drop(columns=["feasible"]), objectives)["trial"].tolist() == ["a", "b", "d"]
    assert pareto_front(frame, objectives)["trial"].tolist() == ["b"]
    assert pareto_mask(frame[["val/acc", "genotype/params"]].to_numpy(), MAX_MIN,
                       [False, True, True, True]).tolist() == [False, True, False, True]
    csv, png = write_pareto(frame, objectives, tmp_path)
    assert pd.read_csv(csv)["trial"].tolist() == ["b"] and png.read_bytes()[:4] == b"\x89PNG"
    assert pareto_figure(frame, objectives)._suptitle.get_text() == "Pareto front: 1 of 4 trials"
