"""Benchmark the Tune driver under many reporting trials: results/s it absorbs and the lag from a trial's report
to its MLflow write (MLflowTrialCallback, MLflow on SQLite), at 16, 32 and 64 concurrent trials.

Each trial is a class Trainable that sleeps ``BENCH_INTERVAL`` seconds per step (0 = report flat out) and
returns a report shaped like a search epoch's (14 numeric keys) stamped with ``time.time()``, checkpointed
every step as a search trial is. The driver runs
the real callback (one nested child run per trial, params, metrics per step) behind a thin subclass that
notes, for every result, ``time.time()`` after the callback returned minus the trial's stamp: that is the
lag (Ray's transfer, the driver's event queue, then the SQLite write). Beside each MLflow run, the same
trials run with a callback that writes nothing (``none``), so the MLflow share of the lag is measured side by
side, on the same loaded machine.

    per (concurrency N, sink): N trials × BENCH_STEPS steps, all N at once (BENCH_CPUS / N CPUs each)
      (a start barrier: no trial reports before all N actors are up)
      results/s = results / (last write - first report); lag = median and p95 over every result
      write/s   = results / the callback's own time in on_trial_result (what the driver could absorb at most)

The driver saturates where the offered rate (N / interval) passes what it absorbs: the lag then grows with
the queue instead of staying near the write time. Run:

    .venv/bin/python benchmarks/driver_load.py

Environment (no argument parsing): ``BENCH_CONCURRENCY`` (default ``16,32,64``), ``BENCH_STEPS`` (reports per
trial, default 20), ``BENCH_INTERVAL`` (seconds between a trial's reports, default 0.5; ``0`` = flat out),
``BENCH_SINKS`` (default ``none,mlflow``), ``BENCH_CPUS`` (Ray's CPUs, default all), ``BENCH_JSON`` (write
the rows there).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray import tune  # noqa: E402

from autovid.tune.mlflow_callback import MLflowTrialCallback  # noqa: E402

logger = logging.getLogger("benchmarks.driver_load")

STAMP = "bench/report_time"
# what a search epoch reports (tests/tune/test_mlflow_callback.py NUMERIC_KEYS, plus the objective)
REPORT_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "alpha/entropy", "genotype/skips",
               "genotype/param_free", "genotype/params", "genotype/flops", "collapse/flag", "time/epoch_s",
               "objective", "time_this_iter_s")


class Reporter(tune.Trainable):
    """A trial that only reports: sleeps `interval` seconds, then returns a stamped search-epoch report."""

    def setup(self, config: dict[str, Any]) -> None:
        self.interval = float(config["interval"])
        self.lr = float(config["lr"])
        # a start barrier: N actors start over seconds to minutes on a small machine, and the point is N trials
        # reporting at once, so none reports before all are up
        barrier = Path(config["barrier"])
        (barrier / self.trial_id).touch()
        deadline = time.monotonic() + 900
        while len(list(barrier.iterdir())) < int(config["concurrency"]) and time.monotonic() < deadline:
            time.sleep(0.05)

    def step(self) -> dict[str, Any]:
        if self.interval:
            time.sleep(self.interval)
        epoch = self.iteration + 1
        report: dict[str, Any] = {key: self.lr + epoch / (i + 1) for i, key in enumerate(REPORT_KEYS)}
        report[STAMP] = time.time()
        return report

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # every step, as a search trial does (tune.checkpoint_frequency=1): the driver registers each one
        (Path(checkpoint_dir) / "state.json").write_text(json.dumps({"iteration": self.iteration}))

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        json.loads((Path(str(checkpoint)) / "state.json").read_text())


class LagMixin:
    """Notes, per result, the time from the trial's stamp to the callback's return, and the callback's own time."""

    lags: list[float]
    busy: float
    stamps: list[float]
    done: list[float]

    def _reset_clock(self) -> None:
        self.lags, self.busy, self.stamps, self.done = [], 0.0, [], []

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        stamp = result.pop(STAMP)
        start = time.perf_counter()
        super().on_trial_result(iteration, trials, trial, result, **info)  # type: ignore[misc]
        self.busy += time.perf_counter() - start
        now = time.time()
        self.lags.append(now - stamp)
        self.stamps.append(stamp)
        self.done.append(now)


class NoSinkCallback(LagMixin, tune.Callback):
    """The baseline: results reach the driver and go nowhere."""

    def __init__(self) -> None:
        self._reset_clock()


class TimedMLflowCallback(LagMixin, MLflowTrialCallback):
    """The real MLflow callback, timed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reset_clock()


def run_once(concurrency: int, sink: str, steps: int, interval: float, cpus: float, root: Path) -> dict[str, Any]:
    """One study of `concurrency` trials, all at once; returns its row."""
    folder = root / f"{sink}-{concurrency}"
    folder.mkdir(parents=True)
    barrier = folder / "barrier"
    barrier.mkdir()
    callback: LagMixin
    if sink == "mlflow":
        params = {f"base.section{i // 10}.key{i}": i for i in range(120)}  # a resolved config's size
        callback = TimedMLflowCallback(f"sqlite:///{folder / 'mlflow.db'}", "driver-load", f"load-{concurrency}",
                                       parent_params=params, config_resolver=None)
    else:
        callback = NoSinkCallback()
    trainable = tune.with_resources(Reporter, {"cpu": cpus / concurrency})
    tuner = tune.Tuner(
        trainable,
        param_space={"interval": interval, "lr": tune.loguniform(1e-3, 1e-1), "concurrency": concurrency,
                     "barrier": str(barrier)},
        tune_config=tune.TuneConfig(num_samples=concurrency, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name="load", storage_path=str(folder / "runs"), callbacks=[callback],
                                  stop={"training_iteration": steps}, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1)),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    errors = sum(r.error is not None for r in results)
    lags = sorted(callback.lags)
    n = len(lags)
    span = max(callback.done) - min(callback.stamps)
    return {
        "concurrency": concurrency, "sink": sink, "interval_s": interval, "results": n, "errors": errors,
        "offered_per_s": concurrency / interval if interval else None,
        "results_per_s": n / span, "write_per_s": n / callback.busy if callback.busy else None,
        "lag_median_ms": 1000 * statistics.median(lags), "lag_p95_ms": 1000 * lags[int(0.95 * (n - 1))],
        "lag_max_ms": 1000 * lags[-1], "wall_s": wall,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    concurrencies = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "16,32,64").split(",")]
    steps = int(os.environ.get("BENCH_STEPS", "20"))
    interval = float(os.environ.get("BENCH_INTERVAL", "0.5"))
    sinks = os.environ.get("BENCH_SINKS", "none,mlflow").split(",")
    cpus = float(os.environ.get("BENCH_CPUS", os.cpu_count() or 1))
    ray.init(num_cpus=int(cpus), include_dashboard=False, log_to_driver=False)
    rows = []
    print(f"{steps} reports per trial, {interval:g} s apart ({'flat out' if not interval else 'paced'}), "
          f"Ray CPUs {cpus:g}, machine cores {os.cpu_count()}")
    print(f"{'N':>3} {'sink':>6} {'offered/s':>9} {'results/s':>9} {'write/s':>8} {'lag med':>8} {'lag p95':>8} "
          f"{'lag max':>8} {'wall':>6}")
    with tempfile.TemporaryDirectory(prefix="driver-load-") as tmp:
        for concurrency in concurrencies:
            for sink in sinks:
                row = run_once(concurrency, sink, steps, interval, cpus, Path(tmp))
                rows.append(row)
                offered = f"{row['offered_per_s']:.0f}" if row["offered_per_s"] else "max"
                write = f"{row['write_per_s']:.0f}" if row["write_per_s"] else "-"
                print(f"{concurrency:>3} {sink:>6} {offered:>9} {row['results_per_s']:>9.1f} {write:>8} "
                      f"{row['lag_median_ms']:>6.0f}ms {row['lag_p95_ms']:>6.0f}ms {row['lag_max_ms']:>6.0f}ms "
                      f"{row['wall_s']:>5.0f}s" + (f"  {row['errors']} errors" if row["errors"] else ""), flush=True)
    ray.shutdown()
    for concurrency in concurrencies:
        by_sink = {r["sink"]: r for r in rows if r["concurrency"] == concurrency}
        if {"none", "mlflow"} <= set(by_sink):
            base, ml = by_sink["none"], by_sink["mlflow"]
            print(f"N={concurrency}: MLflow lag / no-sink lag (median) = "
                  f"{ml['lag_median_ms'] / base['lag_median_ms']:.1f}x, results/s ratio "
                  f"{ml['results_per_s'] / base['results_per_s']:.2f}")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
