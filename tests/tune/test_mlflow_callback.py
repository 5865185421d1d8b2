"""MLflowTrialCallback with a real Tuner (concurrent trials, an errored trial, Tuner.restore) and real MLflow."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
import ray.cloudpickle
from ray import tune

from autovid import tracking
from autovid.tune.mlflow_callback import MLflowTrialCallback

OPS = ["zero", "skip", "max_pool_3", "avg_pool_3", "conv_1", "conv_3", "sep_conv_3", "dil_conv_3"]
EPOCHS = 3
EDGES = 6
NUMERIC_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "alpha/entropy", "genotype/skips",
                "genotype/param_free", "genotype/params", "genotype/flops", "collapse/flag", "time/epoch_s")
LRS = (0.1, 0.01, 0.001)  # trials that finish
FAIL_LR = 0.5             # this trial raises at epoch 2 until its flag file exists


def _genotypes() -> list[str]:
    """Two valid module genotypes (JSON), built with autovid.nas.genotype."""
    from autovid.nas.genotype import Genotype

    a = Genotype("module", normal=(("conv_3", 0), ("sep_conv_3", 0), ("skip", 1), ("dil_conv_3", 1),
                                   ("max_pool_3", 2)), normal_concat=(1, 2, 3))
    b = Genotype("module", normal=(("conv_1", 0), ("conv_3", 0), ("conv_3", 1), ("skip", 0),
                                   ("avg_pool_3", 2)), normal_concat=(1, 2, 3))
    return [a.to_json(), b.to_json()]


def expected(lr: float, epoch: int) -> dict[str, float]:
    """The deterministic numeric report of a trial at an epoch (what MLflow must hold)."""
    return {"epoch": epoch, "train/loss": 2.0 / epoch + lr, "train/acc": 0.1 * epoch + lr,
            "val/loss": 2.5 / epoch + lr, "val/acc": 0.08 * epoch + lr, "alpha/entropy": 2.0 - 0.1 * epoch,
            "genotype/skips": epoch % 2, "genotype/param_free": 1 + epoch % 2, "genotype/params": 1000 * epoch,
            "genotype/flops": 10**9 + epoch, "collapse/flag": 0, "time/epoch_s": 0.01 * epoch}


def alphas(epoch: int) -> str:
    rows = []
    for e in range(EDGES):
        raw = [math.exp(0.05 * (i + 1) * (e + 1) * epoch) for i in range(len(OPS))]
        rows.append([w / sum(raw) for w in raw])
    return json.dumps({"ops": OPS, "normal": rows, "reduce": None})


def search_trainable(config: dict[str, Any]) -> None:
    """A fake DARTS search: reports the contract keys, checkpoints every epoch, can fail once on purpose."""
    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["epoch"] + 1
    for epoch in range(start, EPOCHS + 1):
        if config["lr"] == FAIL_LR and epoch == 2 and not Path(config["flag"]).exists():
            raise RuntimeError("injected failure")
        if epoch == 1:
            _meet(Path(config["rendezvous"]), config["lr"])
        genotype = config["genotypes"][epoch % 2]
        metrics = {**expected(config["lr"], epoch), "genotype": genotype,
                   "genotype_hash": f"hash{epoch % 2}", "alphas": alphas(epoch)}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _meet(folder: Path, name: float) -> None:
    """Wait until two trials have started: the first two trials run side by side however loaded the machine
    is (no sleep that a slow machine could outlast). Later trials find both marks and go straight on."""
    folder.mkdir(exist_ok=True)
    (folder / str(name)).touch()
    deadline = time.monotonic() + 300  # only a broken setup (one trial at a time) waits this long
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)


def resolve_params(config: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for the lead's resolver: the sampled value plus a nested resolved block."""
    return {"optim": {"lr": config["lr"]}, "model": {"channels": 8, "cells": 2}}


@pytest.fixture(scope="module")
def ray_local() -> Any:
    # Workers unpickle the trainable by value: this test module is not importable by name there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _fit(tuner: tune.Tuner) -> tune.ResultGrid:
    results = tuner.fit()
    assert len(results) == len(LRS) + 1
    return results


@pytest.fixture(scope="module")
def experiment(ray_local: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the study once (one trial errors), then Tuner.restore it (the errored trial resumes)."""
    root = tmp_path_factory.mktemp("tune")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    flag = root / "let_it_pass"
    cb = MLflowTrialCallback(uri, "tune-test", "study", parent_params={"num_samples": 4},
                             parent_tags={"search_space": "p3d"}, config_resolver=resolve_params)
    space = {"lr": tune.grid_search([*LRS, FAIL_LR]), "flag": str(flag), "genotypes": _genotypes(),
             "rendezvous": str(root / "rendezvous")}
    tuner = tune.Tuner(
        search_trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name="exp", storage_path=str(root / "runs"), callbacks=[cb], verbose=0),
    )
    first = _fit(tuner)
    assert sum(r.error is not None for r in first) == 1
    tracker = tracking.Tracker(uri, "tune-test")
    snapshot = {run_id: tracker.client.get_run(run_id) for run_id in tracker.children(cb.parent_run_id)}

    flag.touch()
    restored = tune.Tuner.restore(str(root / "runs" / "exp"), search_trainable, resume_errored=True)
    second = _fit(restored)
    assert all(r.error is None for r in second)
    return {"uri": uri, "tracker": tracker, "key": cb.experiment_key, "first_cb": cb, "snapshot": snapshot,
            "results": second}


def _child_by_lr(tracker: tracking.Tracker, parent: str) -> dict[float, Any]:
    runs = [tracker.client.get_run(r) for r in tracker.children(parent)]
    return {float(r.data.params["optim.lr"]): r for r in runs}


def test_first_run_nested_structure(experiment: dict[str, Any]) -> None:
    tracker, snapshot = experiment["tracker"], experiment["snapshot"]
    parent = experiment["first_cb"].parent_run_id
    assert len(snapshot) == len(LRS) + 1
    statuses = {float(r.data.params["optim.lr"]): r.info.status for r in snapshot.values()}
    assert statuses == {**{lr: "FINISHED" for lr in LRS}, FAIL_LR: "FAILED"}
    assert all(r.data.tags[tracking.TAG_PARENT_RUN_ID] == parent for r in snapshot.values())
    # concurrency really happened: at least two child runs were open at the same time
    spans = sorted((r.info.start_time, r.info.end_time) for r in snapshot.values())
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_one_parent_n_children_after_restore(experiment: dict[str, Any]) -> None:
    tracker = experiment["tracker"]
    parents = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`{tracking.TAG_EXPERIMENT_ID}` = '{experiment['key']}'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == experiment["first_cb"].parent_run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.params["num_samples"] == "4"
    assert parent.data.tags["search_space"] == "p3d"
    assert tracking.TAG_GIT_COMMIT in parent.data.tags and tracking.TAG_VERSION in parent.data.tags
    children = tracker.client.search_runs([tracker.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(LRS) + 1
    assert set(experiment["snapshot"]) == {c.info.run_id for c in children}  # resumed, not duplicated


def test_every_metric_at_every_step(experiment: dict[str, Any]) -> None:
    tracker = experiment["tracker"]
    for lr, run in _child_by_lr(tracker, experiment["first_cb"].parent_run_id).items():
        assert run.info.status == "FINISHED", lr
        for key in NUMERIC_KEYS:
            history = tracker.client.get_metric_history(run.info.run_id, key)
            got = sorted((m.step, m.value) for m in history)
            want = [(epoch, float(expected(lr, epoch)[key])) for epoch in range(1, EPOCHS + 1)]
            assert [s for s, _ in got] == [s for s, _ in want], (lr, key)  # each step once, none missing
            assert all(math.isclose(g, w) for (_, g), (_, w) in zip(got, want)), (lr, key)
        metrics = run.data.metrics
        assert "time_total_s" in metrics and "training_iteration" not in metrics and "pid" not in metrics


def test_params_tags_artifacts(experiment: dict[str, Any], tmp_path: Path) -> None:
    from autovid.nas.genotype import Genotype

    tracker = experiment["tracker"]
    last_genotype = _genotypes()[EPOCHS % 2]
    for lr, run in _child_by_lr(tracker, experiment["first_cb"].parent_run_id).items():
        run_id = run.info.run_id
        assert run.data.params == {"optim.lr": str(lr), "model.channels": "8", "model.cells": "2"}
        tags = run.data.tags
        assert tags[tracking.TAG_GENOTYPE_HASH] == Genotype.from_json(last_genotype).hash
        assert tags["search_space"] == "p3d" and tags[tracking.TAG_TRIAL_ID]
        names = {f.path for f in tracker.client.list_artifacts(run_id)}
        assert names >= {"genotype.json", "genotype.png", "alpha_history.parquet", "alpha_history.png", "alpha_history_trajectory.png",
                         "config.yaml"}, (lr, names)
        text = Path(tracker.client.download_artifacts(run_id, "genotype.json", str(tmp_path / run_id))).read_text()
        assert Genotype.from_json(text) == Genotype.from_json(last_genotype)
        table = pd.read_parquet(tracker.client.download_artifacts(run_id, "alpha_history.parquet",
                                                                  str(tmp_path / run_id)))
        # the resumed trial keeps its epoch-1 α from before the failure
        assert sorted(table["epoch"].unique()) == list(range(1, EPOCHS + 1)), lr
        assert len(table) == EPOCHS * EDGES * len(OPS)


def test_callback_pickles_without_client(experiment: dict[str, Any]) -> None:
    cb = experiment["first_cb"]
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(cb))
    assert clone._tracker is None and clone.experiment_key == cb.experiment_key
    state = cb.get_state()
    fresh = MLflowTrialCallback(experiment["uri"], "tune-test", "study")
    fresh.set_state(state)
    assert fresh.parent_run_id == cb.parent_run_id and fresh.run_ids == cb.run_ids


def test_tracking_failure_is_only_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cb = MLflowTrialCallback(f"sqlite:///{blocker}/sub/mlflow.db", "x", "study")  # cannot be created
    with caplog.at_level("WARNING"):
        cb.setup()
    assert cb.parent_run_id is None
    assert any("MLflow tracking" in r.getMessage() for r in caplog.records)


def test_resume_finds_runs_by_tag_without_state(experiment: dict[str, Any]) -> None:
    """A callback with only the experiment key (no saved state) reattaches to the same runs by tag."""
    from ray.tune.experiment import Trial

    tracker, parent = experiment["tracker"], experiment["first_cb"].parent_run_id
    run = _child_by_lr(tracker, parent)[LRS[0]]
    trial = Trial("search_trainable", config={"lr": LRS[0]}, trial_id=run.data.tags[tracking.TAG_TRIAL_ID],
                  stub=True)
    cb = MLflowTrialCallback(experiment["uri"], "tune-test", "study", experiment_key=experiment["key"])
    cb.setup()
    assert cb.parent_run_id == parent
    cb.on_trial_start(iteration=0, trials=[trial], trial=trial)
    assert cb.run_ids == {trial.trial_id: run.info.run_id}
    # a step replayed from an older checkpoint is not logged twice
    cb.on_trial_result(iteration=0, trials=[trial], trial=trial,
                       result={**expected(LRS[0], EPOCHS), "training_iteration": EPOCHS})
    assert len(tracker.client.get_metric_history(run.info.run_id, "val/acc")) == EPOCHS
    assert len(tracker.children(parent)) == len(LRS) + 1
    cb.on_experiment_end(trials=[trial])
