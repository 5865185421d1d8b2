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
and restores `get_state()`; runs are also re-found by tag, so the same parent and child runs continue. The
first time a session touches a child run it asks MLflow for the last step of every metric key and never
logs a step at or below it: the restored state comes from the last experiment snapshot, which can be older
than what MLflow already holds, so it is not trusted for steps. A trial the killed driver started after that
snapshot is unknown to the resumed experiment (Tune starts another in its place): at the experiment's end its
run, still RUNNING, is closed as KILLED and tagged `autovid.orphaned_by_resume`, its metrics kept.

A tracking failure is a warning, never a failed experiment. When the store is unavailable (unreachable
server, read-only or corrupt SQLite file, full disk) the first failing call is also the last: MLflow's
retries are bounded (`tracking.fail_fast`, `tracking.check_store`), one warning says so, and for the rest
of the session every event is appended to `mlflow_spool.jsonl` in the experiment folder instead (Tune's
driver staging folder when the storage is remote; `spool_path` overrides both). The next session that
reaches the store (`--resume`) replays that spool into MLflow before it logs anything else, then deletes
it; replaying is idempotent (runs found by tag, steps MLflow holds skipped, artifacts overwritten), so a
replay cut short is simply replayed again. A failure that is no outage (a value MLflow rejects, a plot that
cannot be drawn) is a warning for that event alone.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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
TAG_TUNE_RUN = "autovid.tune_run"  # on a child run: the Tune experiment (parent_run_name) that started it
TAG_ORPHANED = "autovid.orphaned_by_resume"  # on a child run whose trial the resumed experiment no longer has
SPOOL_NAME = "mlflow_spool.jsonl"
DONE_STATUSES = ("TERMINATED", "ERROR")  # Tune trial statuses that end a trial for good

# Attributes that describe this driver process, not the experiment: never pickled, so a resumed session
# connects afresh, retries a store that failed last time, and re-reads from MLflow what it holds.
_SESSION_ATTRS = ("_tracker", "_offline", "_replayed", "_spool_failed", "_synced", "_logged", "_monitor",
                  "_lineage")

ConfigResolver = Callable[[dict[str, Any]], Mapping[str, Any]]
Event = dict[str, Any]


def read_spool(path: str | Path) -> list[Event]:
    """The events of a spool file, in order; a torn last line (the driver died mid-write) is skipped."""
    events: list[Event] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("MLflow spool %s: line %d is not JSON (torn write); skipped", path, number)
    return events


def spool_location(trial: Trial) -> str | None:
    """`mlflow_spool.jsonl` in the trial's experiment folder (Tune's driver staging folder for remote storage)."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return None
    local = getattr(storage.storage_filesystem, "type_name", "") == "local"
    folder = storage.experiment_fs_path if local else storage.experiment_driver_staging_path
    return str(Path(folder) / SPOOL_NAME)


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
        spool_path: where events wait while the store is unavailable; default `mlflow_spool.jsonl` in the
            experiment folder, learnt from the first trial.
        manifest: the manifest file the trials train on; every run it creates (parent and children) logs it as
            its MLflow dataset input (lineage: digest, classes, split sizes).
        system_metrics: MLflow's system metrics on the parent run, sampled in this (driver) process from setup
            to the end of the experiment.
    """

    def __init__(self, tracker_uri: str, experiment: str, parent_run_name: str,
                 parent_params: Mapping[str, Any] | None = None,
                 parent_tags: Mapping[str, Any] | None = None,
                 config_resolver: ConfigResolver | None = None,
                 *, experiment_key: str | None = None, spool_path: str | Path | None = None,
                 manifest: str | Path | None = None, system_metrics: bool = False) -> None:
        self.tracker_uri = tracker_uri
        self.experiment = experiment
        self.parent_run_name = parent_run_name
        self.parent_params = dict(parent_params or {})
        self.parent_tags = {str(k): str(v) for k, v in (parent_tags or {}).items()}
        self.config_resolver = config_resolver
        self.experiment_key = experiment_key or uuid.uuid4().hex
        self.spool_path = str(spool_path) if spool_path is not None else None
        self.manifest = str(manifest) if manifest is not None else None
        self.system_metrics = system_metrics
        self.parent_run_id: str | None = None
        self._runs: dict[str, str] = {}          # trial_id -> child run id
        self._ended: set[str] = set()            # trial ids whose child run was terminated
        self._alphas: dict[str, dict[int, str]] = {}  # trial_id -> {epoch: alphas JSON}
        self._genotype: dict[str, str] = {}      # trial_id -> last genotype JSON
        self._genotype_hash: dict[str, str] = {}
        self._new_session()

    # -- plumbing ---------------------------------------------------------------------------------
    def _new_session(self) -> None:
        """Reset what belongs to this driver process (see _SESSION_ATTRS)."""
        self._tracker: tracking.Tracker | None = None
        self._offline = False                    # the store failed this session: events go to the spool
        self._replayed = False                   # the spool of earlier sessions was replayed
        self._spool_failed = False               # the spool itself could not be written (warned once)
        self._synced: set[str] = set()           # trial ids whose run was re-read from MLflow this session
        self._logged: dict[str, dict[str, int]] = {}  # trial_id -> metric key -> last step MLflow holds
        self._monitor: tracking.SystemMetrics | None = None  # MLflow's system metrics thread, when asked for
        self._lineage: tracking.ManifestLineage | None = None  # the manifest, read once per session

    def __getstate__(self) -> dict[str, Any]:
        # an MlflowClient (DB engine) does not pickle, and what MLflow holds is re-read by the next session
        return {k: v for k, v in self.__dict__.items() if k not in _SESSION_ATTRS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"manifest": None, "system_metrics": False, **state}  # pickled before these attributes existed
        self.__dict__.update(state)
        self._new_session()

    @property
    def tracker(self) -> tracking.Tracker:
        """The Tracker, created on first use (in the driver, never at construction)."""
        if self._offline:  # never a second attempt in a session: each one costs MLflow's retries
            raise tracking.TrackingUnavailable(f"{self.tracker_uri} failed earlier in this session")
        if self._tracker is None:
            self._tracker = tracking.Tracker(self.tracker_uri, self.experiment)
        return self._tracker

    @property
    def run_ids(self) -> dict[str, str]:
        """trial_id -> child run id, for the trials seen so far."""
        return dict(self._runs)

    @property
    def offline(self) -> bool:
        """Whether the store failed in this session (events are being spooled)."""
        return self._offline

    def get_state(self) -> dict[str, Any] | None:
        return {
            "experiment_key": self.experiment_key, "parent_run_id": self.parent_run_id,
            "spool_path": self.spool_path, "runs": dict(self._runs), "ended": sorted(self._ended),
            "alphas": {t: dict(a) for t, a in self._alphas.items()}, "genotype": dict(self._genotype),
            "genotype_hash": dict(self._genotype_hash),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        # "last_step" of older snapshots is ignored on purpose: steps are asked from MLflow (see _sync)
        self.experiment_key = state.get("experiment_key", self.experiment_key)
        self.parent_run_id = state.get("parent_run_id") or self.parent_run_id
        self.spool_path = state.get("spool_path") or self.spool_path
        self._runs.update(state.get("runs", {}))
        self._ended.update(state.get("ended", []))
        for trial_id, alphas in state.get("alphas", {}).items():
            self._alphas.setdefault(trial_id, {}).update(alphas)
        self._genotype.update(state.get("genotype", {}))
        self._genotype_hash.update(state.get("genotype_hash", {}))

    # -- online, spooled or replayed ----------------------------------------------------------------
    def _record(self, event: Event, trial: Trial | None = None) -> None:
        """Apply `event` to MLflow now or, once the store has failed this session, append it to the spool."""
        if not self._offline:
            try:
                with tracking.fail_fast():
                    self._connect(trial)
                    self._apply(event)
                return
            except Exception as exc:  # noqa: BLE001 - tracking must never kill the experiment
                if not tracking.store_unavailable(exc):
                    self._warn(f"{event['op']} of trial {event.get('trial', '-')}", exc)
                    return
                self._go_offline(exc, trial)
        self._spool(event, trial)

    def _connect(self, trial: Trial | None) -> tracking.Tracker:
        """The Tracker; the first time in a session that the spool file is known, replay it first."""
        tracker = self.tracker
        if not self._replayed and self._spool_file(trial) is not None:
            self._replayed = True  # a replay cut short goes offline: the spool stays for the next session
            self._replay()
        return tracker

    def _replay(self) -> None:
        """Apply the spooled events of earlier sessions in order, then delete the spool."""
        path = self._spool_file(None)
        if path is None or not path.exists():
            return
        events = read_spool(path)
        for event in events:
            try:
                self._apply(event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not block the others
                if tracking.store_unavailable(exc):
                    raise
                self._warn(f"replaying {event.get('op')} of trial {event.get('trial', '-')}", exc)
        try:
            path.unlink()
        except OSError as exc:  # the store is fine: replaying it again later is harmless (idempotent)
            logger.warning("MLflow tracking: replayed %s but cannot delete it (%s)", path, tracking.describe(exc))
            return
        logger.info("MLflow: replayed %d spooled events from %s into %s", len(events), path, self.tracker_uri)

    def _go_offline(self, exc: BaseException, trial: Trial | None) -> None:
        """Stop calling the store for the rest of the session, and say so once."""
        self._offline = True
        self._tracker = None
        spool = self._spool_file(trial)
        logger.warning("MLflow tracking: store %s unavailable (%s); not retried in this session: metrics and "
                       "events go to %s and are replayed into MLflow when the experiment is resumed",
                       self.tracker_uri, tracking.describe(exc),
                       spool if spool is not None else f"{SPOOL_NAME} in the experiment folder")

    def _spool_file(self, trial: Trial | None) -> Path | None:
        """The spool file: given, restored, or learnt from `trial`; None while none is known."""
        if self.spool_path is None and trial is not None:
            self.spool_path = spool_location(trial)
        return Path(self.spool_path) if self.spool_path is not None else None

    def _spool(self, event: Event, trial: Trial | None) -> None:
        """Append `event` to the spool file as one JSON line."""
        if event["op"] == "setup":
            return  # the parent run is implied: replay creates or finds it first
        path = self._spool_file(trial)
        if path is None:  # only without Tune storage (a hand-made Trial) and without spool_path
            if not self._spool_failed:
                self._spool_failed = True
                logger.warning("MLflow tracking: no experiment folder to spool events into; they are lost")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
            # Appended with one write of one whole line and synced: a crash can only tear the last line,
            # which read_spool skips; earlier events are never rewritten.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._spool_failed:
                self._spool_failed = True
                logger.warning("MLflow tracking: cannot spool events to %s either (%s); they are lost",
                               path, tracking.describe(exc))

    def _warn(self, what: str, exc: BaseException) -> None:
        """One warning line for a failure that is not an outage."""
        logger.warning("MLflow tracking: %s failed: %s", what, tracking.describe(exc),
                       exc_info=logger.isEnabledFor(logging.DEBUG))

    @contextmanager
    def _soft(self, what: str) -> Iterator[None]:
        """An optional part of an event (a plot, an artifact): a warning, unless the store itself is down."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001
            if tracking.store_unavailable(exc):
                raise
            self._warn(what, exc)

    # -- applying events to MLflow ------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        """Apply one event (live or replayed) to MLflow; raises what MLflow raises."""
        handlers = {"setup": self._apply_setup, "start": self._apply_start, "result": self._apply_result,
                    "finish": self._apply_finish, "end": self._apply_end}
        handler = handlers.get(str(event.get("op")))
        if handler is None:
            raise ValueError(f"unknown MLflow event {event.get('op')!r}")
        handler(event)

    def _apply_setup(self, event: Event) -> None:
        if self.parent_run_id is not None:  # state restored by Tuner.restore: continue that run
            self.tracker.reopen(self.parent_run_id)
        parent = self._ensure_parent()
        if self.system_metrics and self._monitor is None:
            with self._soft("system metrics"):
                self._monitor = self.tracker.system_metrics(parent)

    def _apply_start(self, event: Event) -> None:
        self._child(event["trial"], event["name"], event.get("params"))

    def _apply_result(self, event: Event) -> None:
        trial_id, step = event["trial"], int(event["step"])
        run_id = self._child(trial_id, event["name"])
        logged = self._logged.setdefault(trial_id, {})
        fresh = {k: v for k, v in event["metrics"].items() if k not in logged or step > logged[k]}
        if len(fresh) < len(event["metrics"]):
            logger.debug("trial %s step %d: %d metrics MLflow already holds skipped", trial_id, step,
                         len(event["metrics"]) - len(fresh))
        if fresh:
            for key in self.tracker.log_metrics(run_id, fresh, step):
                logged[key] = step
        hash_ = event.get("genotype_hash")
        if isinstance(hash_, str) and hash_ != self._genotype_hash.get(trial_id):
            self.tracker.set_tags(run_id, {tracking.TAG_GENOTYPE_HASH: hash_})
            self._genotype_hash[trial_id] = hash_

    def _apply_finish(self, event: Event) -> None:
        trial_id = event["trial"]
        run_id = self._child(trial_id, event["name"])
        genotype = event.get("genotype")
        if isinstance(genotype, str):
            with self._soft(f"genotype of trial {trial_id}"):
                self.tracker.log_genotype(run_id, genotype)
        history = event.get("alphas")
        if history:
            with self._soft(f"alpha history of trial {trial_id}"):
                rows = [row for epoch in sorted(history, key=int)
                        for row in tracking.alpha_rows(history[epoch], int(epoch))]
                self.tracker.log_alpha_history(run_id, rows)
        self.tracker.end(run_id, event["status"])
        self._ended.add(trial_id)

    def _apply_end(self, event: Event) -> None:
        statuses: dict[str, str] = event.get("statuses", {})
        parent = self._ensure_parent()
        for trial_id, run_id in self._runs.items():
            # interrupted: resumable later. A run this session never touched keeps the status MLflow has
            # unless Tune says its trial is still unfinished (the restored `ended` may be stale).
            touched = trial_id in self._synced
            if trial_id not in self._ended and (touched or statuses.get(trial_id) not in DONE_STATUSES):
                self.tracker.end(run_id, "KILLED")
                self._ended.add(trial_id)
        self._close_orphans(parent, statuses)
        unfinished = [t for t, s in statuses.items() if s not in DONE_STATUSES]
        self._stop_monitor()  # its last batch lands before the run ends
        self.tracker.end(parent, "KILLED" if unfinished else "FINISHED")

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            with self._soft("system metrics"):
                monitor.finish()

    def _close_orphans(self, parent: str, statuses: Mapping[str, str]) -> None:
        """Close as KILLED (tagged TAG_ORPHANED) this experiment's runs still RUNNING whose trial Tune no longer has.

        A driver killed after starting a trial but before its next experiment snapshot leaves that trial's run
        RUNNING; the resumed experiment never hears of the trial again (the searcher asks for a new one in its
        place), so nothing else would ever end it. Its metrics stay: they were reported."""
        for run_id, trial_id in self.tracker.open_children(parent, tracking.TAG_TRIAL_ID,
                                                           {TAG_TUNE_RUN: self.parent_run_name}).items():
            if trial_id in statuses or trial_id in self._runs:
                continue
            self.tracker.set_tags(run_id, {TAG_ORPHANED: "true"})
            self.tracker.end(run_id, "KILLED")
            logger.info("MLflow: run %s of trial %s, started by an interrupted driver after its last snapshot, "
                        "closed as KILLED", run_id, trial_id)

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
                self._log_manifest(self.parent_run_id)
        return self.parent_run_id

    def _child(self, trial_id: str, name: str, params: Mapping[str, Any] | None = None) -> str:
        """The child run of a trial: known, found by tag (resume), or created (with `params`)."""
        tracker = self.tracker
        run_id = self._runs.get(trial_id)
        if run_id is None:
            parent = self._ensure_parent()
            run_id = tracker.find_run(tracking.TAG_TRIAL_ID, trial_id, parent_id=parent)
            if run_id is None:
                tags = {**tracking.standard_tags(), **self.parent_tags,
                        tracking.TAG_TRIAL_ID: trial_id, TAG_TRIAL_NAME: name, TAG_TUNE_RUN: self.parent_run_name}
                run_id = tracker.start_child(parent, name, params, tags)
                self._runs[trial_id] = run_id
                self._synced.add(trial_id)
                self._logged[trial_id] = {}
                self._log_manifest(run_id)
                if params is not None:
                    with self._soft(f"config artifact of trial {trial_id}"):
                        tracker.log_dict(run_id, tracking.flatten_params(params), "config.yaml")
                return run_id
            self._runs[trial_id] = run_id
        if trial_id not in self._synced:
            self._sync(trial_id, run_id)
        elif trial_id in self._ended:  # restarted after being ended in this session (retry, unpause)
            tracker.reopen(run_id)
            self._ended.discard(trial_id)
        return run_id

    def _log_manifest(self, run_id: str) -> None:
        """The manifest as the new run's dataset input (lineage); a manifest that cannot be read is a warning."""
        if self.manifest is None:
            return
        if self._lineage is None:
            try:
                self._lineage = tracking.manifest_lineage(self.manifest)
            except Exception as exc:  # noqa: BLE001 - the file's fault, not the store's: the runs go on without it
                self._warn(f"reading the manifest {self.manifest} for lineage", exc)
                return
        with self._soft(f"dataset input of run {run_id}"):
            self.tracker.log_manifest(run_id, self._lineage)

    def _sync(self, trial_id: str, run_id: str) -> None:
        """First touch of a run in this session: reopen it, and learn from MLflow the last step of every key."""
        tracker = self.tracker
        if tracker.status(run_id) != "RUNNING":
            tracker.reopen(run_id)
        self._ended.discard(trial_id)
        self._logged[trial_id] = tracker.last_steps(run_id)
        self._synced.add(trial_id)

    def _params(self, trial: Trial) -> dict[str, str] | None:
        """Flat params of a trial whose run may have to be created; None when its run is known."""
        if trial.trial_id in self._runs:
            return None
        config = dict(trial.config or {})
        try:
            resolved = self.config_resolver(config) if self.config_resolver is not None else config
        except Exception as exc:  # noqa: BLE001 - the raw sampled config is still worth logging
            self._warn(f"resolving the config of trial {trial.trial_id}", exc)
            resolved = config
        return tracking.flatten_params(resolved)

    # -- Tune hooks -------------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._record({"op": "setup"})

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._record({"op": "start", "trial": trial.trial_id, "name": str(trial), "params": self._params(trial)},
                     trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        trial_id = trial.trial_id
        step = result.get("training_iteration")
        if step is None:
            step = max(self._logged.get(trial_id, {}).values(), default=0) + 1
        alphas = result.get("alphas")
        if isinstance(alphas, str):
            epoch = int(result.get("epoch", step))
            self._alphas.setdefault(trial_id, {})[epoch] = alphas
        genotype = result.get("genotype")
        if isinstance(genotype, str):
            self._genotype[trial_id] = genotype
        hash_ = result.get("genotype_hash")
        metrics = tracking.numeric_metrics({k: v for k, v in result.items() if k not in RAY_BOOKKEEPING_KEYS})
        self._record({"op": "result", "trial": trial_id, "name": str(trial), "step": int(step),
                      "metrics": metrics, "genotype_hash": hash_ if isinstance(hash_, str) else None}, trial)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._record({"op": "end", "statuses": {t.trial_id: t.status for t in trials}},
                     trials[0] if trials else None)

    def _finish(self, trial: Trial, status: str) -> None:
        trial_id = trial.trial_id
        if trial_id in self._ended:
            return
        if trial_id not in self._runs and not trial.last_result:
            return  # stopped before it ever started: no run to close
        genotype = self._genotype.get(trial_id) or (trial.last_result or {}).get("genotype")
        history = self._alphas.get(trial_id)
        self._record({"op": "finish", "trial": trial_id, "name": str(trial), "status": status,
                      "genotype": genotype if isinstance(genotype, str) else None,
                      "alphas": {str(epoch): a for epoch, a in history.items()} if history else None}, trial)
        if status == "FINISHED":  # an errored trial may be resumed: keep its α history until then
            self._alphas.pop(trial_id, None)
