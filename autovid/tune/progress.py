"""A concise console reporter: one line per trial epoch with the keys a NAS user watches."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

log = logging.getLogger("autovid.progress")

# (result key, label, format); missing keys are simply not shown.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("train/loss", "loss", "{:.3f}"),
    ("train/acc", "acc", "{:.3f}"),
    ("val/acc", "val_acc", "{:.3f}"),
    ("test/acc", "test_acc", "{:.3f}"),
    ("alpha/entropy", "H(α)", "{:.3f}"),
    ("genotype/skips", "skips", "{:d}"),
    ("genotype/params", "params", "{:,d}"),
    ("genotype_hash", "genotype", "{}"),
    ("time/epoch_s", "s/epoch", "{:.1f}"),
)


def format_result(trial_name: str, result: dict[str, Any]) -> str:
    parts = [f"{trial_name:<28}", f"epoch {int(result.get('epoch', result.get('training_iteration', 0))):>3}"]
    for key, label, fmt in COLUMNS:
        if key in result and result[key] is not None:
            value = result[key]
            try:
                text = fmt.format(int(value) if "d}" in fmt else value)
            except (TypeError, ValueError):
                text = str(value)
            parts.append(f"{label} {text}")
    return "  ".join(parts)


class ConsoleReporter(Callback):
    """Prints each trial's epoch results and its end state (Ray's own tables are switched off)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info("%s started", trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        log.info(format_result(str(trial), result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.info("%s finished", trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("%s failed (it is retried from its last checkpoint while max_failures allows)", trial)
