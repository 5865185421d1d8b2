"""autovid.tracking against a real MLflow store on a temporary SQLite file."""

from __future__ import annotations

import json
import math
import os
import socket
import stat
from pathlib import Path

import pandas as pd
import pytest

from autovid import tracking
from autovid.tracking import Tracker

OPS = ["zero", "skip", "max_pool_3", "avg_pool_3", "conv_1", "conv_3", "sep_conv_3", "dil_conv_3"]


def _genotype_json() -> str:
    from autovid.nas.genotype import Genotype

    g = Genotype("module", normal=(("conv_3", 0), ("sep_conv_3", 0), ("skip", 1),
                                   ("dil_conv_3", 1), ("max_pool_3", 2)), normal_concat=(1, 2, 3))
    return g.to_json()


def _alphas(epoch: int, edges: int = 6) -> str:
    rows = []
    for e in range(edges):
        raw = [math.exp(0.1 * (i + 1) * (e + 1) * epoch) for i in range(len(OPS))]
        rows.append([w / sum(raw) for w in raw])
    return json.dumps({"ops": OPS, "normal": rows, "reduce": None})


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    db = tmp_path_factory.mktemp("mlflow") / "sub" / "mlflow.db"  # parent folder created by Tracker
    return Tracker(f"sqlite:///{db}", "tracking-test")


def _artifacts(tracker: Tracker, run_id: str) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(run_id)}


def test_experiment_reused_and_artifacts_beside_db(tracker: Tracker) -> None:
    again = Tracker(tracker.tracking_uri, "tracking-test")
    assert again.experiment_id == tracker.experiment_id
    db = tracking.sqlite_path(tracker.tracking_uri)
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location == (db.resolve().parent / "mlruns").as_uri()


def test_parent_child_nesting(tracker: Tracker) -> None:
    parent = tracker.start_parent("study", {"num_samples": 4}, {"search_space": "p3d"})
    kids = [tracker.start_child(parent, f"trial_{i}", {"lr": 0.1 * (i + 1)}, {"autovid.trial_id": f"t{i}"})
            for i in range(3)]
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in runs} == set(kids)
    assert set(tracker.children(parent)) == set(kids)
    child = tracker.client.get_run(kids[1])
    assert child.data.params["lr"] == "0.2"
    assert child.info.run_name == "trial_1"
    assert tracker.client.get_run(parent).data.tags["search_space"] == "p3d"
    for run_id in kids:
        tracker.end(run_id, "FINISHED")
    tracker.end(parent, "KILLED")
    assert tracker.client.get_run(parent).info.status == "KILLED"
    assert tracker.client.get_run(kids[0]).info.status == "FINISHED"
    with pytest.raises(ValueError, match="unknown run status"):
        tracker.end(parent, "DONE")


def test_metrics_with_steps_numeric_only(tracker: Tracker) -> None:
    run_id = tracker.start_parent("metrics")
    for step in (1, 2, 3):
        logged = tracker.log_metrics(run_id, {"train/loss": 1.0 / step, "val/acc": 0.1 * step, "epoch": step,
                                              "collapse/flag": 0, "genotype": "{}", "done": False,
                                              "bad": float("nan"), "inf": float("inf"), "nested": {"a": 1}},
                                     step=step)
        assert set(logged) == {"train/loss", "val/acc", "epoch", "collapse/flag"}
    history = tracker.client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert tracker.last_step(run_id, "val/acc") == 3
    assert tracker.last_step(run_id, "never") is None
    assert tracker.last_steps(run_id) == {"train/loss": 3, "val/acc": 3, "epoch": 3, "collapse/flag": 3}
    assert tracker.status(run_id) == "RUNNING"
    metrics = tracker.client.get_run(run_id).data.metrics
    assert "bad" not in metrics and "inf" not in metrics and "done" not in metrics


def test_params_flattened_and_chunked(tracker: Tracker) -> None:
    params = {f"p{i:03d}": i for i in range(180)}
    params["model"] = {"channels": 8, "cells": {"normal": 2}}
    params["ops"] = ["conv_3", "skip"]
    params["long"] = "x" * 7000
    run_id = tracker.start_parent("params", params)
    logged = tracker.client.get_run(run_id).data.params
    assert len(logged) == 184
    assert logged["p179"] == "179" and logged["model.channels"] == "8" and logged["model.cells.normal"] == "2"
    assert json.loads(logged["ops"]) == ["conv_3", "skip"]
    assert len(logged["long"]) == tracking.MAX_PARAM_VALUE_LEN
    tracker.log_params(run_id, {"p000": 0})  # same value again: idempotent


def test_artifacts_genotype_alpha_table(tracker: Tracker, tmp_path: Path) -> None:
    run_id = tracker.start_parent("artifacts")
    genotype = _genotype_json()
    assert tracker.log_genotype(run_id, genotype) is True
    history = [row for epoch in (1, 2, 3) for row in tracking.alpha_rows(_alphas(epoch), epoch)]
    df = tracker.log_alpha_history(run_id, history)
    assert len(df) == 3 * 6 * len(OPS)
    tracker.log_table(run_id, pd.DataFrame({"trial": ["a", "b"], "val/acc": [0.5, 0.6]}), "summary")
    tracker.log_dict(run_id, {"lr": 0.1, "model": {"channels": 8}}, "config.yaml")
    tracker.log_text(run_id, "hello", "notes/readme.txt")
    (tmp_path / "state.txt").write_text("weights")
    tracker.log_artifact(run_id, tmp_path / "state.txt", "model")
    assert _artifacts(tracker, run_id) >= {
        "genotype.json",
        "genotype.png",
        "alpha_history.parquet",
        "alpha_history_trajectory.png",
        "alpha_history.png",
        "summary.parquet",
        "config.yaml",
        "notes",
        "model",
    }
    local = Path(tracker.client.download_artifacts(run_id, "alpha_history.parquet", str(tmp_path)))
    table = pd.read_parquet(local)
    assert list(table.columns) == list(tracking.ALPHA_COLUMNS)
    assert sorted(table["epoch"].unique()) == [1, 2, 3]
    assert set(table["cell"]) == {"normal"} and set(table["op"]) == set(OPS)
    sums = table.groupby(["epoch", "edge"])["weight"].sum()
    assert sums.between(0.999, 1.001).all()
    from autovid.nas.genotype import Genotype

    text = Path(tracker.client.download_artifacts(run_id, "genotype.json", str(tmp_path))).read_text()
    assert Genotype.from_json(text) == Genotype.from_json(genotype)
    assert tracker.client.get_run(run_id).data.tags[tracking.TAG_GENOTYPE_HASH] == Genotype.from_json(genotype).hash
    png = Path(tracker.client.download_artifacts(run_id, "genotype.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_run_for_resume(tracker: Tracker) -> None:
    parent = tracker.start_parent("resume", tags={tracking.TAG_EXPERIMENT_ID: "exp-42"})
    child = tracker.start_child(parent, "t0", tags={tracking.TAG_TRIAL_ID: "abc_00000"})
    other_parent = tracker.start_parent("other", tags={tracking.TAG_EXPERIMENT_ID: "exp-43"})
    tracker.start_child(other_parent, "t0", tags={tracking.TAG_TRIAL_ID: "abc_00000"})
    tracker.end(child, "KILLED")
    assert tracker.find_run(tracking.TAG_EXPERIMENT_ID, "exp-42") == parent
    assert tracker.find_run(tracking.TAG_TRIAL_ID, "abc_00000", parent_id=parent) == child
    assert tracker.find_run(tracking.TAG_TRIAL_ID, "nope", parent_id=parent) is None
    assert tracker.find_run(tracking.TAG_EXPERIMENT_ID, "exp-missing") is None
    tracker.reopen(child)
    assert tracker.client.get_run(child).info.status == "RUNNING"


def test_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = tracking.default_tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.sqlite_path(uri) == tmp_path.resolve() / "mlflow.db"
    assert tracking.sqlite_path("sqlite:///rel/x.db") == Path("rel/x.db")
    assert tracking.sqlite_path("http://127.0.0.1:5000") is None
    cmd = tracking.ui_command(uri)
    assert cmd[1:4] == ["-m", "mlflow", "ui"] and cmd[-4:] == ["--host", "127.0.0.1", "--port", "5000"]
    assert uri in cmd
    tags = tracking.standard_tags(search_space="p3d", genotype_hash="abc")
    commit = tags[tracking.TAG_GIT_COMMIT]
    assert commit == "unknown" or len(commit) == 40
    assert tags[tracking.TAG_VERSION] and tags["search_space"] == "p3d" and tags["genotype_hash"] == "abc"
    assert tracking.git_commit(tmp_path) == "unknown"  # not a repository
    assert tracking.flatten_params({"a": {"b": None, "c": (1, 2)}}) == {"a.b": "None", "a.c": "[1, 2]"}


# -- an unusable store fails at once ---------------------------------------------------------------------
def test_sqlite_file_that_is_not_a_database_fails_at_once(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database " * 64)
    with pytest.raises(tracking.TrackingUnavailable, match="not a database"):
        tracking.check_store(f"sqlite:///{db}")
    # raised by the check, before MLflow's own ten retries of opening the engine
    with pytest.raises(tracking.TrackingUnavailable):
        Tracker(f"sqlite:///{db}", "x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(tracking.TrackingUnavailable, match="cannot create"):
        Tracker(f"sqlite:///{blocker}/sub/mlflow.db", "x")
    tracking.check_store("http://127.0.0.1:1")  # only SQLite is checked up front
    tracking.check_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # a new database may be created
    assert not (tmp_path / "new" / "mlflow.db").exists() and not list((tmp_path / "new").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_folder_fails_at_once(tmp_path: Path) -> None:
    locked = tmp_path / "cwd"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(tracking.TrackingUnavailable, match="not writable"):
            Tracker(f"sqlite:///{locked / 'mlflow.db'}", "x")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_store_unavailable_tells_an_outage_from_a_rejected_value(tracker: Tracker) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    with tracking.fail_fast(), pytest.raises(MlflowException) as refused:
        MlflowClient(f"http://127.0.0.1:{port}").get_experiment_by_name("x")
    assert tracking.store_unavailable(refused.value)
    run_id = tracker.start_parent("rejected", {"lr": 0.1})
    with pytest.raises(MlflowException) as rejected:  # a param may not change its value
        tracker.log_params(run_id, {"lr": 0.2})
    assert not tracking.store_unavailable(rejected.value)
    assert not tracking.store_unavailable(ValueError("bad genotype"))
    assert tracking.store_unavailable(tracking.TrackingUnavailable("down"))
    line = tracking.describe(refused.value)
    assert line.startswith("MlflowException: API request to") and "\n" not in line and len(line) <= 300


def test_fail_fast_bounds_http_retries_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in tracking.FAIL_FAST_HTTP_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    with tracking.fail_fast():
        with tracking.fail_fast():  # nested: the outer block's values stay
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"  # the user's value wins
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
