"""Kill the `autovid tune` driver with SIGKILL mid-experiment, resume it, and check nothing was lost or redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


EPOCHS = 4
SNAPSHOT_PERIOD_S = 2.0


def _safe_kill_point(exp_dir: Path, trial_dir: Path) -> bool:
    """The driver's experiment snapshot records the trial's newest checkpoint, and the next snapshot is far off.

    Checkpoints are written by the worker straight to storage; the snapshot that records them follows when the
    driver next syncs (every SNAPSHOT_PERIOD_S here). Killing before that would (rightly) restart the trial from
    scratch, and killing while a snapshot is being written can leave its files inconsistent: so kill within
    half a period after a snapshot that is newer than the checkpoint.
    """
    states = list(exp_dir.glob("experiment_state-*.json"))
    checkpoints = list(trial_dir.glob("checkpoint_*"))
    if not states or not checkpoints:
        return False
    snapshot = max(s.stat().st_mtime for s in states)
    newest_checkpoint = max(c.stat().st_mtime for c in checkpoints)
    return snapshot > newest_checkpoint + 0.3 and time.time() - snapshot < SNAPSHOT_PERIOD_S / 2


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    # a fixed snapshot period (Tune's "auto" can stretch to many seconds), so the kill point below is reached
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": str(SNAPSHOT_PERIOD_S)}
    return subprocess.Popen([sys.executable, "-m", "autovid.cli", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_driver_killed(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        search={"epochs": EPOCHS, "warmup_epochs": 1},
        tune={"num_samples": 2, "max_concurrent_trials": 1, "scheduler": {"name": "none"},
              "param_space": {"search.w_lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}},
    )
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(cfg.to_yaml())
    exp_dir = tmp_path / "runs" / "tiny"

    driver = _cli("tune", str(config_path), "--no-retrain", cwd=tmp_path)
    deadline = time.monotonic() + 300
    # Wait until the first trial has finished and the second has checkpointed at least one epoch.
    while time.monotonic() < deadline:
        trials = sorted(p for p in exp_dir.glob("*/") if p.is_dir() and (p / "result.json").exists())
        if len(trials) == 2 and any(len(_results(t)) == EPOCHS for t in trials) and any(
            len(_results(t)) < EPOCHS and _safe_kill_point(exp_dir, t) for t in trials
        ):
            break
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.5)
    else:
        pytest.fail("the experiment did not reach the kill point in time")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {t.name: len(_results(t)) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    finished_before = [name for name, n in before.items() if n == EPOCHS]

    resumed = _cli("tune", str(config_path), "--no-retrain", "--resume", cwd=tmp_path)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output

    after = {t.name: _results(t) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    assert set(after) == set(before)  # the same two trials: none lost, none added
    for name, rows in after.items():
        assert rows[-1]["training_iteration"] == EPOCHS and rows[-1]["epoch"] == EPOCHS
        if name in finished_before:
            assert len(rows) == EPOCHS  # a finished trial is not run again
        else:
            assert rows[-1]["iterations_since_restore"] < EPOCHS  # continued from its checkpoint, not from epoch 0
    journal = exp_dir / "optuna.journal"
    assert journal.exists() and journal.stat().st_size > 0
