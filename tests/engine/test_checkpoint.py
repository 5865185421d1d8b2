"""Checkpoints load with weights_only=True: real session states round-trip, a malicious pickle never runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autovid.engine.checkpoint import load_state, save_state
from autovid.engine.session import SearchSession, TrainSession
from autovid.errors import UserError
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config


class _Payload:
    """Unpickling this creates a file: the proof that code from a checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> Path:
    torch.save({"kind": "train", "model": _Payload(marker)}, path)  # torch.save pickles the payload as is
    return path


def test_a_malicious_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "state.pt", marker)
    with pytest.raises(UserError, match="refused"):
        load_state(path)
    assert not marker.exists()


def test_evaluate_cli_refuses_it_with_exit_2(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "state.pt", marker)
    done = subprocess.run([sys.executable, "-m", "autovid.cli", "evaluate", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr and "refused" in done.stderr
    assert not marker.exists()


def test_search_and_train_states_round_trip_safely(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0}, train={"epochs": 1})
    search = SearchSession(cfg)
    search.step()
    genotype = search.genotype()
    train = TrainSession(cfg, genotype)
    train.step()
    for session in (search, train):
        path = save_state(session.state_dict(), tmp_path / f"{session.state_dict()['kind']}.pt")
        state = load_state(path)  # weights_only=True
        assert state["epoch"] == 1 and state["config"] == cfg.model_dump(mode="json")
        for key, tensor in session.model.state_dict().items():
            assert torch.equal(state["model"][key], tensor)
    assert Genotype.from_json(load_state(tmp_path / "train.pt")["genotype"]) == genotype


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.pt"
    torch.save({"kind": "train", "model": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:50])
    with pytest.raises(UserError, match="not an autovid checkpoint"):
        load_state(truncated)
    plain = tmp_path / "plain.pt"
    torch.save([1, 2, 3], plain)
    with pytest.raises(UserError, match="no 'kind'"):
        load_state(plain)
    assert not list(tmp_path.glob(".*.tmp"))
