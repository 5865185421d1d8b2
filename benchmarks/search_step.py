"""Benchmark one first-order DARTS search step of the quickstart supernet on CPU.

Reports, per configuration (each in a fresh spawned process so that peak RSS is its own):

- step time (median of timed steps, wall clock) and clips/s: one step = an α step on B α-half videos plus a
  weight step on B weight-half videos, so clips/s = 2·B / step time (a "clip" is one video sample
  [K, C, L, H, W], i.e. K segments of L frames);
- peak memory: ``ru_maxrss`` after the steps minus ``ru_maxrss`` once the model and the batches exist
  (activations, gradients, optimizer state, allocator slack; the process's absolute peak is printed too),
  and the activation memory proper: the distinct storages autograd saves for backward in one forward;
- FLOPs per step counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls:
  BN, ReLU, pooling and the weighted sums are not FLOPs to it, though they are most of the memory traffic);
- achieved FLOP/s = FLOPs per step / step time, as a fraction of a dense fp32 matmul's FLOP/s measured in
  the same process with the same threads.

Run: ``.venv/bin/python benchmarks/search_step.py`` (about 10 minutes on 2 cores). Environment variables
(no argument parsing): ``BENCH_THREADS`` (default: all cores), ``BENCH_STEPS`` (timed steps, default 5),
``BENCH_CONFIGS`` (comma-separated names from ``configs()``; default: all), ``BENCH_JSON`` (write the
results there), ``BENCH_DEVICE`` (``cpu`` default, or ``cuda``: peak memory is then
``torch.cuda.max_memory_allocated`` and the matmul reference a fp32 one on the GPU), ``BENCH_AUTOCAST=bf16``
(CUDA: bf16 autocast around the step).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("benchmarks.search_step")


class NaiveMixedOp(torch.nn.Module):
    """The "before" edge: quark0/darts' MixedOp ported to 3D as is, on the same operator modules. Every
    operator runs (zero as ``x·0``), each ReLU-first operator applies its own ReLU, pools are not shared
    between edges, and ``Σ w·op(x)`` is built from separate products and sums."""

    def __init__(self, fast: Any) -> None:
        super().__init__()
        self.ops, self.op_index = fast.ops, fast.op_index
        self.stride, self.temporal_stride = fast.stride, fast.temporal_stride
        self.zero_index = [i for i in range(fast.num_ops) if i not in fast.op_index]

    def forward(self, x: torch.Tensor, arg: torch.Tensor, cache: dict) -> torch.Tensor:
        out = 0
        for op, i in zip(self.ops, self.op_index):
            out = out + arg[i] * op(x)
        for i in self.zero_index:
            s, ts = self.stride, self.temporal_stride
            out = out + arg[i] * x[:, :, ::ts, ::s, ::s].mul(0.0)
        return out


def make_naive(model: torch.nn.Module) -> None:
    """Turn an optimized SuperNet into the straightforward port it replaced ("before" figures): NCDHW
    layout, built-in conv3d for every kernel, PyTorch pooling (avg as separable avg_pool3d + avg_pool2d,
    since avg_pool3d rejects 2-frame clips), and NaiveMixedOp edges."""
    import torch.nn.functional as F

    from autovid.nas import ops
    from autovid.nas.fused import FusedMixedOp

    class NaivePool3(ops.Pool3):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s, ts = self.stride, self.temporal_stride
            if self.kind == "max":
                return F.max_pool3d(x, (3 if self.temporal else 1, 3, 3), (ts, s, s), (1 if self.temporal else 0, 1, 1))
            y = F.avg_pool3d(x, (1, 3, 3), (1 if self.temporal else ts, s, s), (0, 1, 1), count_include_pad=False)
            if not self.temporal:
                return y
            z = F.avg_pool2d(y.flatten(3), (3, 1), (ts, 1), (1, 0), count_include_pad=False)
            return z.view(*y.shape[:2], z.shape[2], *y.shape[3:])

    model.set_memory_format(torch.contiguous_format)
    for m in model.modules():
        if isinstance(m, ops.Conv3d):
            m.__class__ = torch.nn.Conv3d
        elif isinstance(m, ops.Pool3):
            m.__class__ = NaivePool3
        edges = getattr(m, "edges", None)
        if isinstance(edges, torch.nn.ModuleList):
            for e, edge in enumerate(edges):
                if isinstance(edge, FusedMixedOp):
                    edges[e] = NaiveMixedOp(edge)


def quickstart_shape() -> dict[str, Any]:
    """The quickstart supernet and batch, read from tune_configs/quickstart.yaml (through autovid.config
    when it loads, else from the YAML itself over the config's defaults)."""
    shape = dict(space="p3d", batch=16, segments=4, frames=2, size=56, channels=8, cells=3, stem_multiplier=2,
                 stem_stride=1, classes=10)
    try:
        from autovid.config import load_config

        cfg = load_config("quickstart")
        shape.update(space=cfg.search_space, batch=cfg.data.batch_size, segments=cfg.data.num_segments,
                     frames=cfg.data.frames_per_segment, size=cfg.data.crop_size, channels=cfg.model.channels,
                     cells=cfg.model.cells, stem_multiplier=cfg.model.stem_multiplier,
                     stem_stride=getattr(cfg.model, "stem_stride", 1))
    except Exception as exc:  # e.g. pydantic missing on a bare GPU machine
        import yaml

        logger.info("autovid.config unavailable (%s); reading quickstart.yaml directly", type(exc).__name__)
        path = Path(__file__).resolve().parents[1] / "tune_configs" / "quickstart.yaml"
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
        d, m = data.get("data", {}), data.get("model", {})
        shape.update(space=data.get("search_space", shape["space"]), batch=d.get("batch_size", shape["batch"]),
                     segments=d.get("num_segments", shape["segments"]), frames=d.get("frames_per_segment", shape["frames"]),
                     size=d.get("crop_size", shape["size"]), channels=m.get("channels", shape["channels"]),
                     cells=m.get("cells", shape["cells"]), stem_multiplier=m.get("stem_multiplier", shape["stem_multiplier"]),
                     stem_stride=m.get("stem_stride", 1))
    return shape


def configs() -> dict[str, dict[str, Any]]:
    """Named configurations, each as a straightforward DARTS port ("naive", the before figure), in the
    default optimized form, on NCDHW activations (layout switch only), and as PC-DARTS K=4:

    - quickstart: the supernet and batch of tune_configs/quickstart.yaml (read from it);
    - paper56: the paper's sampling (K=4 segments of L=2 frames) at 56×56, batch 8, same supernet.
    """
    q = quickstart_shape()
    p = dict(q, batch=8, segments=4, frames=2, size=56)
    out: dict[str, dict[str, Any]] = {}
    for name, shape in (("quickstart", q), ("paper56", p)):
        out[f"{name}_naive"] = dict(shape, pc_k=1, layout="naive")
        out[name] = dict(shape, pc_k=1, layout="channels_last")
        out[f"{name}_ncdhw"] = dict(shape, pc_k=1, layout="contiguous")
        out[f"{name}_pc4"] = dict(shape, pc_k=4, layout="channels_last")
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(threads: int, device: torch.device, n: int = 1024, reps: int = 20) -> float:
    """Dense fp32 matmul FLOP/s: the best of three medians over ``reps`` products (the best, because other
    processes on a shared machine only ever slow it down)."""
    torch.set_num_threads(threads)
    n = 8192 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        times = []
        for _ in range(reps):
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_config(cfg: dict[str, Any], threads: int, steps: int, device_name: str = "cpu", autocast: str = "") -> dict[str, Any]:
    """Build the supernet, run warm-up + timed first-order DARTS steps; return the measurements."""
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    from autovid.nas import SuperNet, load_search_space
    from autovid.nas.architect import Architect

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    space = load_search_space(cfg["space"])
    model = SuperNet(space, num_classes=cfg["classes"], channels=cfg["channels"], cells=cfg["cells"],
                     stem_multiplier=cfg["stem_multiplier"], stem_stride=cfg["stem_stride"], pc_k=cfg["pc_k"],
                     generator=g)
    if cfg["layout"] == "naive":
        make_naive(model)
    else:
        model.set_memory_format(torch.channels_last_3d if cfg["layout"] == "channels_last" else torch.contiguous_format)
    model.to(device)
    shape = (cfg["batch"], cfg["segments"], 3, cfg["frames"], cfg["size"], cfg["size"])
    x_w, x_a = torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)
    y_w = torch.randint(0, cfg["classes"], (cfg["batch"],), generator=g).to(device)
    y_a = torch.randint(0, cfg["classes"], (cfg["batch"],), generator=g).to(device)
    weights = model.weight_parameters()
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3, order="first")

    def cast() -> Any:
        if autocast == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> None:
        with cast():
            architect.step(x_w, y_w, x_a, y_a, eta=0.025, w_optimizer=w_opt)  # α: ∇α L_val(w, α), Adam
            w_opt.zero_grad(set_to_none=True)
            model.loss(x_w, y_w).backward(inputs=weights)  # w: ∇w L_train(w, α), SGD
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()

    rss0 = _maxrss_mib()
    step()  # warm-up: oneDNN primitive creation / cuDNN autotuning, optimizer state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device) / 2**20
    times, cpu = [], []
    for _ in range(steps):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = _maxrss_mib()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        rss0 = mem0
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd_counter:
        model(x_w)
    saved = _saved_mib(lambda: model.loss(x_w, y_w), cast)
    mm = matmul_flops(threads, device)
    t_step = statistics.median(times)
    return dict(
        config=cfg,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        autocast=autocast or "none",
        threads=threads,
        step_s=t_step,
        step_s_all=times,
        cpu_s_per_step=statistics.median(cpu),
        clips_per_s=2 * cfg["batch"] / t_step,
        peak_rss_mib=peak,
        peak_delta_mib=peak - rss0,
        saved_mib=saved,
        flops_per_step=flops,
        forward_flops_per_clip=fwd_counter.get_total_flops() / cfg["batch"],
        achieved_gflops=flops / t_step / 1e9,
        matmul_gflops=mm / 1e9,
        fraction_of_matmul=flops / t_step / mm,
        params=sum(p.numel() for p in weights),
    )


def _saved_mib(forward: Any, cast: Any) -> float:
    """MiB of distinct storages autograd keeps for backward after one forward (the activation memory)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast():
        loss = forward()
    del loss
    return sum(storages.values()) / 2**20


def _child(cfg: dict[str, Any], threads: int, steps: int, queue: Any) -> None:
    try:
        queue.put(run_config(cfg, threads, steps, os.environ.get("BENCH_DEVICE", "cpu"),
                             os.environ.get("BENCH_AUTOCAST", "")))
    except Exception as exc:  # report, do not hang the parent
        queue.put({"config": cfg, "error": f"{type(exc).__name__}: {exc}"})


def main() -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    steps = int(os.environ.get("BENCH_STEPS", 5))
    table = configs()
    wanted = [n for n in os.environ.get("BENCH_CONFIGS", ",".join(table)).split(",") if n]
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; valid: {', '.join(table)}")
    ctx = mp.get_context("spawn")
    logger.info("torch %s, %s, %d threads, %d timed steps, device %s, load average %s", torch.__version__,
                _cpu_model(), threads, steps, os.environ.get("BENCH_DEVICE", "cpu"), os.getloadavg())
    results = []
    for name in wanted:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(table[name], threads, steps, queue))
        proc.start()
        res = queue.get()
        proc.join()
        res["name"] = name
        results.append(res)
        if "error" in res:
            logger.info("%-22s ERROR %s", name, res["error"])
            continue
        c = res["config"]
        logger.info(
            "%-22s %s B=%d K=%d L=%d %dx%d C=%d cells=%d stem/%d pc_k=%d %s | step %.3f s (cpu %.2f s) "
            "%.1f clips/s | peak +%.0f MiB (rss %.0f), saved %.0f MiB | %.2f GFLOP/step, %.1f GFLOP/s = %.1f%% of matmul %.0f GFLOP/s",
            name, c["space"], c["batch"], c["segments"], c["frames"], c["size"], c["size"], c["channels"], c["cells"],
            c["stem_stride"], c["pc_k"], c["layout"], res["step_s"], res["cpu_s_per_step"], res["clips_per_s"],
            res["peak_delta_mib"], res["peak_rss_mib"], res["saved_mib"], res["flops_per_step"] / 1e9, res["achieved_gflops"],
            100 * res["fraction_of_matmul"], res["matmul_gflops"],
        )
    by_name = {r["name"]: r for r in results if "error" not in r}
    for base in ("quickstart", "paper56"):
        if base not in by_name:
            continue
        b = by_name[base]
        for suffix in ("naive", "ncdhw"):
            other = by_name.get(f"{base}_{suffix}")
            if other:
                logger.info("%s vs %s_%s: step %.2fx faster, peak memory %.2fx lower", base, base, suffix,
                            other["step_s"] / b["step_s"], other["peak_delta_mib"] / max(b["peak_delta_mib"], 1e-9))
        pc = by_name.get(f"{base}_pc4")
        if pc:
            logger.info("%s_pc4 (PC-DARTS K=4) vs %s: peak memory %.2fx lower, saved activations %.2fx lower, "
                        "step %.2fx faster", base, base, b["peak_delta_mib"] / max(pc["peak_delta_mib"], 1e-9),
                        b["saved_mib"] / max(pc["saved_mib"], 1e-9), b["step_s"] / pc["step_s"])
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
