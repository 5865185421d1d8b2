"""Benchmark the latency objective's two runtimes side by side: eager PyTorch against ONNX Runtime (CPU).

`tune.latency.runtime` picks what `genotype/latency_ms` times: the eager forward of the retrain-size network
(`accounting.latency`), or the graph `autovid export --format onnx` writes, in ONNX Runtime (`onnx.onnx_latency`).
A study that minimises latency ranks genotypes by that figure, so what matters beside the ratio is whether the two
runtimes rank the same genotypes the same way. For each config, this draws genotypes uniformly from its search
space (a fixed seed), builds each retrain-size network, and measures in one process, one after the other:

- eager median ms at batch 1 and at the config's batch size, with ``BENCH_THREADS`` intra-op threads;
- ONNX Runtime median ms at the same batches, with the same number of intra-op threads;
- FLOPs per clip (``torch.utils.flop_counter``).

It prints a row per genotype, then per config and batch: the median ORT/eager ratio, and Spearman's ρ (scipy)
between the eager and the ORT latencies, and between each and FLOPs, across the genotypes.

Run: ``.venv/bin/python benchmarks/latency.py`` (quickstart: 4 minutes on 2 cores; ucf101: minutes per
genotype). Environment: ``BENCH_CONFIGS`` (comma-separated tune_configs names, default ``quickstart,ucf101``),
``BENCH_GENOTYPES`` (default 8), ``BENCH_THREADS`` (default 1: trials time latency on the cores they own),
``BENCH_JSON`` (write the rows there).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autovid.config import load_config  # noqa: E402
from autovid.engine.accounting import count_flops, latency  # noqa: E402
from autovid.engine.networks import build_network  # noqa: E402
from autovid.engine.onnx import onnx_latency  # noqa: E402
from autovid.engine.setup import clip_shape  # noqa: E402
from autovid.nas.sampling import sample_genotype  # noqa: E402
from autovid.nas.search_space import load_search_space  # noqa: E402
from autovid.provenance import git_commit, git_dirty  # noqa: E402

CLASSES = 101  # the classifier's width does not move these figures: UCF101's


def measure(config: str, genotypes: int, threads: int) -> list[dict[str, Any]]:
    """One row per genotype of `config`'s space: eager and ORT latency at batch 1 and B, and FLOPs per clip."""
    cfg = load_config(config)
    space = load_search_space(cfg.search_space)
    rng = np.random.default_rng(0)
    shape = clip_shape(cfg.data)  # one clip: [K, C, L, H, W]
    batch = cfg.data.batch_size
    rows = []
    for i in range(genotypes):
        genotype = sample_genotype(space, rng)
        net = build_network(cfg, num_classes=CLASSES, genotype=genotype, space=space).eval()
        eager = [latency(net, (b, *shape), device="cpu") for b in (1, batch)]
        ort = onnx_latency(net, shape, (1, batch), threads=threads)
        row = {"config": config, "genotype": genotype.hash, "batch": batch,
               "flops": count_flops(net, (1, *shape), device="cpu"),
               "eager_ms_1": eager[0].median_ms, "eager_ms_b": eager[1].median_ms,
               "ort_ms_1": ort[0].median_ms, "ort_ms_b": ort[1].median_ms, "runtime": ort[0].runtime}
        rows.append(row)
        print(f"{config:>10} {i:>2} {genotype.hash} {row['flops'] / 1e6:9.1f} MFLOPs  batch 1: eager "
              f"{row['eager_ms_1']:8.2f} ms  ORT {row['ort_ms_1']:8.2f} ms   batch {batch}: eager "
              f"{row['eager_ms_b']:8.2f} ms  ORT {row['ort_ms_b']:8.2f} ms", flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> None:
    """Per config and batch: the median ORT/eager ratio and the rank agreement of the two runtimes and FLOPs."""
    print("\nconfig      batch  median ORT/eager  ρ(eager, ORT)  ρ(eager, FLOPs)  ρ(ORT, FLOPs)  genotypes")
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        for suffix, label in (("1", "1"), ("b", str(mine[0]["batch"]))):
            eager = [r[f"eager_ms_{suffix}"] for r in mine]
            ort = [r[f"ort_ms_{suffix}"] for r in mine]
            flops = [r["flops"] for r in mine]
            ratio = statistics.median(o / e for o, e in zip(ort, eager))
            rho = [stats.spearmanr(a, b).statistic for a, b in ((eager, ort), (eager, flops), (ort, flops))]
            print(f"{config:<11} {label:>5}  {ratio:16.2f}  {rho[0]:13.2f}  {rho[1]:15.2f}  {rho[2]:13.2f}  "
                  f"{len(mine):9d}")


def main() -> None:
    configs = [c for c in os.environ.get("BENCH_CONFIGS", "quickstart,ucf101").split(",") if c]
    genotypes = int(os.environ.get("BENCH_GENOTYPES", "8"))
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    commit = git_commit(Path(__file__).parent) + ("+dirty" if git_dirty(Path(__file__).parent) else "")
    print(f"commit {commit}; torch {torch.__version__}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; {threads} intra-op thread(s) in both runtimes")
    rows: list[dict[str, Any]] = []
    for config in configs:  # a config's summary as soon as it is measured: the ucf101 rows take minutes each
        mine = measure(config, genotypes, threads)
        summarize(mine)
        rows += mine
        if os.environ.get("BENCH_JSON"):
            Path(os.environ["BENCH_JSON"]).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
