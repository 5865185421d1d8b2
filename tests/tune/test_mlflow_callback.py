"""MLflowTrialCallback with a real Tuner (concurrent trials, an errored trial, Tuner.restore) and real MLflow;
an unavailable store (closed port, read-only folder, not a database) spooled once and replayed on resume."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import stat
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
from autovid.tune import runner
from autovid.tune.mlflow_callback import SPOOL_NAME, TAG_ORPHANED, MLflowTrialCallback, read_spool
from autovid.tune.stage import ParentRun

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
            "results": second, "root": root}


def _child_by_lr(tracker: tracking.Tracker, parent: str) -> dict[float, Any]:
    runs = [tracker.client.get_run(r) for r in tracker.children(parent)]
    return {float(r.data.params["optim.lr"]): r for r in runs}


@pytest.mark.slow
def test_first_run_nested_structure(experiment: dict[str, Any]) -> None:
    snapshot = experiment["snapshot"]
    parent = experiment["first_cb"].parent_run_id
    assert len(snapshot) == len(LRS) + 1
    statuses = {float(r.data.params["optim.lr"]): r.info.status for r in snapshot.values()}
    assert statuses == {**{lr: "FINISHED" for lr in LRS}, FAIL_LR: "FAILED"}
    assert all(r.data.tags[tracking.TAG_PARENT_RUN_ID] == parent for r in snapshot.values())
    # concurrency really happened: at least two child runs were open at the same time
    spans = sorted((r.info.start_time, r.info.end_time) for r in snapshot.values())
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
        assert names >= {
            "genotype.json",
            "genotype.png",
            "alpha_history.parquet",
            "alpha_history.png",
            "alpha_history_trajectory.png",
            "config.yaml",
        }, (lr, names)
        text = Path(tracker.client.download_artifacts(run_id, "genotype.json", str(tmp_path / run_id))).read_text()
        assert Genotype.from_json(text) == Genotype.from_json(last_genotype)
        table = pd.read_parquet(tracker.client.download_artifacts(run_id, "alpha_history.parquet",
                                                                  str(tmp_path / run_id)))
        # the resumed trial keeps its epoch-1 α from before the failure
        assert sorted(table["epoch"].unique()) == list(range(1, EPOCHS + 1)), lr
        assert len(table) == EPOCHS * EDGES * len(OPS)


@pytest.mark.slow
def test_callback_pickles_without_client(experiment: dict[str, Any]) -> None:
    cb = experiment["first_cb"]
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(cb))
    assert clone._tracker is None and clone.experiment_key == cb.experiment_key
    state = cb.get_state()
    fresh = MLflowTrialCallback(experiment["uri"], "tune-test", "study")
    fresh.set_state(state)
    assert fresh.parent_run_id == cb.parent_run_id and fresh.run_ids == cb.run_ids
    # the spool was placed in Tune's experiment folder from the first trial, and never needed
    spool = experiment["root"] / "runs" / "exp" / SPOOL_NAME
    assert state["spool_path"] == str(spool) and not spool.exists()


def test_tracking_failure_is_only_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cb = MLflowTrialCallback(f"sqlite:///{blocker}/sub/mlflow.db", "x", "study")  # cannot be created
    with caplog.at_level("WARNING"):
        cb.setup()
    assert cb.parent_run_id is None
    assert any("MLflow tracking" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
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


# -- an unavailable store: fail fast once, spool, replay ------------------------------------------------
CALLBACK_LOGGER = "autovid.tune.mlflow_callback"


def _stub(trial_id: str, lr: float) -> Any:
    from ray.tune.experiment import Trial

    return Trial("search_trainable", config={"lr": lr}, trial_id=trial_id, stub=True)


def _report(cb: MLflowTrialCallback, trial: Any, lr: float, epoch: int, scale: float = 1.0) -> None:
    """One epoch of the fake search, as Tune hands it to the callback (scale tells apart a replayed epoch)."""
    result = {**{k: v * scale for k, v in expected(lr, epoch).items()}, "training_iteration": epoch,
              "genotype": _genotypes()[epoch % 2], "genotype_hash": f"hash{epoch % 2}", "alphas": alphas(epoch),
              "pid": 1, "done": False}
    cb.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)


@pytest.fixture
def tracker_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Tracker construction (its URI), counted by a real Tracker subclass."""
    built: list[str] = []

    class CountingTracker(tracking.Tracker):
        def __init__(self, tracking_uri: str, experiment: str, **kwargs: Any) -> None:
            built.append(tracking_uri)
            super().__init__(tracking_uri, experiment, **kwargs)

    monkeypatch.setattr(tracking, "Tracker", CountingTracker)
    return built


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, read, closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _study_against(uri: str, spool: Path, caplog: pytest.LogCaptureFixture) -> MLflowTrialCallback:
    """A whole two-trial study (one completes, one is interrupted after two epochs) against `uri`."""
    cb = MLflowTrialCallback(uri, "tune-test", "study", config_resolver=resolve_params, spool_path=spool)
    done, cut = _stub("t_done", LRS[0]), _stub("t_cut", LRS[1])
    with caplog.at_level(logging.WARNING, logger=CALLBACK_LOGGER):
        cb.setup()
        for trial in (done, cut):
            cb.on_trial_start(iteration=0, trials=[done, cut], trial=trial)
        for epoch in range(1, EPOCHS + 1):
            _report(cb, done, LRS[0], epoch)
            if epoch < EPOCHS:
                _report(cb, cut, LRS[1], epoch)
        done.set_status(done.TERMINATED)
        cb.on_trial_complete(iteration=9, trials=[done, cut], trial=done)
        cut.set_status(cut.RUNNING)
        cb.on_experiment_end(trials=[done, cut])
    return cb


def _assert_spooled_once(cb: MLflowTrialCallback, builds: list[str], spool: Path,
                         caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    assert cb.offline
    assert len(builds) == 1  # one attempt at the store for the whole session, not one per hook
    warnings = [r for r in caplog.records if r.name == CALLBACK_LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "unavailable" in message and str(spool) in message and "\n" not in message
    events = read_spool(spool)
    assert [e["op"] for e in events] == ["start", "start"] + ["result"] * (2 * EPOCHS - 1) + ["finish", "end"]
    results = [e for e in events if e["op"] == "result" and e["trial"] == "t_done"]
    assert [e["step"] for e in results] == list(range(1, EPOCHS + 1))
    assert results[-1]["metrics"] == pytest.approx({k: float(v) for k, v in expected(LRS[0], EPOCHS).items()})
    assert "pid" not in results[-1]["metrics"] and "done" not in results[-1]["metrics"]
    finish = next(e for e in events if e["op"] == "finish")
    assert finish["status"] == "FINISHED" and sorted(finish["alphas"], key=int) == ["1", "2", "3"]
    assert events[0]["params"] == {"optim.lr": str(LRS[0]), "model.channels": "8", "model.cells": "2"}
    assert events[-1]["statuses"] == {"t_done": "TERMINATED", "t_cut": "RUNNING"}
    return events


def test_closed_port_fails_once_and_spools(tmp_path: Path, tracker_builds: list[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "exp" / SPOOL_NAME
    cb = _study_against(f"http://127.0.0.1:{_closed_port()}", spool, caplog)
    _assert_spooled_once(cb, tracker_builds, spool, caplog)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_sqlite_folder_fails_once_and_spools(tmp_path: Path, tracker_builds: list[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    locked = tmp_path / "cwd"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        spool = tmp_path / "exp" / SPOOL_NAME
        cb = _study_against(f"sqlite:///{locked / 'mlflow.db'}", spool, caplog)
        _assert_spooled_once(cb, tracker_builds, spool, caplog)
    finally:
        locked.chmod(stat.S_IRWXU)


def _histories(tracker: tracking.Tracker, run_id: str) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, key))
            for key in tracker.client.get_run(run_id).data.metrics}


def test_spool_replayed_on_resume_idempotently(tmp_path: Path, tracker_builds: list[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A store that is not a database spools the study; once the file is fixed, resuming replays it, twice
    if a replay was cut short, and MLflow ends with every step exactly once."""
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an SQLite database " * 64)
    uri, spool = f"sqlite:///{db}", tmp_path / "exp" / SPOOL_NAME
    cb = _study_against(uri, spool, caplog)
    _assert_spooled_once(cb, tracker_builds, spool, caplog)
    saved = tmp_path / "spool.copy"
    shutil.copy(spool, saved)

    db.unlink()  # the store is back
    histories: list[dict[str, Any]] = []
    for _ in range(2):  # the second replay stands for one cut short and replayed again
        resumed = ray.cloudpickle.loads(ray.cloudpickle.dumps(cb))  # what Tuner.restore does
        resumed.set_state(cb.get_state())
        resumed.setup()
        assert not resumed.offline and not spool.exists()
        tracker = tracking.Tracker(uri, "tune-test")
        parent = tracker.find_run(tracking.TAG_EXPERIMENT_ID, cb.experiment_key)
        assert parent == resumed.parent_run_id and tracker.status(parent) == "RUNNING"  # reopened by setup
        runs = {tracker.client.get_run(r).data.tags[tracking.TAG_TRIAL_ID]: r for r in tracker.children(parent)}
        assert set(runs) == {"t_done", "t_cut"} and resumed.run_ids == runs
        assert tracker.status(runs["t_done"]) == "FINISHED" and tracker.status(runs["t_cut"]) == "KILLED"
        done, cut = _histories(tracker, runs["t_done"]), _histories(tracker, runs["t_cut"])
        for key in NUMERIC_KEYS:
            assert [s for s, _ in done[key]] == list(range(1, EPOCHS + 1)), key
            assert [s for s, _ in cut[key]] == list(range(1, EPOCHS)), key
            assert math.isclose(done[key][-1][1], expected(LRS[0], EPOCHS)[key]), key
        names = {f.path for f in tracker.client.list_artifacts(runs["t_done"])}
        assert {"genotype.json", "alpha_history.parquet", "config.yaml"} <= names
        assert tracker.client.get_run(runs["t_done"]).data.params["optim.lr"] == str(LRS[0])
        histories.append({"done": done, "cut": cut})
        shutil.copy(saved, spool)
    assert histories[0] == histories[1]


def test_stale_state_after_restore_never_duplicates_steps(tmp_path: Path) -> None:
    """Tune restores the state of the last experiment snapshot, older than what MLflow holds: steps already in
    MLflow are not logged again, whatever that state says."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = MLflowTrialCallback(uri, "tune-test", "study", config_resolver=resolve_params)
    pickled = ray.cloudpickle.dumps(cb)  # as in the experiment folder: pickled before the run started
    trial = _stub("t0", LRS[0])
    cb.setup()
    cb.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for epoch in (1, 2):
        _report(cb, trial, LRS[0], epoch)
    stale = cb.get_state()  # the last snapshot Tune wrote before the driver was killed
    for epoch in (3, 4, 5):
        _report(cb, trial, LRS[0], epoch)

    for _ in range(2):  # resuming twice from the same stale snapshot changes nothing more
        resumed = ray.cloudpickle.loads(pickled)
        resumed.set_state({**stale, "last_step": {"t0": 2}})  # older snapshots also carried a stale last_step
        resumed.setup()
        resumed.on_trial_start(iteration=0, trials=[trial], trial=trial)
        for epoch in (3, 4, 5, 6):  # the trial restarts from its epoch-2 checkpoint, values now differ
            _report(resumed, trial, LRS[0], epoch, scale=2.0)
    trial.set_status(trial.TERMINATED)
    resumed.on_trial_complete(iteration=9, trials=[trial], trial=trial)
    resumed.on_experiment_end(trials=[trial])

    tracker = tracking.Tracker(uri, "tune-test")
    assert resumed.parent_run_id == cb.parent_run_id and resumed.run_ids == cb.run_ids
    run_id = cb.run_ids["t0"]
    for key in NUMERIC_KEYS:
        history = sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, key))
        assert [s for s, _ in history] == [1, 2, 3, 4, 5, 6], key  # one point per step
        for step, value in history:  # the first value logged for a step is the one MLflow keeps
            want = expected(LRS[0], step)[key] * (2.0 if step == 6 else 1.0)
            assert math.isclose(value, want), (key, step)
    assert tracker.status(run_id) == "FINISHED" and tracker.status(cb.parent_run_id) == "FINISHED"



def test_runs_of_trials_lost_with_the_killed_driver_are_closed(tmp_path: Path) -> None:
    """A trial the killed driver started after its last snapshot is unknown to the resumed study (Tune makes a new
    one in its place): its run is closed as KILLED and tagged, not left RUNNING for ever beside the others."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = MLflowTrialCallback(uri, "tune-test", "study", config_resolver=resolve_params)
    pickled = ray.cloudpickle.dumps(cb)
    kept, lost, successor = _stub("t0", LRS[0]), _stub("t1", LRS[1]), _stub("t2", LRS[2])
    cb.setup()
    cb.on_trial_start(iteration=0, trials=[kept], trial=kept)
    _report(cb, kept, LRS[0], 1)
    stale = cb.get_state()  # the last snapshot: t1 does not exist yet
    cb.on_trial_start(iteration=1, trials=[kept, lost], trial=lost)
    _report(cb, lost, LRS[1], 1)

    resumed = ray.cloudpickle.loads(pickled)
    resumed.set_state(stale)
    resumed.setup()
    for trial in (kept, successor):
        resumed.on_trial_start(iteration=0, trials=[kept, successor], trial=trial)
        _report(resumed, trial, trial.config["lr"], 1)
        trial.set_status(trial.TERMINATED)
        resumed.on_trial_complete(iteration=1, trials=[kept, successor], trial=trial)
    resumed.on_experiment_end(trials=[kept, successor])

    tracker = tracking.Tracker(uri, "tune-test")
    runs = {tracker.client.get_run(r).data.tags[tracking.TAG_TRIAL_ID]: tracker.client.get_run(r)
            for r in tracker.children(cb.parent_run_id)}
    assert {t: r.info.status for t, r in runs.items()} == {"t0": "FINISHED", "t1": "KILLED", "t2": "FINISHED"}
    assert runs["t1"].data.tags[TAG_ORPHANED] == "true" and TAG_ORPHANED not in runs["t0"].data.tags
    assert [m.step for m in tracker.client.get_metric_history(runs["t1"].info.run_id, "val/acc")] == [1]
    assert tracker.status(cb.parent_run_id) == "FINISHED"

# -- run summary on disk whatever the store does ----------------------------------------------------------
def _outcome(folder: Path) -> runner.TuneOutcome:
    summary = pd.DataFrame([{"trial": "t0", "status": "OK", "objective": 0.5, "val/acc": 0.5,
                             "genotype": _genotypes()[0]}])
    return runner.TuneOutcome(str(folder), summary, "t0", _genotypes()[0], {"lr": 0.1})


def _assert_outputs(folder: Path) -> None:
    table = pd.read_csv(folder / "summary.csv")
    assert list(table["trial"]) == ["t0"] and "genotype" not in table
    assert (folder / "best_genotype.json").read_text() == _genotypes()[0]
    assert sorted(p.name for p in folder.iterdir()) == ["best_genotype.json", "summary.csv"]  # no temp left


def test_summary_written_when_store_is_not_a_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"garbage " * 512)
    with caplog.at_level(logging.WARNING):
        tracker, parent = tracking.open_parent(f"sqlite:///{db}", "tune-test", "exp-key")
        assert tracker is None and parent is None
        outcome = _outcome(tmp_path / "exp")
        outcome.parent_run_id = parent
        written = ParentRun(tracker, parent)
        runner.write_outputs(outcome, written)
        assert written.tracker is None
    _assert_outputs(tmp_path / "exp")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "MLflow tracking" in r.getMessage()]
    assert len(warnings) == 1


def test_summary_written_when_store_breaks_after_training(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    early = tracking.Tracker(uri, "tune-test")
    early.start_parent("study", tags={tracking.TAG_EXPERIMENT_ID: "exp-key"})
    tracker, parent = tracking.open_parent(uri, "tune-test", "exp-key")
    assert tracker is not None and parent is not None
    db.write_bytes(b"garbage " * 4096)  # the database is destroyed while the experiment finishes
    outcome = _outcome(tmp_path / "exp")
    outcome.parent_run_id = parent
    written = ParentRun(tracker, parent)
    with caplog.at_level(logging.WARNING):
        runner.write_outputs(outcome, written)
        assert written.tracker is None  # no further MLflow calls after this one
    _assert_outputs(tmp_path / "exp")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "MLflow tracking" in r.getMessage()]
    assert len(warnings) == 1 and "summary.csv" in warnings[0].getMessage()


def test_summary_logged_to_mlflow_when_store_works(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.Tracker(uri, "tune-test").start_parent("study", tags={tracking.TAG_EXPERIMENT_ID: "exp-key"})
    tracker, parent = tracking.open_parent(uri, "tune-test", "exp-key")
    outcome = _outcome(tmp_path / "exp")
    outcome.parent_run_id = parent
    written = ParentRun(tracker, parent)
    runner.write_outputs(outcome, written)
    assert written.tracker is tracker
    _assert_outputs(tmp_path / "exp")
    assert {"summary.parquet", "best_genotype.json"} <= {f.path for f in tracker.client.list_artifacts(parent)}
    assert tracker.status(parent) == "FINISHED"


@pytest.mark.slow
def test_tuner_spools_while_store_is_broken_and_restore_replays(ray_local: Any, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A real Tuner against a database file that is not one: the study runs, its events go to the experiment
    folder; Tuner.restore after the file is fixed replays them, then logs the resumed trial on top."""
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an SQLite database " * 64)
    uri, flag = f"sqlite:///{db}", tmp_path / "let_it_pass"
    cb = MLflowTrialCallback(uri, "tune-test", "study", config_resolver=resolve_params)
    space = {"lr": tune.grid_search([LRS[0], FAIL_LR]), "flag": str(flag), "genotypes": _genotypes(),
             "rendezvous": str(tmp_path / "rendezvous")}
    tuner = tune.Tuner(
        search_trainable, param_space=space, tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "runs"), callbacks=[cb], verbose=0),
    )
    with caplog.at_level(logging.WARNING, logger=CALLBACK_LOGGER):
        first = tuner.fit()
    assert sum(r.error is not None for r in first) == 1
    warnings = [r for r in caplog.records if r.name == CALLBACK_LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    spool = tmp_path / "runs" / "exp" / SPOOL_NAME
    ops = [e["op"] for e in read_spool(spool)]
    assert ops.count("start") == 2 and ops.count("result") == EPOCHS + 1 and ops.count("finish") == 2
    assert ops[-1] == "end"

    db.unlink()  # the store is back
    flag.touch()
    second = tune.Tuner.restore(str(tmp_path / "runs" / "exp"), search_trainable, resume_errored=True).fit()
    assert all(r.error is None for r in second)
    assert not spool.exists()
    tracker = tracking.Tracker(uri, "tune-test")
    parent = tracker.find_run(tracking.TAG_EXPERIMENT_ID, cb.experiment_key)
    assert tracker.status(parent) == "FINISHED"
    runs = _child_by_lr(tracker, parent)
    assert set(runs) == {LRS[0], FAIL_LR}
    for lr, run in runs.items():
        assert run.info.status == "FINISHED", lr
        for key in NUMERIC_KEYS:
            history = sorted((m.step, m.value) for m in tracker.client.get_metric_history(run.info.run_id, key))
            assert [s for s, _ in history] == list(range(1, EPOCHS + 1)), (lr, key)
            assert all(math.isclose(v, expected(lr, s)[key]) for s, v in history), (lr, key)
