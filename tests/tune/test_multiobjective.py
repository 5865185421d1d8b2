"""Multi-objective studies, HyperBand and median stopping, and warm-start points, on local Ray for real
(Ray Tune, OptunaSearch with its journal, MLflow on a temporary SQLite file)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import ray

from autovid.pareto import dominates
from autovid.tune.runner import run_search_experiment
from autovid.tune.study import load_study
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow

OBJECTIVES = [{"metric": "val/acc", "mode": "max"}, {"metric": "genotype/latency_ms", "mode": "min"}]
SPACE = {"search.w_lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
         "search.alpha_lr": {"type": "loguniform", "low": 1e-3, "high": 0.3}}


def _trial_order(trial_id: str) -> int:
    return int(trial_id.rsplit("_", 1)[1])  # Ray numbers trials in creation order: <experiment>_00000, ...


def test_multi_objective_study_writes_the_pareto_front_and_retrains_it(tmp_path: Path, local_ray) -> None:
    cfg = tiny_config(
        tmp_path,
        name="mo",
        search={"epochs": 1, "warmup_epochs": 0},
        train={"epochs": 1, "channels": 4, "cells": 2},
        tune={"num_samples": 4, "max_concurrent_trials": 2, "scheduler": {"name": "none"},
              "searcher": {"sampler": "nsga2", "population_size": 2}, "objectives": OBJECTIVES,
              "param_space": SPACE, "retrain": "pareto"},
    )
    outcome = run_search_experiment(cfg)
    exp = Path(outcome.experiment_path)
    summary = pd.read_csv(exp / "summary.csv")
    assert len(summary) == 4 and set(summary["status"]) == {"OK"}
    assert (summary["genotype/latency_ms"] > 0).all() and (summary["genotype/latency_ms_b"] > 0).all()

    # pareto.csv lists exactly the trials no other trial dominates (checked pairwise, not with pareto_mask)
    metrics, modes = [o["metric"] for o in OBJECTIVES], [o["mode"] for o in OBJECTIVES]
    points = summary[metrics].to_numpy(dtype=float)
    expected = {t for t, p in zip(summary["trial"], points) if not any(dominates(q, p, modes) for q in points)}
    front = pd.read_csv(exp / "pareto.csv")
    assert set(front["trial"]) == expected and len(front) == len(expected) >= 1
    assert (exp / "pareto.png").read_bytes()[:4] == b"\x89PNG"

    # every front member retrained under its own name, accuracy against cost in pareto_retrained.csv
    retrained = pd.read_csv(exp / "pareto_retrained.csv")
    assert set(retrained["trial"]) == expected and set(retrained["status"]) == {"OK"}
    assert retrained["test/acc"].between(0, 1).all() and (retrained["flops"] > 0).all()
    for trial in expected:
        assert (Path(cfg.storage_path) / f"mo-retrain-{trial}" / "final_metrics.json").is_file()
    assert not outcome.retrain  # retrain=pareto replaces the single best retrain

    # the Optuna study has both directions and every trial's two values
    study = load_study(exp, "mo")
    assert study is not None and study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                                      optuna.study.StudyDirection.MINIMIZE]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.values[0] for t in complete) == pytest.approx(sorted(summary["val/acc"]))

    # MLflow parent run: the front and Optuna's plots as artifacts, one child per trial and per retrain
    client = mlflow.MlflowClient(cfg.tracking.uri)
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id)}
    assert {"pareto.csv", "pareto.png", "pareto_retrained.csv", "optuna"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(outcome.parent_run_id, "optuna")}
    assert {"optuna_history_val_acc.png", "optuna_history_genotype_latency_ms.png", "optuna_pareto.png"} <= plots
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    assert len(children) == 4 + len(expected)


def test_hyperband_stops_exactly_one_trial_after_its_first_epoch(tmp_path: Path, local_ray) -> None:
    """Ray's HyperBand with max_t = 2 epochs and η = 2 has s_max + 1 = 2 brackets per band, filled in order:
    s = 0 (n0 = 2 trials, r0 = 2 epochs: no halving) and s = 1 (n0 = 2 trials, r0 = 1 epoch, then keep
    ⌈2 / 2⌉ = 1). With all four trials created before any reports (max_concurrent_trials = num_samples: the
    concurrency limiter lets Tune take all four suggestions in its first step), the second bracket halves only
    when both its trials have run one epoch, whatever the order they run in: exactly one trial stops at 1."""
    cfg = tiny_config(
        tmp_path,
        name="hyperband",
        search={"epochs": 2, "warmup_epochs": 1},
        tune={"num_samples": 4, "max_concurrent_trials": 4, "param_space": SPACE, "retrain": "none",
              "scheduler": {"name": "hyperband", "reduction_factor": 2}},
    )
    outcome = run_search_experiment(cfg)
    assert len(outcome.summary) == 4 and set(outcome.summary["status"]) == {"OK"}
    assert sorted(outcome.summary["epoch"]) == [1, 2, 2, 2] and outcome.summary["objective"].notna().all()
    assert outcome.best_genotype


def test_median_stopping_stops_the_trial_that_is_certainly_worse(tmp_path: Path, local_ray) -> None:
    """Three trials in a fixed order; the last pays a cost penalty of about 121 (10 per doubling of 4,448
    parameters above 1), so its objective is far below any accuracy, and below the median of the trials before
    it: the rule stops it after its first epoch, whatever the accuracies come out as."""
    points = [{"tune.objective.weight": 10.0 if i == 2 else 0.0} for i in range(3)]
    cfg = tiny_config(
        tmp_path,
        name="median",
        search={"epochs": 2, "warmup_epochs": 1},
        tune={"num_samples": 3, "max_concurrent_trials": 2, "retrain": "none", "points_to_evaluate": points,
              "objective": {"kind": "cost_aware", "cost": "params", "weight": 0.0, "reference": 1.0},
              "param_space": {"tune.objective.weight": {"type": "choice", "values": [0.0, 10.0]}},
              "scheduler": {"name": "median", "grace_period": 1, "min_samples": 1}},
    )
    outcome = run_search_experiment(cfg)
    summary = outcome.summary
    assert len(summary) == 3 and set(summary["status"]) == {"OK"} and summary["objective"].notna().all()
    worse = summary["tune.objective.weight"] == 10.0
    assert worse.sum() == 1 and (summary.loc[worse, "objective"] < -100).all()
    assert summary.loc[worse, "epoch"].tolist() == [1]  # stopped early: the stop happened
    assert set(summary["epoch"]) <= {1, 2} and outcome.best_genotype


@pytest.mark.parametrize("searcher", ["optuna", "random"])
def test_points_to_evaluate_are_the_first_trials(tmp_path: Path, local_ray, searcher: str) -> None:
    points = [{"search.w_lr": 0.02, "search.alpha_lr": 0.05}, {"search.w_lr": 0.08, "search.alpha_lr": 0.002}]
    cfg = tiny_config(
        tmp_path,
        name=f"warm-{searcher}",
        search={"epochs": 1, "warmup_epochs": 0},
        tune={"num_samples": 3, "max_concurrent_trials": 1, "scheduler": {"name": "none"}, "retrain": "none",
              "searcher": {"name": searcher}, "param_space": SPACE, "points_to_evaluate": points},
    )
    outcome = run_search_experiment(cfg)
    assert len(outcome.summary) == 3 and set(outcome.summary["status"]) == {"OK"}
    if searcher == "optuna":  # Optuna numbers its trials in the order it hands them out
        study = load_study(outcome.experiment_path, cfg.name)
        assert study is not None
        params = [t.params for t in sorted(study.trials, key=lambda t: t.number)]
        assert params[:2] == points and len(params) == 3
    # and Tune ran exactly those configs (BasicVariantGenerator names its trials <id>_00000, _00001, ...)
    rows = outcome.summary.to_dict("records")
    if searcher == "random":
        rows.sort(key=lambda r: _trial_order(r["trial"]))
        assert [{k: r[k] for k in SPACE} for r in rows[:2]] == points
    tried = [{k: r[k] for k in SPACE} for r in rows]
    assert all(point in tried for point in points)
    assert sum(t not in points for t in tried) == 1  # the third trial is sampled


def test_register_is_refused_with_a_pareto_retrain_before_anything_runs(tmp_path: Path) -> None:
    from autovid.errors import UserError

    cfg = tiny_config(tmp_path, tune={"scheduler": {"name": "none"}, "objectives": OBJECTIVES, "retrain": "pareto"})
    with pytest.raises(UserError, match="tune.retrain=pareto retrains every front member"):
        run_search_experiment(cfg, register="model")
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()
