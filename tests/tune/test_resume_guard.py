"""`--resume` restores or refuses: a damaged experiment state never silently restarts the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from autovid.errors import UserError
from autovid.tune.experiment import ResumeError
from autovid.tune.runner import run_search_experiment
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory: pytest.TempPathFactory):
    """One finished single-trial search (no retrain), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("guard")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = tiny_config(tmp, search={"epochs": 1, "warmup_epochs": 0}, tune={"scheduler": {"name": "none"}})
    outcome = run_search_experiment(cfg, retrain=False)
    assert set(outcome.summary["status"]) == {"OK"}
    yield cfg, Path(outcome.experiment_path)
    ray.shutdown()


def _trial_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("trial_*"))


def _damage(path: Path, text: str) -> tuple[Path, str]:
    state = sorted(path.glob("experiment_state-*.json"))[-1]
    original = state.read_text()
    state.write_text(text)
    return state, original


def test_truncated_state_is_refused_with_one_line(finished_experiment) -> None:
    cfg, path = finished_experiment
    before = _trial_folders(path)
    state, original = _damage(path, "")
    state.write_text(original[: len(original) // 2])  # what a full disk leaves behind
    try:
        with pytest.raises(UserError, match=r"experiment state experiment_state-.*\.json is damaged") as err:
            run_search_experiment(cfg, resume=True, retrain=False)
        assert "\n" not in str(err.value)
    finally:
        state.write_text(original)
    assert _trial_folders(path) == before


def test_state_tune_cannot_load_stops_instead_of_restarting(finished_experiment) -> None:
    cfg, path = finished_experiment
    before = _trial_folders(path)
    summary = (path / "summary.csv").read_text()
    state, original = _damage(path, json.dumps({"trial_data": []}))  # valid JSON, not a Tune snapshot
    try:
        with pytest.raises(ResumeError, match="could not load its saved state"):
            run_search_experiment(cfg, resume=True, retrain=False)
    finally:
        state.write_text(original)
    assert _trial_folders(path) == before  # no fresh trial was started
    assert (path / "summary.csv").read_text() == summary


def test_intact_state_resumes(finished_experiment) -> None:
    cfg, path = finished_experiment
    before = _trial_folders(path)
    outcome = run_search_experiment(cfg, resume=True, retrain=False)
    assert len(outcome.summary) == 1 and set(outcome.summary["status"]) == {"OK"}
    assert outcome.summary.loc[0, "epoch"] == 1  # the finished trial, restored, not trained again
    assert _trial_folders(path) == before


def test_a_diverged_retrain_fails_in_one_line(finished_experiment, tmp_path: Path) -> None:
    from autovid.engine.preflight import example_genotype
    from autovid.errors import RunFailed
    from autovid.tune.runner import run_retrain

    cfg, _ = finished_experiment
    cfg = cfg.with_overrides({"train.lr": 1e12, "train.grad_clip": 1e30, "train.epochs": 1, "tune.max_failures": 0})
    with pytest.raises(RunFailed, match=r"retraining failed: TrainingDiverged: training diverged in epoch 1") as err:
        run_retrain(cfg, example_genotype(cfg), name="diverges")
    assert "\n" not in str(err.value)
