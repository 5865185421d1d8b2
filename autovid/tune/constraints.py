"""`tune.constraints` in a study: Optuna's constraint values set from Tune results, and feasibility of trial rows.

    Tune result ─▶ ConstrainedOptunaSearch.on_trial_complete: one `Trial.set_constraint(name, violation)` per
                   constraint (<= 0 feasible; Optuna 5's constraints API, stored with the trial in the journal and
                   shown by optuna-dashboard) ─▶ study.tell ─▶ TPE / NSGA-II sample with feasibility in mind,
                   and Optuna's best trials are feasible ones
    summary row  ─▶ feasibility(row) -> True / False / None (a bounded metric missing): the same arithmetic
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from autovid.config import Constraint

INFEASIBLE = math.inf  # the violation of a constraint whose metric a trial never reported


def violations(constraints: Sequence[Constraint], metrics: Mapping[str, Any]) -> list[float]:
    """Each constraint's violation (<= 0 feasible); a missing or non-numeric metric is infinitely infeasible."""
    out = []
    for constraint in constraints:
        value = _number(metrics.get(constraint.metric))
        out.append(INFEASIBLE if value is None else constraint.violation(value))
    return out


def feasibility(constraints: Sequence[Constraint], metrics: Mapping[str, Any]) -> bool | None:
    """Whether `metrics` satisfy every constraint; None when a bounded metric is missing (an errored trial)."""
    if any(_number(metrics.get(c.metric)) is None for c in constraints):
        return None
    return all(v <= 0 for v in violations(constraints, metrics))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets a finished trial's constraint values on its Optuna trial before telling it.

    Why: OptunaSearch tells Optuna only the objective values; a constraint on another metric
    (`genotype/params`, `genotype/latency_ms`) reaches the sampler only as a constraint value of that trial.
    Its name is the constraint's text (`genotype/params <= 1e+06`); a bounded metric the trial never reported
    makes it infinitely infeasible."""

    def __init__(self, *args: Any, constraints: Sequence[Constraint] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._constraints = tuple(constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if self._constraints and trial is not None and result and trial_id not in self._completed_trials:
            for constraint, violation in zip(self._constraints, violations(self._constraints, result), strict=True):
                trial.set_constraint(str(constraint), violation)
        super().on_trial_complete(trial_id, result, error)
