"""Does a search protocol agree with itself? Several seeds of one search as plain engine sessions (no Ray, no
MLflow): per seed, the derived genotype, the final α entropy and the α-half accuracy, then the operator
agreement between seeds (``autovid.report.operator_agreement``), optionally beside the same seeds' null
(``search.shuffle_labels=true``).

This is the quick loop for choosing a search protocol on the α half and on agreement (never on test
accuracy); `autovid null CONFIG` runs the same comparison as Ray Tune trials, as a user would.

Run: ``.venv/bin/python benchmarks/search_agreement.py CONFIG SEEDS [key=value ...]``, e.g.
``.venv/bin/python benchmarks/search_agreement.py quickstart 0,1,2 search.epochs=20``. Environment:
``BENCH_THREADS`` (CPU threads, default 1: a Tune trial's share), ``BENCH_NULL=1`` (also run each seed on
shuffled labels).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autovid.config import load_config  # noqa: E402
from autovid.engine.session import SearchSession  # noqa: E402
from autovid.report import operator_agreement  # noqa: E402


def search(config: str, seed: int, overrides: list[str]) -> dict:
    cfg = load_config(config, [f"seed={seed}", *overrides])
    started = time.perf_counter()
    session = SearchSession(cfg)
    while not session.done:
        metrics = session.step()
    ops = len(session.space.ops)
    return {"seed": seed, "seconds": time.perf_counter() - started, "val_acc": metrics["val/acc"],
            "entropy": metrics["alpha/entropy"] / math.log(ops), "hash": metrics["genotype_hash"],
            "genotype": metrics["genotype"]}


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    config, seeds, overrides = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    variants = {"true labels": overrides}
    if os.environ.get("BENCH_NULL") == "1":
        variants["shuffled labels"] = [*overrides, "search.shuffle_labels=true"]
    print(f"{config} seeds {seeds}; overrides: {' '.join(overrides) or '-'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    for name, extra in variants.items():
        runs = []
        for seed in seeds:
            run = search(config, seed, extra)
            runs.append(run)
            edges = [tuple(e) for e in json.loads(run["genotype"])["normal"]]
            print(f"  {name} seed {seed}: {run['seconds']:.0f} s, α-half top-1 {run['val_acc']:.3f}, "
                  f"α entropy {run['entropy']:.2f} ln #ops, genotype {run['hash']} {edges}", flush=True)
        if len(runs) > 1:
            print(f"{name}: operator agreement between seeds {operator_agreement([r['genotype'] for r in runs]):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
