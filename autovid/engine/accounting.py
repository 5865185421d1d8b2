"""Parameter and FLOP counts of any module at a given input shape (torch.utils.flop_counter, no hand counting),
and its forward latency on a device (torch.utils.benchmark's blocked timer, no hand timing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.benchmark import Measurement, Timer
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["EagerLatency", "count_flops", "count_parameters", "describe", "latency", "measure_latency"]


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters; a parameter shared by several submodules counts once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> int:
    """FLOPs of one forward pass in eval mode on a zero batch of ``input_shape`` (a multiply-add counts 2).

    The count covers the whole batch: pass a batch of one (e.g. ``(1, K, C, L, H, W)``) for FLOPs per clip.
    Only what FlopCounterMode knows is counted (convolutions, matmuls, attention); element-wise ops,
    pooling and normalization are free, which is the usual convention. ``device=None`` (the default) uses the
    device of the module's first parameter, so a network already moved to CUDA is counted where it lives. The
    training/eval flag of every submodule is restored afterwards.
    """
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    modes = {m: m.training for m in module.modules()}
    x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
    try:
        module.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        for m, training in modes.items():
            m.training = training
    return int(counter.get_total_flops())


def describe(
    module: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None
) -> dict[str, int]:
    """``{"params": trainable parameter count, "flops": FLOPs of one forward at input_shape}``."""
    return {
        "params": count_parameters(module),
        "flops": count_flops(module, input_shape, device=device),
    }


class EagerLatency(NamedTuple):
    """An eager PyTorch forward latency measured by :func:`latency`: milliseconds per forward over the timed blocks
    (ONNX Runtime's is :class:`autovid.export.Latency`)."""

    median_ms: float
    iqr_ms: float  # interquartile range of the per-forward times of the blocks
    blocks: int  # timed blocks (each runs the forward several times back to back)
    forwards: int  # timed forwards over all blocks (the timer sizes blocks anew each time it is called)


def latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
    min_run_time: float = 0.2,
) -> EagerLatency:
    """Eval-mode forward latency on a zero batch of ``input_shape``, timed by ``torch.utils.benchmark``.

    ``warmup`` untimed forwards come first (allocator, cuDNN autotuning and lazy initialisation would otherwise
    be timed). Then :meth:`torch.utils.benchmark.Timer.blocked_autorange` picks a block size (the forwards per
    timing, so the clock's overhead stays negligible; this also warms up) and times blocks until ``min_run_time``
    seconds have passed, again until at least ``repeats`` blocks are in: the median is robust to the odd slow
    block (a scheduler hiccup on a shared machine) and the IQR says how much the figure moved. The timer
    synchronises CUDA before reading the clock and keeps torch's current thread count (its default would be
    one thread). The figure depends on the device, its load and the thread count: compare latencies measured
    under the same conditions only. ``device=None`` uses the device of the module's first parameter. The
    training/eval flag of every submodule is restored afterwards.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), device=torch.device(device))
    modes = {m: m.training for m in module.modules()}
    timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads())
    try:
        module.eval()
        with torch.no_grad():
            for _ in range(warmup):
                module(x)
            runs = [timer.blocked_autorange(min_run_time=min_run_time)]
            while sum(len(m.raw_times) for m in runs) < repeats:
                runs.append(timer.blocked_autorange(min_run_time=min_run_time))
    finally:
        for m, training in modes.items():
            m.training = training
    merged = Measurement.merge(runs)[0] if len(runs) > 1 else runs[0]  # per-forward times of every block
    forwards = sum(len(m.raw_times) * m.number_per_run for m in runs)
    return EagerLatency(1000.0 * merged.median, 1000.0 * merged.iqr, len(merged.raw_times), forwards)


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median milliseconds of one eval-mode forward on a zero batch of ``input_shape`` (:func:`latency`'s median)."""
    return latency(module, input_shape, device=device, warmup=warmup, repeats=repeats).median_ms
