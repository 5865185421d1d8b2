"""`autovid tune` for real: Optuna study on local Ray, nested MLflow runs, retrain of the best genotype,
worker death retried from the checkpoint, and trials placed on both nodes of a two-node cluster."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pytest
import ray
from ray import tune

from autovid.data.backends import DECODER_BACKEND_PARAM
from autovid.data.backends import resolve as resolve_decoder
from autovid.engine.setup import prepare_manifest
from autovid.provenance import manifest_hash
from autovid.tune import stage
from autovid.tune.experiment import make_tuner
from autovid.tune.runner import run_search_experiment
from autovid.tune.trainables import BASE_KEY, SearchTrainable
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def test_study_with_nested_mlflow_runs_and_retrain(tmp_path: Path, local_ray, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # samples within a short study
    cfg = tiny_config(
        tmp_path,
        tracking={"system_metrics": True},
        # no early stopping: ASHA's asynchronous decisions depend on which trial reports first, i.e. on load
        tune={"num_samples": 2, "max_concurrent_trials": 2, "scheduler": {"name": "none"},
              "param_space": {"search.w_lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
                              "data.num_segments": {"type": "choice", "values": [1, 2]}}},
        train={"epochs": 1, "channels": 4, "cells": 2},
    )
    outcome = run_search_experiment(cfg)
    assert len(outcome.summary) == 2 and set(outcome.summary["status"]) == {"OK"}
    assert outcome.best_genotype and 0.0 <= outcome.retrain["test/acc"] <= 1.0
    assert outcome.retrain["trial_cpus"] == 2  # the lone retrain trial takes the whole (2-CPU) node
    exp_dir = Path(outcome.experiment_path)
    assert (exp_dir / "summary.csv").is_file() and (exp_dir / "best_genotype.json").is_file()
    assert (exp_dir / "optuna.journal").stat().st_size > 0  # the study is persisted beside the run

    client = mlflow.MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    parent = client.get_run(outcome.parent_run_id)
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3  # two search trials and the retrain of the best
    # tracking.log_models is off in the tiny config: the retrain logged no model
    assert "mlflow_model" not in outcome.retrain and not client.search_logged_models([experiment.experiment_id])
    searches = [c for c in children if "search.w_lr" in c.data.params and "val/acc" in c.data.metrics]
    assert len(searches) == 2
    # the decoder as configured and as resolved, on the parent run and on every trial's run
    for run in (parent, *searches):
        assert run.data.params["data.decoder"] == "auto"
        assert run.data.params[DECODER_BACKEND_PARAM] == resolve_decoder("auto")
    for child in searches:
        for key in ("train/loss", "val/acc", "alpha/entropy", "genotype/params", "genotype/flops"):
            history = client.get_metric_history(child.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert any(p.startswith("genotype") for p in artifacts)
        assert child.data.tags.get("genotype_hash") or child.data.tags.get("autovid.genotype_hash")

    # lineage: the parent and every child run list the manifest they trained on as their dataset input
    manifest = prepare_manifest(cfg.data)
    classes = manifest.drop_duplicates("label").sort_values("label")["class_name"].tolist()
    for run in (parent, *children):
        (dataset,) = [d.dataset for d in client.get_run(run.info.run_id).inputs.dataset_inputs]
        assert dataset.digest == manifest_hash(manifest) and json.loads(dataset.profile)["classes"] == classes
    # system metrics of the driver's node on the parent run
    assert "system/cpu_utilization_percentage" in parent.data.metrics


class _KillWorkerOnce(tune.Callback):
    """Kills the trial's worker process once Tune has recorded the checkpoint of its second epoch.

    Killed from `on_checkpoint`, the worker dies with that checkpoint the newest Tune knows of, and before the
    controller can process epoch 3 (it runs the callback first): the restore point does not depend on timing."""

    def __init__(self) -> None:
        self.killed = False
        self.pid = 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.pid = result["pid"]

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if not self.killed and Path(checkpoint.path).name == "checkpoint_000001":  # written after epoch 2
            self.killed = True
            os.kill(self.pid, signal.SIGKILL)


def test_worker_death_resumes_from_last_checkpoint(tmp_path: Path, local_ray) -> None:
    cfg = stage.absolute_paths(tiny_config(tmp_path, search={"epochs": 4, "warmup_epochs": 1},
                                           tune={"checkpoint_frequency": 1}))
    killer = _KillWorkerOnce()
    tuner = make_tuner(
        SearchTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json")}, name="killed", max_t=4,
        searcher=None, scheduler=None, num_samples=1, callbacks=[killer], resume=False,
    )
    result = tuner.fit()[0]
    assert killer.killed and result.error is None
    assert result.metrics["training_iteration"] == 4 and result.metrics["epoch"] == 4
    # restored from the epoch-2 checkpoint: epochs 3 and 4 ran after the restore, epoch 1 was not redone
    assert result.metrics["iterations_since_restore"] == 2
    # (whether epoch 2's row reached the trial log before the kill depends on the order of Tune's callbacks)
    epochs = [int(e) for e in result.metrics_dataframe["epoch"]]
    assert epochs[0] == 1 and epochs[-2:] == [3, 4] and epochs.count(1) == 1 and epochs.count(3) == 1


def test_two_node_cluster_places_trials_on_both_nodes(tmp_path: Path, inject_faults) -> None:
    """Each node has one CPU and each trial needs one: two trials that run at the same time must be on
    different nodes. Both are held before their first epoch until both have started, so they do."""
    from ray.cluster_utils import Cluster

    gate = tmp_path / "gate"
    gate.mkdir()
    inject_faults(hold=(1, gate))  # before the nodes start: their workers inherit it
    both_held = threading.Event()

    def release_when_both_held() -> None:
        deadline = time.monotonic() + 300
        while len(list(gate.glob("held-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        if len(list(gate.glob("held-*"))) == 2:
            both_held.set()
        while len(list(gate.glob("release-*"))) < 2:  # then (or after the timeout, one by one) release them
            for held in gate.glob("held-*"):
                (gate / held.name.replace("held-", "release-")).touch()
            time.sleep(0.1)

    releaser = threading.Thread(target=release_when_both_held, daemon=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        releaser.start()
        cfg = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0},
                          tune={"num_samples": 2, "max_concurrent_trials": 2, "scheduler": {"name": "none"},
                                "resources": {"cpu": 1},
                                "param_space": {"search.w_lr": {"type": "choice", "values": [0.02, 0.03]}}})
        outcome = run_search_experiment(cfg, retrain=False, address=cluster.address)
        assert both_held.is_set()  # the two trials ran at the same time
        assert len(outcome.summary) == 2
        frames = tune.Tuner.restore(outcome.experiment_path, trainable=SearchTrainable).get_results()
        nodes = {r.metrics["node_id"] for r in frames}
        assert len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_pbt_over_learning_rates_exploits_without_losing_trials(tmp_path: Path, local_ray) -> None:
    cfg = tiny_config(
        tmp_path,
        search={"epochs": 4, "warmup_epochs": 1},
        tune={"num_samples": 2, "max_concurrent_trials": 2, "searcher": {"name": "random"},
              "scheduler": {"name": "pbt", "perturbation_interval": 1},
              "param_space": {"search.w_lr": {"type": "loguniform", "low": 0.005, "high": 0.1},
                              "search.alpha_lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}}},
    )
    outcome = run_search_experiment(cfg, retrain=False)
    assert len(outcome.summary) == 2 and set(outcome.summary["status"]) == {"OK"}
    assert set(outcome.summary["epoch"]) == {4}
    # After every exploit the trial trains with its own (explored) learning rate, not the donor's: each
    # reported lr is the cosine schedule of the w_lr in that row's config.
    rows = [json.loads(line) for path in Path(outcome.experiment_path).glob("*/result.json")
            for line in path.read_text().splitlines() if line.strip()]
    # how many rows survive depends on when the exploits happen (an exploited trial's log follows its donor's
    # checkpoint), so count only that each trial has one: 6, 7 and 8 rows of 2 x 4 epochs were all seen here
    assert len({row["trial_id"] for row in rows}) == 2
    for row in rows:
        w_lr, epochs, lr_min = row["config"]["search.w_lr"], 4, cfg.search.w_lr_min
        expected = lr_min + (w_lr - lr_min) * (1 + math.cos(math.pi * row["epoch"] / epochs)) / 2
        assert row["lr"] == pytest.approx(expected, rel=1e-6), row["config"]
