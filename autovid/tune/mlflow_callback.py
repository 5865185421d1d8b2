"""Driver-side Ray Tune callback: one MLflow parent run per experiment, one nested child run per trial.

All MLflow writes happen here, in the Tune driver process, one hook at a time, so concurrent trials never
write to an SQLite tracking store concurrently and no metric is lost:

    Tuner.fit()                       MLflow (via autovid.tracking.Tracker)
      setup ───────────────────────▶  parent run   (tag autovid.experiment_id = experiment_key)
      on_trial_start(trial) ───────▶    child run  (tag autovid.trial_id, mlflow.parentRunId; params)
      on_trial_result(result) ─────▶      metrics at step = training_iteration; α / genotype kept
      on_trial_complete / _error ──▶      genotype.json + png, alpha_history.parquet + png; FINISHED/FAILED
      on_experiment_end ───────────▶  parent FINISHED (KILLED when interrupted)

Resume (Tuner.restore): Tune unpickles this callback from the experiment folder (same `experiment_key`)
and restores `get_state()`; runs are also re-found by tag, so the same parent and child runs continue, and
steps already logged are not logged twice. A tracking failure is a warning, never a failed experiment.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from autovid import tracking

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

# Keys Ray adds to every result that are bookkeeping, not measurements (time_this_iter_s / time_total_s
# are kept: they are useful curves). training_iteration is the step itself.
RAY_BOOKKEEPING_KEYS = frozenset({
    "training_iteration", "iterations_since_restore", "time_since_restore", "timesteps_since_restore",
    "timesteps_total", "episodes_total", "timestamp", "pid", "done", "should_checkpoint",
    "checkpoint_dir_name", "date", "hostname", "node_ip", "trial_id", "experiment_tag", "config",
})

TAG_TRIAL_NAME = "autovid.trial_name"

ConfigResolver = Callable[[dict[str, Any]], Mapping[str, Any]]


class MLflowTrialCallback(Callback):
    """Nested MLflow runs for a Tune experiment, logged from the driver.

    Args:
        tracker_uri: MLflow tracking URI (`sqlite:///...` or a server).
        experiment: MLflow experiment name.
        parent_run_name: name of the parent run.
        parent_params: params of the parent run (the experiment config), flattened to dotted keys.
        parent_tags: tags of the parent run; children inherit them (search space, ...).
        config_resolver: maps `trial.config` to the flat params of the child run (the fully resolved
            config); a module-level function, since the callback is pickled with the experiment.
            None: `trial.config` flattened.
        experiment_key: identifies the experiment across resumes (tag `autovid.experiment_id`);
            default a fresh uuid, which Tune keeps by pickling this callback into the experiment folder.
    """

    def __init__(self, tracker_uri: str, experiment: str, parent_run_name: str,
                 parent_params: Mapping[str, Any] | None = None,
                 parent_tags: Mapping[str, Any] | None = None,
                 config_resolver: ConfigResolver | None = None,
                 *, experiment_key: str | None = None) -> None:
        self.tracker_uri = tracker_uri
        self.experiment = experiment
        self.parent_run_name = parent_run_name
        self.parent_params = dict(parent_params or {})
        self.parent_tags = {str(k): str(v) for k, v in (parent_tags or {}).items()}
        self.config_resolver = config_resolver
        self.experiment_key = experiment_key or uuid.uuid4().hex
        self._tracker: tracking.Tracker | None = None
        self.parent_run_id: str | None = None
        self._runs: dict[str, str] = {}          # trial_id -> child run id
        self._ended: set[str] = set()            # trial ids whose child run was terminated
        self._last_step: dict[str, int] = {}     # trial_id -> last step logged (resume: no double logging)
        self._alphas: dict[str, dict[int, str]] = {}  # trial_id -> {epoch: alphas JSON}
        self._genotype: dict[str, str] = {}      # trial_id -> last genotype JSON
        self._genotype_hash: dict[str, str] = {}

    # -- plumbing ---------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tracker"] = None  # an MlflowClient (DB engine) does not pickle; recreated lazily
        return state

    @property
    def tracker(self) -> tracking.Tracker:
        """The Tracker, created on first use (in the driver, never at construction)."""
        if self._tracker is None:
            self._tracker = tracking.Tracker(self.tracker_uri, self.experiment)
        return self._tracker

    @property
    def run_ids(self) -> dict[str, str]:
        """trial_id -> child run id, for the trials seen so far."""
        return dict(self._runs)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - tracking must never kill the experiment
            logger.warning("MLflow tracking: %s failed: %s: %s", what, type(exc).__name__, exc,
                           exc_info=logger.isEnabledFor(logging.DEBUG))

    def get_state(self) -> dict[str, Any] | None:
        return {
            "experiment_key": self.experiment_key, "parent_run_id": self.parent_run_id,
            "runs": dict(self._runs), "ended": sorted(self._ended), "last_step": dict(self._last_step),
            "alphas": {t: dict(a) for t, a in self._alphas.items()}, "genotype": dict(self._genotype),
            "genotype_hash": dict(self._genotype_hash),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.experiment_key = state.get("experiment_key", self.experiment_key)
        self.parent_run_id = state.get("parent_run_id") or self.parent_run_id
        self._runs.update(state.get("runs", {}))
        self._ended.update(state.get("ended", []))
        self._last_step.update(state.get("last_step", {}))
        for trial_id, alphas in state.get("alphas", {}).items():
            self._alphas.setdefault(trial_id, {}).update(alphas)
        self._genotype.update(state.get("genotype", {}))
        self._genotype_hash.update(state.get("genotype_hash", {}))

    # -- runs -------------------------------------------------------------------------------------
    def _ensure_parent(self) -> str:
        if self.parent_run_id is None:
            tracker = self.tracker
            found = tracker.find_run(tracking.TAG_EXPERIMENT_ID, self.experiment_key)
            if found is not None:
                logger.info("MLflow: resuming parent run %s", found)
                tracker.reopen(found)
                self.parent_run_id = found
            else:
                tags = {**tracking.standard_tags(), **self.parent_tags,
                        tracking.TAG_EXPERIMENT_ID: self.experiment_key}
                self.parent_run_id = tracker.start_parent(self.parent_run_name, self.parent_params, tags)
                logger.info("MLflow: parent run %s in %s", self.parent_run_id, self.tracker_uri)
        return self.parent_run_id

    def _resolve(self, trial: Trial) -> Mapping[str, Any]:
        config = dict(trial.config or {})
        return self.config_resolver(config) if self.config_resolver is not None else config

    def _child(self, trial: Trial) -> str:
        """The child run of `trial`: known, found by tag (resume), or created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            if trial_id in self._ended:  # restarted after being ended (resume / unpause)
                self.tracker.reopen(self._runs[trial_id])
                self._ended.discard(trial_id)
            return self._runs[trial_id]
        parent = self._ensure_parent()
        tracker = self.tracker
        run_id = tracker.find_run(tracking.TAG_TRIAL_ID, trial_id, parent_id=parent)
        if run_id is not None:
            tracker.reopen(run_id)
            steps = [tracker.last_step(run_id, key)
                     for key in tracker.client.get_run(run_id).data.metrics]
            known = [s for s in steps if s is not None]
            if known:
                self._last_step[trial_id] = max(max(known), self._last_step.get(trial_id, 0))
        else:
            params = self._resolve(trial)
            tags = {**tracking.standard_tags(), **self.parent_tags,
                    tracking.TAG_TRIAL_ID: trial_id, TAG_TRIAL_NAME: str(trial)}
            run_id = tracker.start_child(parent, str(trial), params, tags)
            with self._guard(f"config artifact of trial {trial_id}"):
                tracker.log_dict(run_id, tracking.flatten_params(params), "config.yaml")
        self._runs[trial_id] = run_id
        return run_id

    # -- Tune hooks -------------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        with self._guard("parent run"):
            if self.parent_run_id is not None:  # state restored by Tuner.restore: continue that run
                self.tracker.reopen(self.parent_run_id)
            self._ensure_parent()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        with self._guard(f"child run of trial {trial.trial_id}"):
            self._child(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        trial_id = trial.trial_id
        with self._guard(f"result of trial {trial_id}"):
            run_id = self._child(trial)
            step = int(result.get("training_iteration", self._last_step.get(trial_id, 0) + 1))
            alphas = result.get("alphas")
            if isinstance(alphas, str):
                epoch = int(result.get("epoch", step))
                self._alphas.setdefault(trial_id, {})[epoch] = alphas
            genotype = result.get("genotype")
            if isinstance(genotype, str):
                self._genotype[trial_id] = genotype
            if step <= self._last_step.get(trial_id, 0):
                logger.debug("trial %s step %d already logged; skipping its metrics", trial_id, step)
                return
            metrics = {k: v for k, v in result.items() if k not in RAY_BOOKKEEPING_KEYS}
            self.tracker.log_metrics(run_id, metrics, step)
            self._last_step[trial_id] = step
            hash_ = result.get("genotype_hash")
            if isinstance(hash_, str) and hash_ != self._genotype_hash.get(trial_id):
                self.tracker.set_tags(run_id, {tracking.TAG_GENOTYPE_HASH: hash_})
                self._genotype_hash[trial_id] = hash_

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        statuses = {t.trial_id: t.status for t in trials}
        with self._guard("closing runs"):
            for trial_id, run_id in self._runs.items():
                if trial_id not in self._ended:  # interrupted: resumable later
                    self.tracker.end(run_id, "KILLED")
                    self._ended.add(trial_id)
            if self.parent_run_id is not None:
                unfinished = [t for t, s in statuses.items() if s not in ("TERMINATED", "ERROR")]
                self.tracker.end(self.parent_run_id, "KILLED" if unfinished else "FINISHED")

    def _finish(self, trial: Trial, status: str) -> None:
        trial_id = trial.trial_id
        if trial_id in self._ended:
            return
        if trial_id not in self._runs and not trial.last_result:
            return  # stopped before it ever started: no run to close
        with self._guard(f"closing trial {trial_id}"):
            run_id = self._child(trial)
            genotype = self._genotype.get(trial_id) or (trial.last_result or {}).get("genotype")
            if isinstance(genotype, str):
                with self._guard(f"genotype of trial {trial_id}"):
                    self.tracker.log_genotype(run_id, genotype)
            history = self._alphas.get(trial_id)
            if history:
                with self._guard(f"alpha history of trial {trial_id}"):
                    rows = [row for epoch in sorted(history)
                            for row in tracking.alpha_rows(history[epoch], epoch)]
                    self.tracker.log_alpha_history(run_id, rows)
            self.tracker.end(run_id, status)
            self._ended.add(trial_id)
            if status == "FINISHED":  # an errored trial may be resumed: keep its α history until then
                self._alphas.pop(trial_id, None)
