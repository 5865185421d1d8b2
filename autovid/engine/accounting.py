"""Parameter and FLOP counts of any module at a given input shape (torch.utils.flop_counter, no hand counting),
and its measured forward latency on a device."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_parameters", "describe", "measure_latency"]


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
    device of the module's first parameter, so a network already moved to CUDA is counted where it lives. The training/eval flag of every submodule is restored afterwards.
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


def describe(module: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None) -> dict[str, int]:
    """``{"params": trainable parameter count, "flops": FLOPs of one forward at input_shape}``."""
    return {
        "params": count_parameters(module),
        "flops": count_flops(module, input_shape, device=device),
    }


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median wall time in milliseconds of one eval-mode forward on a zero batch of ``input_shape``.

    ``warmup`` untimed forwards come first (allocator, cuDNN autotuning and lazy initialisation would
    otherwise be timed), then ``repeats`` timed ones; the median ignores the odd slow one (a scheduler hiccup
    on a shared machine). On CUDA every forward is synchronised before the clock stops, since kernels launch
    asynchronously. The figure depends on the device, its load and torch's thread count: compare latencies
    measured under the same conditions only. ``device=None`` uses the device of the module's first parameter.
    The training/eval flag of every submodule is restored afterwards.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    modes = {m: m.training for m in module.modules()}
    x = torch.zeros(tuple(input_shape), device=device)
    times: list[float] = []
    try:
        module.eval()
        with torch.no_grad():
            for i in range(warmup + repeats):
                sync(device)
                started = time.perf_counter()
                module(x)
                sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - started)
    finally:
        for m, training in modes.items():
            m.training = training
    return 1000.0 * statistics.median(times)
