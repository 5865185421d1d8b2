"""Benchmark data-parallel search steps: agreement with one process, and step time at 1 and 2 ranks (gloo).

Prints, for one first-order search step (α step on the α half, then weight step) of a supernet on random
clips, side by side in one run:

- agreement: the largest relative deviation max|g - g_ref| / max|g_ref| over all weight and α gradient
  tensors, for (a) 2 ranks vs one process in float32, (b) one process on the same batch permuted, float32
  (the network's own float32 noise floor: the same mathematics, another summation order), (c) 2 ranks vs one
  process in float64 (exactness of the all-reduced gradients and global-batch BatchNorm);
- speed: median wall time of a step for 1 rank and 2 ranks on the same global batch (1 thread per rank),
  and the speed-up.

Run: ``.venv/bin/python benchmarks/data_parallel.py`` (about 2 minutes on 2 cores). Environment variables:
``BENCH_CONFIG`` (a tune_configs name, default quickstart), ``BENCH_BATCH`` (global batch, default 16),
``BENCH_STEPS`` (timed steps, default 5).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autovid.config import load_config  # noqa: E402
from autovid.engine.distributed import DataParallel  # noqa: E402
from autovid.engine.networks import build_supernet  # noqa: E402
from autovid.engine.setup import clip_shape  # noqa: E402
from autovid.nas.architect import Architect  # noqa: E402

CLASSES = 5


def _batches(cfg, size: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (size, *clip_shape(cfg.data))
    return [torch.randn(shape, generator=g, dtype=dtype), torch.randint(0, CLASSES, (size,), generator=g),
            torch.randn(shape, generator=g, dtype=dtype), torch.randint(0, CLASSES, (size,), generator=g)]


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    base, extra = divmod(len(t), world)
    lo = rank * base + min(rank, extra)
    return t[lo : lo + base + (rank < extra)]


def _step(
    parallel: DataParallel, cfg, batches: list[torch.Tensor], steps: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Gradients of the first step (reduced over ranks), and the wall time of `steps` further steps."""
    model = parallel.prepare(build_supernet(cfg, num_classes=CLASSES))
    weights = list(model.weight_parameters())
    architect = Architect(model, order="first", parallel=parallel if parallel.enabled else None)
    optimizer = torch.optim.SGD(weights, lr=0.01, momentum=0.9)
    x_w, y_w, x_a, y_a = batches
    a_grads = architect.alpha_gradients(x_w, y_w, x_a, y_a, eta=0.01)
    loss, _ = parallel.loss(model(x_w), y_w)
    w_grads = parallel.reduce_gradients(torch.autograd.grad(loss, weights, allow_unused=True), weights)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        architect.step(x_w, y_w, x_a, y_a, eta=0.01)
        optimizer.zero_grad(set_to_none=True)
        loss, _ = parallel.loss(model(x_w), y_w)
        loss.backward(inputs=weights)
        parallel.reduce_grads_(weights)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return [g.detach().clone() for g in (*w_grads, *a_grads)], times


def _rank(rank: int, folder: str, config: str, batch: int, dtype: str, steps: int) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, dtype))
    dist.init_process_group("gloo", init_method=f"file://{folder}/rdv-{dtype}", rank=rank, world_size=2)
    try:
        cfg = load_config(config, [])
        part = [_shard(t, rank, 2) for t in _batches(cfg, batch, getattr(torch, dtype))]
        grads, times = _step(DataParallel(rank, 2), cfg, part, steps)
        if rank == 0:
            torch.save({"grads": grads, "times": times}, Path(folder) / f"{dtype}.pt")
    finally:
        dist.destroy_process_group()


def _deviation(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)) for x, y in zip(a, b, strict=True))


def main() -> None:
    config = os.environ.get("BENCH_CONFIG", "quickstart")
    batch = int(os.environ.get("BENCH_BATCH", "16"))
    steps = int(os.environ.get("BENCH_STEPS", "5"))
    cfg = load_config(config, [])
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; {config} supernet, global batch {batch}, "
          f"clip {list(clip_shape(cfg.data))}, one thread per rank")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for dtype in ("float32", "float64"):
            mp.spawn(_rank, args=(folder, config, batch, dtype, steps if dtype == "float32" else 0), nprocs=2)
            two = torch.load(Path(folder) / f"{dtype}.pt", weights_only=True)
            torch.set_default_dtype(getattr(torch, dtype))
            batches = _batches(cfg, batch, getattr(torch, dtype))
            one, times = _step(DataParallel(), cfg, batches, steps if dtype == "float32" else 0)
            rows[f"2 ranks vs 1 process, {dtype}"] = _deviation(two["grads"], one)
            if dtype == "float32":
                order = torch.randperm(batch, generator=torch.Generator().manual_seed(1))
                permuted, _ = _step(DataParallel(), cfg, [t[order] for t in batches], 0)
                rows["1 process, batch permuted, float32"] = _deviation(permuted, one)
                speed = (statistics.median(times), statistics.median(two["times"]))
            torch.set_default_dtype(torch.float32)
    print("\ngradient agreement after one step (max over tensors of max|g - g_ref| / max|g_ref|)")
    for name, value in rows.items():
        print(f"  {name:<40} {value:.2e}")
    print(f"\nstep time (median of {steps}): 1 rank {speed[0]:.3f} s, 2 ranks {speed[1]:.3f} s, "
          f"speed-up {speed[0] / speed[1]:.2f}x")


if __name__ == "__main__":
    main()
