"""A data-parallel trial from the command line: `autovid search ... tune.resources.workers=2` on real Ray,
one worker killed mid-trial, the trial resumed from its checkpoint, and the genotype of one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autovid.engine.checkpoint import load_state
from autovid.engine.session import SearchSession
from tests.faults import fault_env
from tests.tiny import assert_quiet, tiny_config

pytestmark = pytest.mark.slow

EPOCHS = 2


def test_two_worker_search_survives_a_killed_worker_and_matches_one_process(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": EPOCHS, "warmup_epochs": 0},
                      tune={"max_failures": 1, "checkpoint_frequency": 1})
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(cfg.to_yaml())
    gate = tmp_path / "gate"
    gate.mkdir()
    env = fault_env({**os.environ, "PYTHONUNBUFFERED": "1"}, hold=(EPOCHS, gate))
    driver = subprocess.Popen(
        [sys.executable, "-m", "autovid.cli", "search", str(config_path), "tune.resources.workers=2"],
        cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (held := list(gate.glob("held-*"))):  # epoch 1 done and checkpointed, epoch 2 not begun
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "the trial never reached epoch 2"
            time.sleep(0.2)
        pids = [int(p) for p in held[0].read_text().split()]
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)  # rank 1 dies; the trial must fail and restart from epoch 1
        (gate / f"release-{held[0].name.removeprefix('held-')}").touch()
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output
    assert_quiet(output)

    trial = next((tmp_path / "runs" / "tiny").glob("*/result.json")).parent
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
    assert rows[-1]["epoch"] == EPOCHS
    assert rows[-1]["iterations_since_restore"] == 1  # the last epoch ran after a restore from epoch 1

    single = SearchSession(cfg)
    for _ in range(EPOCHS):
        expected = single.step()
    assert rows[-1]["genotype"] == expected["genotype"]
    assert f"genotype {expected['genotype_hash']}" in output or expected["genotype_hash"] in output
    final = load_state(sorted(trial.glob("checkpoint_*"))[-1] / "state.pt")["model"]
    reference = single.state_dict()["model"]
    alphas = [k for k in reference if k.startswith(("alpha_", "beta_"))]
    assert max(float((final[k] - reference[k]).abs().max()) for k in alphas) <= 1e-3
