"""Both trainables pass Ray's own save/restore check, and a restored actor continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.tune.utils import validate_save_restore

from autovid.data.backends import DECODER_BACKEND_PARAM
from autovid.data.backends import resolve as resolve_decoder
from autovid.engine.preflight import example_genotype
from autovid.tune.trainables import BASE_KEY, GENOTYPE_KEY, SearchTrainable, TrainTrainable, resolved_params
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("trainable", [SearchTrainable, TrainTrainable])
def test_validate_save_restore_and_exact_continuation(tmp_path: Path, module_ray, trainable: type) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 6, "warmup_epochs": 1},
                      train={"epochs": 6, "channels": 4, "cells": 2})
    config = {BASE_KEY: cfg.model_dump(mode="json")}
    if trainable is TrainTrainable:
        config[GENOTYPE_KEY] = example_genotype(cfg)
    assert validate_save_restore(trainable, config)

    # beyond Ray's check (iteration counts): the restored actor reports what the uninterrupted one does
    actor = ray.remote(trainable)
    first, second = actor.remote(config=config), actor.remote(config=config)
    for _ in range(3):
        ray.get(first.train.remote())
    ray.get(second.restore.remote(first.save.remote()))
    key = "val/acc" if trainable is SearchTrainable else "test/acc"
    a, b = ray.get(first.train.remote()), ray.get(second.train.remote())
    assert a["training_iteration"] == b["training_iteration"] == 4
    assert (a[key], a["train/loss"]) == (b[key], b["train/loss"])


def test_mlflow_params_name_the_decoder_backend(tmp_path: Path) -> None:
    """A trial's MLflow params carry data.decoder as configured and the backend it resolved to."""
    cfg = tiny_config(tmp_path)
    params = resolved_params({BASE_KEY: cfg.model_dump(mode="json")})
    assert params["data.decoder"] == "auto" and params[DECODER_BACKEND_PARAM] == resolve_decoder("auto")
    pinned = resolved_params({BASE_KEY: cfg.model_dump(mode="json"), "data.decoder": "pyav"})
    assert pinned["data.decoder"] == pinned[DECODER_BACKEND_PARAM] == "pyav"


def test_a_reused_actor_runs_the_next_trial_from_scratch(tmp_path: Path, module_ray) -> None:
    """tune.reuse_actors: the actor of a finished trial, reset with the next trial's config, reports what a fresh
    actor for that config reports (same network, epoch 1), nothing of the trial before."""
    cfg = tiny_config(tmp_path, search={"epochs": 3, "warmup_epochs": 1})
    first = {BASE_KEY: cfg.model_dump(mode="json"), "model.cells": 1}
    second = {BASE_KEY: cfg.model_dump(mode="json"), "model.cells": 2, "search.w_lr": 0.05}
    actor = ray.remote(SearchTrainable)
    reused, fresh = actor.remote(config=first), actor.remote(config=second)
    for _ in range(2):
        ray.get(reused.train.remote())
    assert ray.get(reused.reset.remote(second))
    a, b = ray.get(reused.train.remote()), ray.get(fresh.train.remote())
    assert a["training_iteration"] == b["training_iteration"] == 1 and a["epoch"] == b["epoch"] == 1
    assert (a["val/acc"], a["train/loss"], a["genotype/params"]) == (
        b["val/acc"],
        b["train/loss"],
        b["genotype/params"],
    )
