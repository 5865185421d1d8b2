"""Latency: torch.utils.benchmark blocks of eval-mode forwards, flags restored; the search reports it on demand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from autovid.engine.accounting import latency, measure_latency
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


def test_timed_blocks_run_in_eval_mode_without_grad() -> None:
    net = _Counting().train()
    torch.set_num_threads(1)
    stats = latency(net, (2, 3, 4, 8, 8), warmup=2, repeats=5, min_run_time=0.01)
    assert stats.median_ms > 0 and stats.iqr_ms >= 0 and stats.blocks >= 5 and stats.forwards >= stats.blocks
    # warm-up, the timer's block-size search and at least `repeats` blocks: every forward in eval mode, no grad
    assert len(net.calls) >= 2 + stats.forwards
    assert set(net.calls) == {((2, 3, 4, 8, 8), False, False)}
    assert net.training and net.bn.training  # flags restored
    assert float(net.bn.running_mean.abs().sum()) == 0.0  # eval mode: BN statistics untouched
    assert torch.get_num_threads() == 1


def test_a_forward_takes_at_least_what_it_sleeps() -> None:
    """A module that sleeps 2 ms per forward: every figure is at least that (load can only add to it)."""

    class _Sleeps(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.002)
            return x

    stats = latency(_Sleeps(), (1, 1), warmup=0, repeats=3, min_run_time=0.05)
    assert stats.median_ms >= 2.0 and stats.blocks >= 3  # sleep never returns early
    assert measure_latency(_Sleeps(), (1, 1), warmup=0, repeats=1) >= 2.0


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


def test_onnx_latency_times_the_exported_graph_in_onnxruntime() -> None:
    import onnxruntime as ort

    from autovid.engine.onnx import onnx_latency

    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                        nn.Flatten(), nn.Linear(4, 5)).train()
    one, three = onnx_latency(net, (3, 4, 8, 8), (1, 3), threads=1, max_run_time=0.5)
    assert (one.batch, three.batch) == (1, 3) and one.threads == three.threads == 1
    assert one.runtime == f"onnxruntime {ort.__version__} CPUExecutionProvider"
    assert one.median_ms > 0 and three.median_ms > 0 and one.iqr_ms >= 0 and three.iqr_ms >= 0
    assert not net.training  # the latency is the deployed (eval-mode) network's


@pytest.mark.slow
def test_search_reports_onnxruntime_latency_with_its_runtime_and_threads(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0},
                      tune={"param_space": {"search.w_lr": {"type": "uniform", "low": 0.01, "high": 0.1}},
                            "constraints": ["genotype/latency_ms <= 1e9"],
                            "latency": {"runtime": "onnxruntime", "threads": 1}})
    metrics = SearchSession(cfg).step()
    assert metrics["genotype/latency_ms"] > 0 and metrics["genotype/latency_ms_b"] > 0
    assert metrics["genotype/latency_iqr_ms"] >= 0
    assert metrics["genotype/latency_runtime"].startswith("onnxruntime ") and metrics["genotype/latency_threads"] == 1
