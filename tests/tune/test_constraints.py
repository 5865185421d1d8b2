"""`tune.constraints` through real Optuna: the searcher sets each finished trial's constraint values (Optuna 5's
`Trial.set_constraint`), Optuna records them with the trial, and its best trial is a feasible one."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from ray import tune

from autovid.config import parse_constraint
from autovid.tune.constraints import ConstrainedOptunaSearch, feasibility, violations
from autovid.tune.runner import run_search_experiment
from autovid.tune.study import load_study
from tests.tiny import tiny_config

LIMIT = parse_constraint("genotype/params <= 1000")


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_sampler_sees_the_bounded_metric_and_optuna_keeps_the_feasible_best(sampler: str) -> None:
    from autovid.tune.nsga2 import PicklableNSGAIISampler

    made = optuna.samplers.TPESampler(seed=0) if sampler == "tpe" else \
        PicklableNSGAIISampler(seed=0, population_size=2)
    searcher = ConstrainedOptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="objective", mode="max",
                                       sampler=made, constraints=[LIMIT])
    # the most accurate trials are the largest: the best feasible one is not the best overall
    reports = {"t0": (0.9, 5000), "t1": (0.6, 400), "t2": (0.5, 900), "t3": (0.95, 1001)}
    for trial_id, (objective, params) in reports.items():
        assert searcher.suggest(trial_id) is not None
        searcher.on_trial_complete(trial_id, {"objective": objective, "genotype/params": params})
    trials = searcher._ot_study.get_trials()
    recorded = {t.number: t.constraints for t in trials}
    name = "genotype/params <= 1000"
    assert recorded == {0: {name: 4000.0}, 1: {name: -600.0}, 2: {name: -100.0}, 3: {name: 1.0}}
    assert searcher._ot_study.best_trial.number == 1  # Optuna's own best respects the constraint


def test_feasibility_of_a_row() -> None:
    bounds = [LIMIT, parse_constraint("genotype/latency_ms >= 0.5")]
    assert feasibility(bounds, {"genotype/params": 1000, "genotype/latency_ms": 0.5}) is True
    assert feasibility(bounds, {"genotype/params": 1000.5, "genotype/latency_ms": 2}) is False
    assert feasibility(bounds, {"genotype/params": 10}) is None  # an errored trial: unknown, never on the front
    assert violations(bounds, {"genotype/params": 10, "genotype/latency_ms": "fast"})[1] == float("inf")
    with pytest.raises(ValueError, match="is not of the form"):
        parse_constraint("genotype/params == 3")


@pytest.mark.slow
def test_constrained_study_reports_infeasible_trials_and_keeps_them_off_the_front(tmp_path: Path, local_ray) -> None:
    # channels 4 vs 32: every 2-cell p3d network is under 5k parameters at 4 channels and over 80k at 32
    # (measured over 40 random genotypes), so the bound splits the two warm-start trials whatever the genotypes
    cfg = tiny_config(
        tmp_path, name="constrained", search={"epochs": 1, "warmup_epochs": 0},
        tune={"num_samples": 2, "max_concurrent_trials": 2, "scheduler": {"name": "none"},
              "searcher": {"sampler": "nsga2", "population_size": 2},
              "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "genotype/flops", "mode": "min"}],
              "param_space": {"train.channels": {"type": "choice", "values": [4, 32]}},
              "points_to_evaluate": [{"train.channels": 4}, {"train.channels": 32}],
              "constraints": ["genotype/params <= 2.0e4"], "retrain": "none"},
    )
    outcome = run_search_experiment(cfg)
    exp = Path(outcome.experiment_path)
    summary = pd.read_csv(exp / "summary.csv")
    assert set(summary["status"]) == {"OK"} and len(summary) == 2
    by_channels = {int(r["train.channels"]): r for r in summary.to_dict("records")}
    small, large = by_channels[4], by_channels[32]
    assert small["genotype/params"] <= 2.0e4 < large["genotype/params"]
    assert small["feasible"] is True and large["feasible"] is False
    # infeasible: never on the front (though nothing feasible dominates it on flops), never the best trial
    assert pd.read_csv(exp / "pareto.csv")["trial"].tolist() == [small["trial"]]
    assert outcome.best_trial_id == small["trial"]
    # Optuna holds each trial's violation and counts only the feasible trial among its best
    study = load_study(exp, "constrained")
    assert study is not None
    violation = {t.params["train.channels"]: t.constraints["genotype/params <= 20000"] for t in study.trials}
    assert violation[4] == pytest.approx(small["genotype/params"] - 2.0e4)
    assert violation[32] == pytest.approx(large["genotype/params"] - 2.0e4)
    assert [t.params["train.channels"] for t in study.best_trials] == [4]
