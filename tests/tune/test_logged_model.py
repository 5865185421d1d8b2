"""A retrain's final network as an MLflow 3 LoggedModel: logged from the driver, loadable without unpickling,
linked to the retrain's final metrics, and registered under `--register NAME` (real MLflow, temporary SQLite)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import ray
import torch
import yaml
from mlflow.entities import LoggedModelStatus
from ray import tune

from autovid import cli, tracking
from autovid.engine.checkpoint import load_state
from autovid.engine.evaluation import trained_network
from autovid.engine.preflight import example_genotype
from autovid.engine.setup import clip_shape
from autovid.errors import UserError
from autovid.export import METADATA_KEY, model_metadata
from autovid.tune.runner import log_retrained_model, run_retrain, run_search_experiment
from autovid.tune.trainables import TrainTrainable
from tests.tiny import tiny_config


@pytest.mark.slow
def test_retrain_logs_a_loadable_model_linked_to_its_final_metrics_and_registers_it(
        tmp_path: Path, local_ray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config(tmp_path, train={"epochs": 1, "channels": 4, "cells": 2},
                      tracking={"log_models": True})
    final = run_retrain(cfg, example_genotype(cfg), name="tiny-train", register="tiny-net")
    assert final["mlflow_model"].startswith("models:/m-")
    assert final["registered_model"] == "models:/tiny-net/1"
    model_id = final["mlflow_model"].removeprefix("models:/")

    # the LoggedModel: produced by the retrain's child run, READY, carrying the run's final metrics
    client = mlflow.MlflowClient(cfg.tracking.uri)
    logged = client.get_logged_model(model_id)
    assert logged.status == LoggedModelStatus.READY and logged.model_type == tracking.MODEL_TYPE
    run = client.get_run(logged.source_run_id)
    assert run.data.tags[tracking.TAG_PARENT_RUN_ID]  # the nested child run of the retrain trial
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    linked = {m.key: m for m in logged.metrics}
    assert linked["test/acc"].value == pytest.approx(final["test/acc"])
    assert linked["test/loss"].value == pytest.approx(final["test/loss"])
    assert {m.step for m in linked.values()} == {1} and {m.run_id for m in linked.values()} == {run.info.run_id}
    assert logged.params["train.epochs"] == "1"  # the run's resolved config travels with the model

    # loaded back through MLflow without unpickling anything, it computes what the eager network does
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking.uri)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a pickled model would be refused
    loaded = mlflow.pytorch.load_model(final["mlflow_model"])
    state = load_state(final["checkpoint"])
    network, trained = trained_network(state)
    clips = torch.randn(3, *clip_shape(trained.data), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), network(clips))  # batch 3: the batch dimension is dynamic
        torch.testing.assert_close(loaded(clips[:1]), network(clips[:1]))

    info = mlflow.models.get_model_info(final["mlflow_model"])
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, *clip_shape(trained.data))
    assert tuple(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, len(state["class_names"]))
    meta = info.metadata[METADATA_KEY]  # the metadata `autovid export` writes beside a .pt2
    assert meta == json.loads(json.dumps(model_metadata(state)))
    assert meta["class_names"] == list(state["class_names"]) and meta["genotype"] == state["genotype"]
    assert meta["input"]["num_segments"] == cfg.data.num_segments and meta["input"]["crop_size"] == cfg.data.crop_size
    assert meta["input"]["normalization"]["mean"] == [0.45, 0.45, 0.45]
    assert json.loads(meta["genotype"])  # the architecture, as JSON

    # `autovid predict` takes the logged model as it takes the checkpoint
    video = next(Path(cfg.data.cache_dir).rglob("*.avi"))
    tops = []
    for i, model in enumerate((final["mlflow_model"], final["registered_model"], final["checkpoint"])):
        out = tmp_path / f"predictions{i}.csv"
        assert cli.main(["predict", model, str(video), "--tracking-uri", cfg.tracking.uri, "--out", str(out)]) == 0
        tops.append(out.read_text().splitlines()[1].split(",")[:3])  # video, rank 1, class
    assert tops[0] == tops[1] == tops[2]

    # the registry: version 1 from the retrain, a new version for every further registration
    version = client.get_model_version("tiny-net", "1")
    assert version.run_id == run.info.run_id and version.tags[tracking.TAG_MODEL_ID] == model_id
    with torch.no_grad():
        torch.testing.assert_close(mlflow.pytorch.load_model("models:/tiny-net/1")(clips), network(clips))
    tracker = tracking.Tracker(cfg.tracking.uri, cfg.tracking.experiment)
    assert tracker.register_model(model_id, "tiny-net") == 2
    assert {int(v.version) for v in client.search_model_versions("name = 'tiny-net'")} == {1, 2}
    listed = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert listed == [{"name": "tiny-net", "version": 1}, {"name": "tiny-net", "version": 2}]

    # a store that cannot be used costs one warning, never the experiment (its checkpoint is the result)
    result = tune.Tuner.restore(str(tmp_path / "runs" / "tiny-train"), trainable=TrainTrainable).get_results()[0]
    broken = tmp_path / "broken.db"
    broken.write_text("not a database")
    with caplog.at_level(logging.WARNING, logger="autovid.tune.runner"):
        logged_again = log_retrained_model(result, cfg, tracking_uri=f"sqlite:///{broken}", experiment_key="k",
                                           known_runs={}, register="tiny-net")
    assert logged_again == {}
    assert any("was not logged as an MLflow model" in r.getMessage() for r in caplog.records)
    assert {int(v.version) for v in client.search_model_versions("name = 'tiny-net'")} == {1, 2}
    # a resumed experiment (Tune's restored callbacks: the run found by its tags) finds the model it logged
    resumed = log_retrained_model(result, cfg, tracking_uri=cfg.tracking.uri, known_runs={},
                                  experiment_key=str((tmp_path / "runs" / "tiny-train").resolve()))
    assert resumed == {"mlflow_model": final["mlflow_model"]}
    assert len(client.search_logged_models([run.info.experiment_id])) == 1


@pytest.mark.parametrize("command", ["train", "tune"])
def test_register_name_is_checked_before_anything_runs(tmp_path: Path, command: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    genotype = tmp_path / "genotype.json"
    genotype.write_text(example_genotype(cfg))
    extra = ["--genotype", str(genotype)] if command == "train" else []
    assert cli.main([command, str(config), *extra, "--register", "a/b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--register 'a/b'" in err[0]
    assert not ray.is_initialized()  # refused before Ray started, not after a search or a retrain
    with pytest.raises(UserError, match="plain name"):
        run_search_experiment(cfg, register="models:/x")
    with pytest.raises(UserError, match="plain name"):
        run_retrain(cfg, None, name="n", register=".hidden")
    # a registered version is a logged model: with tracking.log_models off there is none to register
    with pytest.raises(UserError, match="tracking.log_models=true"):
        run_retrain(cfg.with_overrides({"tracking.log_models": False}), None, name="n", register="fine")


class _SignOfSum(torch.nn.Module):
    """Control flow on tensor values: torch.export cannot trace it into one graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if x.sum() > 0 else -x.flatten(1)


def test_log_network_links_the_metrics_of_one_step_and_marks_a_failed_export(tmp_path: Path) -> None:
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "models")
    client = tracker.client
    run_id = tracker.start_parent("retrain", {"train.epochs": 2})
    tracker.log_metrics(run_id, {"test/acc": 0.5}, step=1)
    tracker.log_metrics(run_id, {"test/acc": 0.75, "test/loss": 0.25}, step=2)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    clips = torch.zeros(2, 3, 4)

    last = client.get_logged_model(tracker.log_network(run_id, network, name="tiny.retrain", input_example=clips))
    assert last.name == "tiny-retrain"  # MLflow refuses '.' in LoggedModel names
    assert {m.key: (m.step, m.value) for m in last.metrics} == {"test/acc": (2, 0.75), "test/loss": (2, 0.25)}
    assert last.params == {"train.epochs": "2"}
    first = client.get_logged_model(tracker.log_network(run_id, network, name="epoch1", input_example=clips, step=1))
    assert {m.key: (m.step, m.value) for m in first.metrics} == {"test/acc": (1, 0.5)}
    # linking adds nothing to the run's own curves
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "test/acc")] == [(1, 0.5), (2, 0.75)]

    with pytest.raises(Exception):  # noqa: B017 - whatever torch.export raises, the model must not stay PENDING
        tracker.log_network(run_id, _SignOfSum(), name="branchy", input_example=torch.ones(2, 3, 4))
    models = client.search_logged_models([tracker.experiment_id])
    assert {m.name: m.status for m in models} == {
        "tiny-retrain": LoggedModelStatus.READY, "epoch1": LoggedModelStatus.READY, "branchy": LoggedModelStatus.FAILED}
    outputs = client.get_run(run_id).outputs.model_outputs
    assert {o.model_id: o.step for o in outputs} == {last.model_id: 2, first.model_id: 1}
    assert tracker.model_at(run_id, 2) == last.model_id and tracker.model_at(run_id, 3) is None
