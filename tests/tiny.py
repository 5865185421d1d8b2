"""A tiny experiment config shared by the end-to-end tests: real videos, real networks, seconds per epoch."""

from __future__ import annotations

import os
from pathlib import Path

from autovid.config import ExperimentConfig, validate_config


def tiny_config(tmp: Path, **sections: dict) -> ExperimentConfig:
    """4 motion classes of 16x... 32x32 videos, a 2-cell 4-channel supernet, 2 epochs everywhere."""
    data = {
        "dataset": "synthetic",
        # one synthetic dataset for the whole test session (see conftest.py); a run's own files stay in tmp
        "cache_dir": os.environ.get("AUTOVID_TEST_CACHE", str(tmp / "cache")),
        "synthetic": {"classes": 4, "videos_per_class": 8, "groups": 4, "test_groups": 1, "size": 32, "frames": 16},
        "num_segments": 2,
        "frames_per_segment": 2,
        "crop_size": 24,
        "batch_size": 8,
    }
    base: dict = {
        "name": "tiny",
        "storage_path": str(tmp / "runs"),
        "data": data,
        "model": {"channels": 4, "cells": 2},
        "search": {"epochs": 2, "warmup_epochs": 1},
        "train": {"epochs": 2, "channels": 4, "cells": 2},
        # no LoggedModel per retrain (a torch.export trace, seconds each): tests/tune/test_logged_model.py turns it on
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "tiny", "log_models": False},
        # a new trial on an idle actor (reset_config) skips a process start and torch's import: seconds per trial
        "tune": {"num_samples": 1, "max_concurrent_trials": 1, "reuse_actors": True},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return validate_config(base, source="tiny test config")


def with_clip_spec(**kwargs: object) -> dict:
    """Loose clip settings (num_segments=2, mode="dense", ...) folded into the `spec` a dataset or loader takes."""
    import dataclasses

    from autovid.data.sampling import ClipSpec

    fields = {f.name for f in dataclasses.fields(ClipSpec)}
    spec = ClipSpec(**{k: kwargs.pop(k) for k in list(kwargs) if k in fields})  # type: ignore[arg-type]
    return {**kwargs, "spec": spec}


# Ray's console output that `autovid` keeps from its users (autovid.tune.cluster): a line per checkpoint, a
# TensorBoard hint and configuration box, slow-setup advice, the warning that max_concurrent_trials is ignored
# (it was: a variant generator given to Tune takes the limit itself now), the note that token authentication is
# on (Ray's default, kept), and Tune's bottleneck and snapshot warnings (autovid.tune's __init__ says why).
RAY_NOISE = ("Checkpoint successfully created", "tensorboard --logdir", "Configuration for experiment",
             "Trainable.setup took", "max_concurrent_trials", "Wrote the latest version of all result files",
             "Token authentication is enabled", "may be a performance bottleneck", "snapshotting has been triggered")


def assert_quiet(output: str) -> None:
    """A CLI run's output shows autovid's progress and summary, and none of Ray's noise."""
    noise = [line for line in output.splitlines() if any(n in line for n in RAY_NOISE)]
    assert not noise, "\n".join(noise)
    assert " epoch " in output and "results: " in output, output[-3000:]  # progress lines, where results are
