"""Latency measurement: a median of timed eval-mode forwards, flags restored; the search reports it on demand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autovid.engine.accounting import measure_latency
from autovid.engine.session import SearchSession
from tests.tiny import tiny_config


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.calls: list[tuple[tuple[int, ...], bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), self.training, torch.is_grad_enabled()))
        return self.bn(self.conv(x))


def test_warmup_and_repeats_run_in_eval_mode_without_grad() -> None:
    net = _Counting().train()
    ms = measure_latency(net, (2, 3, 4, 8, 8), warmup=2, repeats=5)
    assert ms > 0
    assert net.calls == [((2, 3, 4, 8, 8), False, False)] * 7
    assert net.training and net.bn.training  # flags restored
    assert float(net.bn.running_mean.abs().sum()) == 0.0  # eval mode: BN statistics untouched


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(_Counting(), (1, 3, 2, 4, 4), repeats=0)


def test_search_reports_latency_only_when_an_objective_asks(tmp_path: Path) -> None:
    plain = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0})
    assert not any(k.startswith("genotype/latency") for k in SearchSession(plain).step())
    timed = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0},
                        tune={"scheduler": {"name": "none"},
                              "objectives": [{"metric": "val/acc", "mode": "max"},
                                             {"metric": "genotype/latency_ms", "mode": "min"}]})
    metrics = SearchSession(timed).step()
    assert metrics["genotype/latency_ms"] > 0 and metrics["genotype/latency_ms_b"] > 0
