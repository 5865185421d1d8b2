"""A study of 64 short trials, 16 reporting at once, its driver killed with SIGKILL a third of the way, resumed.

Then every trial of the finished study has one MLflow run (SQLite) holding each reported metric once per step,
and one COMPLETE trial in the Optuna journal with its value; the runs of trials lost with the killed driver keep
what they reported and are closed (none left RUNNING), and no journal trial stays RUNNING."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from autovid import tracking
from autovid.config import ExperimentConfig
from autovid.tune.mlflow_callback import RAY_BOOKKEEPING_KEYS, TAG_ORPHANED
from autovid.tune.resume_logs import ORPHAN_ATTR
from tests.tiny import tiny_config
from tests.tune.test_resume import _cli

pytestmark = [pytest.mark.slow, pytest.mark.load]

TRIALS = 64
CONCURRENT = 16  # 16 trials of 1/8 CPU each share the 2 cores
EPOCHS = 2
KILL_AFTER = 20  # trials finished before the kill (the study is then about a third done)
TINY_DATA = {"dataset": "synthetic", "num_segments": 2, "frames_per_segment": 2, "crop_size": 24, "batch_size": 8,
             "synthetic": {"classes": 2, "videos_per_class": 4, "groups": 4, "test_groups": 1, "size": 32,
                           "frames": 8}}


def _reports(trial_dir: Path) -> list[dict]:
    """The rows of a trial's result.json (a line cut short by the kill is skipped)."""
    path = trial_dir / "result.json"
    rows = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _progress(exp_dir: Path) -> tuple[int, int]:
    """(trials finished, trials between their first and last epoch) as the trial logs tell."""
    epochs = [max((r.get("training_iteration", 0) for r in _reports(t)), default=0) for t in exp_dir.glob("trial_*")]
    return sum(e >= EPOCHS for e in epochs), sum(0 < e < EPOCHS for e in epochs)


def _reported_keys(row: dict) -> set[str]:
    """The keys of a report that MLflow must hold at its training_iteration (what the callback logs)."""
    return set(tracking.numeric_metrics({k: v for k, v in row.items() if k not in RAY_BOOKKEEPING_KEYS}))


@pytest.fixture
def process_groups() -> Iterator[list[subprocess.Popen]]:
    """Drivers started by the test; whatever is left of them (and of their Ray) is killed at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.timeout(2400)  # a hang guard for a loaded 2-core machine, not a timing assertion
def test_64_trials_killed_and_resumed_lose_and_duplicate_nothing(tmp_path: Path,
                                                                 process_groups: list[subprocess.Popen]) -> None:
    cfg = tiny_config(
        tmp_path,
        # the smallest study that still searches: 2 classes of 4 short videos, 2 epochs (the kill lands between)
        data={**TINY_DATA, "cache_dir": str(tmp_path / "cache")},
        search={"epochs": EPOCHS, "warmup_epochs": 1},
        tune={"num_samples": TRIALS, "max_concurrent_trials": CONCURRENT, "scheduler": {"name": "none"},
              "resources": {"cpu": 2 / CONCURRENT}, "reuse_actors": True,  # 16 worker starts, not 64+
              "param_space": {"search.w_lr": {"type": "loguniform", "low": 0.001, "high": 0.1}}},
    )
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(cfg.to_yaml())
    exp_dir = tmp_path / "runs" / "tiny"

    driver = _cli("tune", str(config_path), "--no-retrain", cwd=tmp_path)
    process_groups.append(driver)
    deadline = time.monotonic() + 900
    while True:  # kill once KILL_AFTER trials have finished and some are between epochs
        assert time.monotonic() < deadline, "the study did not reach the kill point in time"
        assert driver.poll() is None, driver.stdout.read()
        finished, midway = _progress(exp_dir)
        if finished >= KILL_AFTER and midway:
            break
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _progress(exp_dir)[0] < TRIALS

    resumed = _cli("tune", str(config_path), "--no-retrain", "--resume", cwd=tmp_path)
    process_groups.append(resumed)
    output, _ = resumed.communicate(timeout=1500)
    assert resumed.returncode == 0, output
    check_nothing_lost(cfg, exp_dir)


def check_nothing_lost(cfg: ExperimentConfig, exp_dir: Path) -> None:
    """The finished study's MLflow runs and Optuna journal against its trial logs (see the module docstring)."""
    summary = pd.read_csv(exp_dir / "summary.csv")
    assert len(summary) == TRIALS and set(summary["status"]) == {"OK"}, summary
    trials = set(summary["trial"])

    # MLflow: one child run per trial, every reported key at every step exactly once
    tracker = tracking.Tracker(cfg.tracking.uri, cfg.tracking.experiment)
    parent = tracker.find_run(tracking.TAG_EXPERIMENT_ID, str(exp_dir))
    assert parent is not None and tracker.status(parent) == "FINISHED"
    runs = [tracker.client.get_run(r) for r in tracker.children(parent)]
    by_trial: dict[str, list] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags[tracking.TAG_TRIAL_ID], []).append(run)
        for key in run.data.metrics:  # no step twice, in any run
            steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (run.data.tags[tracking.TAG_TRIAL_ID], key, steps)
    assert trials <= set(by_trial)
    assert all(len(by_trial[t]) == 1 for t in by_trial), {t: len(r) for t, r in by_trial.items() if len(r) > 1}
    for trial in sorted(trials):
        run = by_trial[trial][0]
        assert run.info.status == "FINISHED", (trial, run.info.status)
        want: dict[str, set[int]] = {}
        rows = _reports(exp_dir / f"trial_{trial}")
        assert sorted(int(r["training_iteration"]) for r in rows) == list(range(1, EPOCHS + 1)), trial
        for row in rows:
            for key in _reported_keys(row):
                want.setdefault(key, set()).add(int(row["training_iteration"]))
        assert set(run.data.metrics) == set(want), (trial, set(run.data.metrics) ^ set(want))
        for key, steps in want.items():
            logged = [m.step for m in tracker.client.get_metric_history(run.info.run_id, key)]
            assert sorted(logged) == sorted(steps), (trial, key, logged)  # (α losses start after the warm-up)
    # trials the killed driver started after its last snapshot, which the resumed study replaced: their runs
    # keep what they reported, finished or closed as KILLED, never left RUNNING
    lost = {t: by_trial[t][0] for t in set(by_trial) - trials}
    for trial, run in lost.items():
        assert run.info.status == "FINISHED" or (run.info.status == "KILLED"
                                                 and run.data.tags.get(TAG_ORPHANED) == "true"), trial

    # Optuna: each trial of the study told once as COMPLETE with its value; the killed driver's other asks are
    # trials that finished before it died (their runs are in MLflow) or closed as FAIL
    import optuna

    from autovid.tune.study import load_study

    study = load_study(exp_dir, cfg.name)
    assert study is not None
    complete = {t.params["search.w_lr"]: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(ORPHAN_ATTR) for t in others), others
    for lr, objective in zip(summary["search.w_lr"], summary["objective"], strict=True):
        told = [v for p, v in complete.items() if math.isclose(p, lr)]
        assert len(told) == 1 and math.isclose(told[0], objective), (lr, objective, told)
    finished_lost = [float(r.data.params["search.w_lr"]) for r in lost.values() if r.info.status == "FINISHED"]
    assert len(complete) == TRIALS + len(finished_lost)
    assert all(any(math.isclose(p, lr) for lr in finished_lost + list(summary["search.w_lr"])) for p in complete)
