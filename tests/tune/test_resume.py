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


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "autovid.cli", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_driver_killed(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        search={"epochs": 3, "warmup_epochs": 1},
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
        if len(trials) == 2 and any(len(_results(t)) == 3 for t in trials) and any(
            list(t.glob("checkpoint_*")) and len(_results(t)) < 3 for t in trials
        ):
            break
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.5)
    else:
        pytest.fail("the experiment did not reach the kill point in time")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {t.name: len(_results(t)) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    finished_before = [name for name, n in before.items() if n == 3]

    resumed = _cli("tune", str(config_path), "--no-retrain", "--resume", cwd=tmp_path)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output

    after = {t.name: _results(t) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    assert set(after) == set(before)  # the same two trials: none lost, none added
    for name, rows in after.items():
        assert rows[-1]["training_iteration"] == 3 and rows[-1]["epoch"] == 3
        if name in finished_before:
            assert len(rows) == 3  # a finished trial is not run again
        else:
            assert rows[-1]["iterations_since_restore"] < 3  # continued from its checkpoint, not from epoch 0
    journal = exp_dir / "optuna.journal"
    assert journal.exists() and journal.stat().st_size > 0
