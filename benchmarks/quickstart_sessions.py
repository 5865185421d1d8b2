"""The quickstart's inner loop without Ray or MLflow: one DARTS search, then its genotype retrained, on one device.

`make demo` runs four such searches as Ray Tune trials under ASHA; this script times one search and the
retrain of its genotype as plain engine sessions, so the same work can be measured on a machine that has a
GPU but no Ray (and compared with the CPU here). It prints, per epoch, the seconds and the metrics, then the
totals and the retrained network's test accuracy.

Run: ``.venv/bin/python benchmarks/quickstart_sessions.py``. Environment variables (no argument parsing):
``BENCH_DEVICE`` (``cpu`` default, or ``cuda``), ``BENCH_AUTOCAST`` (``none`` default, or ``bf16`` on CUDA),
``BENCH_THREADS`` (CPU threads, default 1: a Tune trial's share), ``BENCH_OVERRIDES`` (space-separated
dotted overrides of the quickstart config, e.g. ``search.alpha_lr=0.01 train.epochs=20``),
``BENCH_JSON`` (write the results there).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autovid.config import load_config  # noqa: E402
from autovid.engine.session import SearchSession, TrainSession  # noqa: E402
from autovid.nas.genotype import Genotype  # noqa: E402


def main() -> None:
    device = os.environ.get("BENCH_DEVICE", "cpu")
    overrides = [f"device={device}", f"autocast={os.environ.get('BENCH_AUTOCAST', 'none')}",
                 *os.environ.get("BENCH_OVERRIDES", "").split()]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    cfg = load_config("quickstart", overrides)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "-"
    print(f"device {device} ({gpu}), {torch.get_num_threads()} CPU thread(s), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}; overrides: {' '.join(overrides)}", flush=True)

    started = time.perf_counter()
    search = SearchSession(cfg)
    setup_s = time.perf_counter() - started
    search_epochs = []
    while not search.done:
        m = search.step()
        search_epochs.append(m["time/epoch_s"])
        print(f"search epoch {m['epoch']}: {m['time/epoch_s']:.2f} s  train/acc {m['train/acc']:.3f}  "
              f"val/acc {m['val/acc']:.3f}  clips/s {m['train/clips_per_s']:.1f}  genotype {m['genotype_hash']}",
              flush=True)
    genotype = Genotype.from_json(m["genotype"])

    train = TrainSession(cfg, genotype)
    train_epochs = []
    while not train.done:
        r = train.step()
        train_epochs.append(r["time/epoch_s"])
        print(f"train epoch {r['epoch']}: {r['time/epoch_s']:.2f} s  train/acc {r['train/acc']:.3f}  "
              f"test/acc {r['test/acc']:.3f}  clips/s {r['train/clips_per_s']:.1f}", flush=True)
    total = time.perf_counter() - started
    result = {
        "device": device, "gpu": gpu, "overrides": overrides, "setup_s": setup_s,
        "search_s": sum(search_epochs), "search_epoch_s": search_epochs,
        "train_s": sum(train_epochs), "train_epoch_s": train_epochs, "total_s": total,
        "genotype": genotype.hash, "params": r["params"], "flops": r["flops"],
        "test_acc": r["test/acc"], "test_top5": r["test/top5"],
    }
    print(f"search {result['search_s']:.1f} s ({len(search_epochs)} epochs), retrain {result['train_s']:.1f} s "
          f"({len(train_epochs)} epochs), total {total:.1f} s with setup; genotype {genotype.hash}, "
          f"{r['params']:,} params, test top-1 {r['test/acc']:.3f}, top-5 {r['test/top5']:.3f}")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
