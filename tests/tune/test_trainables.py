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
