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

from tests.faults import fault_env
from tests.tiny import assert_quiet, tiny_config

pytestmark = pytest.mark.slow


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


EPOCHS = 4
HOLD_EPOCH = 3  # each trial waits before this epoch, with HOLD_EPOCH - 1 epochs checkpointed
SNAPSHOT_PERIOD_S = 1.0


def _consistent_snapshot(exp_dir: Path, held: str, finished: str) -> bool:
    """The driver's newest experiment snapshot is whole and records what a resume needs.

    That is: the finished trial as TERMINATED, and the held trial's newest checkpoint (the one written after
    epoch HOLD_EPOCH - 1). Checked while the driver is stopped, so the files cannot change before the kill.
    """
    states = sorted(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return False
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError):  # stopped in the middle of a write: try again after the next one
        return False
    trials = {json.loads(state)["trial_id"]: json.dumps([state, metadata]) for state, metadata in trial_data}
    newest_checkpoint = f"checkpoint_{HOLD_EPOCH - 2:06d}"
    # Ray stores the checkpoint manager cloudpickled, as hex: look for the name in either form
    return (finished in trials and "TERMINATED" in trials[finished] and held in trials
            and any(form in trials[held] for form in (newest_checkpoint, newest_checkpoint.encode().hex())))


def _cli(*args: str, cwd: Path, hold: Path | None = None) -> subprocess.Popen:
    env = fault_env({**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": str(SNAPSHOT_PERIOD_S)},
                    hold=None if hold is None else (HOLD_EPOCH, hold))
    return subprocess.Popen([sys.executable, "-m", "autovid.cli", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_driver_killed(tmp_path: Path) -> None:
    """Deterministic kill point: trial 1 is released and finishes, trial 2 waits before epoch HOLD_EPOCH,
    and the driver is killed only while stopped (SIGSTOP) with a whole snapshot that records both."""
    cfg = tiny_config(
        tmp_path,
        search={"epochs": EPOCHS, "warmup_epochs": 1},
        tune={"num_samples": 2, "max_concurrent_trials": 1, "scheduler": {"name": "none"},
              "param_space": {"search.w_lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}},
    )
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(cfg.to_yaml())
    exp_dir = tmp_path / "runs" / "tiny"
    gate = tmp_path / "gate"
    gate.mkdir()

    driver = _cli("tune", str(config_path), "--no-retrain", cwd=tmp_path, hold=gate)
    deadline = time.monotonic() + 400
    first: str | None = None
    while True:
        assert time.monotonic() < deadline, "the experiment did not reach the kill point in time"
        assert driver.poll() is None, driver.stdout.read()
        held = sorted(p.name.removeprefix("held-") for p in gate.glob("held-*"))
        if held and first is None:
            first = held[0]
            (gate / f"release-{first}").touch()  # the first trial runs to its end
        second = next((t for t in held if t != first), None)
        if second is not None:
            os.killpg(driver.pid, signal.SIGSTOP)
            if _consistent_snapshot(exp_dir, second, first):
                break
            os.killpg(driver.pid, signal.SIGCONT)
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {t.name: len(_results(t)) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    finished_before = [name for name, n in before.items() if n == EPOCHS]

    resumed = _cli("tune", str(config_path), "--no-retrain", "--resume", cwd=tmp_path)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    assert_quiet(output)  # a restored Tuner too (its searcher, pickled with its concurrency limit)

    after = {t.name: _results(t) for t in exp_dir.glob("*/") if (t / "result.json").exists()}
    assert set(after) == set(before)  # the same two trials: none lost, none added
    for name, rows in after.items():
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))  # every epoch once: none redone
        assert rows[-1]["training_iteration"] == EPOCHS
        if name not in finished_before:  # continued from the checkpoint of epoch HOLD_EPOCH - 1, not from 0
            assert rows[-1]["iterations_since_restore"] == EPOCHS - (HOLD_EPOCH - 1)
    journal = exp_dir / "optuna.journal"
    assert journal.exists() and journal.stat().st_size > 0
