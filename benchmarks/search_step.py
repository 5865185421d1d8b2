"""Benchmark one DARTS search step of the quickstart supernet on CPU, and of the UCF101 search, eager vs fast path.

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
  the same process with the same threads (bf16 on CUDA for the ucf101 rows, or under ``BENCH_AUTOCAST=bf16``).

The ``ucf101`` group (``BENCH_CONFIGS=ucf101``; not in the default set) is the search of
tune_configs/ucf101.yaml: p3d, B=32, 4 segments × 2 frames at 112×112, C=16, 5 cells, PC-DARTS K=4, first
and second order, each eager and through ``autovid.engine.fastpath.accelerate`` (``BENCH_FAST_MODE``,
default ``compile``: the weight step's forward compiled, the architect eager), bf16 autocast on CUDA. The
eager-vs-fast table printed at the end gives steady-state peak memory: the RSS high-water mark is reset
after the warm-up step (``/proc/self/clear_refs``), so that compiling's own peak does not count, and taken
above the RSS before the first step. Before a ucf101 row starts on CPU, a one-video forward estimates its
activation memory; a row that would not fit in the available memory, or any row that runs past
``BENCH_TIMEOUT`` seconds (default 900), is printed as "not measured" with the reason. Rows of the device not
benchmarked are printed as "not measured" too: nothing is extrapolated.

Run: ``.venv/bin/python benchmarks/search_step.py`` (about 10 minutes on 2 cores). Environment variables
(no argument parsing): ``BENCH_THREADS`` (default: all cores), ``BENCH_STEPS`` (timed steps, default 5),
``BENCH_CONFIGS`` (comma-separated names from ``configs()``, ``ucf101_configs()`` or the group ``ucf101``;
any non-naive name + ``_fast``, e.g. ``quickstart_fast``, is that row through the fast path; default: the
``configs()`` rows), ``BENCH_JSON`` (write the
results there), ``BENCH_DEVICE`` (``cpu`` default, or ``cuda``: peak memory is then
``torch.cuda.max_memory_allocated`` and the matmul reference one on the GPU), ``BENCH_AUTOCAST=bf16``
(CUDA: bf16 autocast around the step), ``BENCH_BATCH`` (override every selected row's batch size, shown
in the rows' B), ``BENCH_TIMEOUT`` (seconds per row), ``BENCH_FAST_MODE`` (``compile`` or
``auto``: the mode handed to ``accelerate``).
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
        shape.update(
            space=data.get("search_space", shape["space"]),
            batch=d.get("batch_size", shape["batch"]),
            segments=d.get("num_segments", shape["segments"]),
            frames=d.get("frames_per_segment", shape["frames"]),
            size=d.get("crop_size", shape["size"]),
            channels=m.get("channels", shape["channels"]),
            cells=m.get("cells", shape["cells"]),
            stem_multiplier=m.get("stem_multiplier", shape["stem_multiplier"]),
            stem_stride=m.get("stem_stride", 1),
        )
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


def ucf101_configs() -> dict[str, dict[str, Any]]:
    """The search of tune_configs/ucf101.yaml (data, model and order as written there, batch 32): first and
    second order, eager and fast path. Layout (``fastpath.preferred_memory_format``) and mixed op (``reference``
    on CUDA, ``fused`` on CPU) by device, as the sessions choose them; bf16 autocast and a bf16 matmul reference
    on CUDA, fp32 on CPU."""
    shape = dict(space="p3d", batch=32, segments=4, frames=2, size=112, channels=16, cells=5, stem_multiplier=2,
                 stem_stride=1, classes=101, pc_k=4, layout="auto", mixed_op="auto", autocast="bf16", matmul="bf16",
                 check_memory=True)
    out: dict[str, dict[str, Any]] = {}
    for order in ("first", "second"):
        out[f"ucf101_{order}"] = dict(shape, order=order, fast=False)
        out[f"ucf101_{order}_fast"] = dict(shape, order=order, fast=True)
    return out


GROUPS = {"ucf101": ucf101_configs}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(threads: int, device: torch.device, n: int = 1024, reps: int = 20,
                 dtype: torch.dtype = torch.float32) -> float:
    """Dense matmul FLOP/s in ``dtype``: the best of three medians over ``reps`` products (the best, because
    other processes on a shared machine only ever slow it down)."""
    torch.set_num_threads(threads)
    n = 8192 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
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


def _status_mib(field: str) -> float | None:
    """VmHWM / VmRSS of this process from /proc/self/status (MiB), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float | None:
    """Reset this process's RSS high-water mark (Linux: ``5`` to /proc/self/clear_refs); the RSS then, or None
    where it cannot be reset (ru_maxrss, which never resets, is then the only peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mib("VmRSS")


def _available_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_config(
    cfg: dict[str, Any], threads: int, steps: int, device_name: str = "cpu", autocast: str = ""
) -> dict[str, Any]:
    """Build the supernet, run warm-up + timed DARTS steps (first order unless ``cfg["order"]`` says second;
    the weight step's forward through ``accelerate`` when ``cfg["fast"]``); return the measurements."""
    import contextlib

    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from autovid.engine.fastpath import accelerate, preferred_memory_format
    from autovid.nas import SuperNet, load_search_space
    from autovid.nas.architect import Architect

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    order = cfg.get("order", "first")
    if not autocast and device.type == "cuda":
        autocast = cfg.get("autocast", "")  # the ucf101 config's bf16, on CUDA only
    g = torch.Generator().manual_seed(0)
    space = load_search_space(cfg["space"])
    mixed_op = cfg.get("mixed_op", "fused")
    if mixed_op == "auto":  # as networks.build_supernet: the reference mixed op was faster on CUDA
        mixed_op = "reference" if device.type == "cuda" else "fused"
    model = SuperNet(space, num_classes=cfg["classes"], channels=cfg["channels"], cells=cfg["cells"],
                     stem_multiplier=cfg["stem_multiplier"], stem_stride=cfg["stem_stride"], pc_k=cfg["pc_k"],
                     mixed_op=mixed_op, generator=g)
    if cfg["layout"] == "naive":
        make_naive(model)
    elif cfg["layout"] == "auto":
        model.set_memory_format(preferred_memory_format(device))
    else:
        model.set_memory_format(torch.channels_last_3d if cfg["layout"] == "channels_last" else torch.contiguous_format)
    model.to(device)

    def cast() -> Any:
        if autocast == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    shape = (cfg["batch"], cfg["segments"], 3, cfg["frames"], cfg["size"], cfg["size"])
    if cfg.get("check_memory") and device.type == "cpu":
        # Activations grow linearly with the batch: one video's, times B, with half again for gradients and
        # the backward's temporaries. Refuse what would not fit rather than wake the OOM killer.
        one = torch.randn(1, *shape[1:], generator=g)
        need = (
            1.5 * cfg["batch"] * _saved_mib(lambda: F.cross_entropy(model(one), torch.zeros(1, dtype=torch.long)), cast)
        )
        free = _available_mib()
        if free is not None and need > 0.8 * free:
            return dict(config=cfg, not_measured=f"needs ~{need / 1024:.1f} GiB of activations and gradients, "
                        f"{free / 1024:.1f} GiB available")
    x_w, x_a = torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)
    y_w = torch.randint(0, cfg["classes"], (cfg["batch"],), generator=g).to(device)
    y_a = torch.randint(0, cfg["classes"], (cfg["batch"],), generator=g).to(device)
    weights = model.weight_parameters()
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3, order=order)
    # the fast path serves the weight step only: the architect's functional_call runs the eager model
    forward = (
        accelerate(model, device=device, mode=os.environ.get("BENCH_FAST_MODE", "compile"))
        if cfg.get("fast")
        else model
    )

    def step(fwd: Any = forward) -> None:
        with cast():
            architect.step(x_w, y_w, x_a, y_a, eta=0.025, w_optimizer=w_opt)  # α: ∇α L_val(w, α), Adam
            w_opt.zero_grad(set_to_none=True)
            F.cross_entropy(fwd(x_w), y_w).backward(inputs=weights)  # w: ∇w L_train(w, α), SGD
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()

    rss0 = _maxrss_mib()
    rss_start = _status_mib("VmRSS")  # the model, its optimizer and the batches, before any step
    _sync(device)
    t0 = time.perf_counter()
    step()  # warm-up: oneDNN primitive creation / cuDNN autotuning, optimizer state, compiling (fast path)
    _sync(device)
    first_step = time.perf_counter() - t0
    reset = _reset_peak_rss()  # steady state from here: compiling's own peak does not count
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
    hwm = _status_mib("VmHWM")
    # the timed steps' peak RSS above the RSS before the first step: activations, gradients, optimizer state
    # and, for the fast path, what compiling left resident (kernels, graphs)
    steady = hwm - rss_start if hwm is not None and reset is not None and rss_start is not None else None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        rss0 = mem0
        steady = peak - mem0
    with FlopCounterMode(display=False) as counter:
        step(model)  # eager: the fast path computes the same FLOPs, and a dispatch mode would recompile it
    flops = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd_counter:
        model(x_w)
    saved = _saved_mib(lambda: model.loss(x_w, y_w), cast)
    mm_dtype = torch.bfloat16 if device.type == "cuda" and "bf16" in (autocast, cfg.get("matmul")) else torch.float32
    mm = matmul_flops(threads, device, dtype=mm_dtype)
    t_step = statistics.median(times)
    return dict(
        config=cfg,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        device_type=device.type,
        autocast=autocast or "none",
        threads=threads,
        first_step_s=first_step,
        step_s=t_step,
        step_s_all=times,
        cpu_s_per_step=statistics.median(cpu),
        clips_per_s=2 * cfg["batch"] / t_step,
        peak_rss_mib=peak,
        peak_delta_mib=peak - rss0,
        peak_steady_mib=steady,
        saved_mib=saved,
        flops_per_step=flops,
        forward_flops_per_clip=fwd_counter.get_total_flops() / cfg["batch"],
        achieved_gflops=flops / t_step / 1e9,
        matmul_dtype=str(mm_dtype).removeprefix("torch."),
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


def _run_child(ctx: Any, cfg: dict[str, Any], threads: int, steps: int, timeout: float) -> dict[str, Any]:
    """One row in a fresh spawned process; a row that dies (e.g. killed for memory) or runs past ``timeout``
    seconds comes back as "not measured" with the reason."""
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cfg, threads, steps, queue))
    proc.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            res: dict[str, Any] = queue.get(timeout=5)
            break
        except Exception:  # queue.Empty: still running, dead, or out of time
            if not proc.is_alive():
                res = dict(config=cfg, not_measured=f"the process exited with code {proc.exitcode} without a result")
                break
            if time.monotonic() > deadline:
                proc.terminate()
                res = dict(config=cfg, not_measured=f"did not finish in {timeout:.0f} s")
                break
    proc.join()
    return res


def _log_row(name: str, res: dict[str, Any]) -> None:
    c = res["config"]
    logger.info(
        "%-22s %s B=%d K=%d L=%d %dx%d C=%d cells=%d stem/%d pc_k=%d %s | step %.3f s (cpu %.2f s) "
        "%.1f clips/s | peak +%.0f MiB (rss %.0f), saved %.0f MiB | %.2f GFLOP/step, %.1f GFLOP/s = %.1f%% of "
        "matmul %.0f GFLOP/s",
        name,
        c["space"],
        c["batch"],
        c["segments"],
        c["frames"],
        c["size"],
        c["size"],
        c["channels"],
        c["cells"],
        c["stem_stride"],
        c["pc_k"],
        c["layout"],
        res["step_s"],
        res["cpu_s_per_step"],
        res["clips_per_s"],
        res["peak_delta_mib"],
        res["peak_rss_mib"],
        res["saved_mib"],
        res["flops_per_step"] / 1e9,
        res["achieved_gflops"],
        100 * res["fraction_of_matmul"],
        res["matmul_gflops"],
    )


def _fast_table(results: list[dict[str, Any]], device_type: str) -> None:
    """Eager vs fast path, one line per row run (or "not measured" and why), and the other device's rows as
    "not measured": this run measured one device only."""
    rows = [r for r in results if "order" in r["config"] or r["config"].get("fast")
            or any(o["name"] == r["name"] + "_fast" for o in results)]
    if not rows:
        return
    logger.info("")
    logger.info("%-22s %-6s %-6s %-5s %9s %9s %24s %13s %15s", "row", "device", "order", "path", "B", "clips/s",
                "of dense matmul FLOP/s", "peak memory", "warm-up step")
    for r in rows:
        c = r["config"]
        path = "fast" if c.get("fast") else "eager"
        if "not_measured" in r or "error" in r:
            why = r.get("not_measured") or f"error: {r['error']}"
            logger.info(
                "%-22s %-6s %-6s %-5s %9d   not measured: %s",
                r["name"],
                device_type,
                c.get("order", "first"),
                path,
                c["batch"],
                why,
            )
            continue
        mem = r["peak_steady_mib"] if r["peak_steady_mib"] is not None else r["peak_delta_mib"]
        logger.info(
            "%-22s %-6s %-6s %-5s %9d %9.2f %15.2f%% (%s) %9.0f MiB %13.1f s",
            r["name"],
            device_type,
            c.get("order", "first"),
            path,
            c["batch"],
            r["clips_per_s"],
            100 * r["fraction_of_matmul"],
            r["matmul_dtype"],
            mem,
            r["first_step_s"],
        )
    for r in rows:
        if "step_s" in r and r["config"].get("fast"):
            base = next((b for b in rows if b["name"] == r["name"].removesuffix("_fast") and "step_s" in b), None)
            if base:
                speed = base["step_s"] / r["step_s"]
                mem = (r["peak_steady_mib"] or r["peak_delta_mib"]) / max(
                    base["peak_steady_mib"] or base["peak_delta_mib"], 1e-9
                )
                logger.info("%s vs %s: step %.3f s vs %.3f s (%.2fx, %s), peak memory %.2fx the eager one", r["name"],
                            base["name"], r["step_s"], base["step_s"], speed, "faster" if speed > 1 else "slower", mem)
    other = "cuda" if device_type == "cpu" else "cpu"
    for r in rows:
        logger.info(
            "%-22s %-6s %-6s %-5s %9d   not measured: this run benchmarked %s only (rerun with BENCH_DEVICE=%s)",
            r["name"],
            other,
            r["config"].get("order", "first"),
            "fast" if r["config"].get("fast") else "eager",
            r["config"]["batch"],
            device_type,
            other,
        )
    if device_type == "cpu":
        logger.info(
            "(CPU rows: fp32 without autocast, as the sessions run on CPU, so the reference is an fp32 matmul, "
            "not bf16; peak memory = RSS high-water mark of the timed steps, reset after the warm-up step, above the "
            "RSS before the first step)"
        )
    else:
        logger.info("(peak memory = torch.cuda.max_memory_allocated over the timed steps above the allocation after "
                    "the warm-up step; CUDA-graph pools count as allocated)")


def main() -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    steps = int(os.environ.get("BENCH_STEPS", 5))
    timeout = float(os.environ.get("BENCH_TIMEOUT", 900))
    batch = int(os.environ["BENCH_BATCH"]) if os.environ.get("BENCH_BATCH") else None
    device_type = torch.device(os.environ.get("BENCH_DEVICE", "cpu")).type
    table = configs()
    default = ",".join(table)  # the ucf101 group only on request: on CPU its rows take tens of minutes
    for group in GROUPS.values():
        table.update(group())
    wanted: list[str] = []
    for n in os.environ.get("BENCH_CONFIGS", default).split(","):
        wanted += list(GROUPS[n]()) if n in GROUPS else [n] if n else []
    for n in wanted:  # any row + "_fast": the same row through the fast path (e.g. quickstart_fast)
        base = n.removesuffix("_fast")
        if n not in table and base in table and table[base]["layout"] != "naive":
            table[n] = dict(table[base], fast=True)
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; valid: {', '.join([*table, *GROUPS])}")
    ctx = mp.get_context("spawn")
    logger.info("torch %s, %s, %d threads, %d timed steps, device %s, load average %s", torch.__version__,
                _cpu_model(), threads, steps, os.environ.get("BENCH_DEVICE", "cpu"), os.getloadavg())
    results = []
    for name in wanted:
        cfg = table[name] if batch is None else dict(table[name], batch=batch)
        res = _run_child(ctx, cfg, threads, steps, timeout)
        res["name"] = name
        results.append(res)
        if "error" in res:
            logger.info("%-22s ERROR %s", name, res["error"])
        elif "not_measured" in res:
            logger.info("%-22s not measured: %s", name, res["not_measured"])
        else:
            _log_row(name, res)
    by_name = {r["name"]: r for r in results if "step_s" in r}
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
    _fast_table(results, device_type)
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
