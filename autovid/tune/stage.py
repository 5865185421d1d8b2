"""One way to run a Tune stage: the run every stage of a command shares, the stage, and its MLflow parent run.

    run = Run.open(cfg, resume=..., address=..., tracking_uri=...)   absolute paths, the MLflow URI
    run.check(cfg, "search", "train", genotype_json=...)             preflight: every check that needs no Ray
    run.start()                                                      data indexed once, storage checked, Ray up
    results = run.fit(Stage(trainable, cfg, space, name=..., ...))  tuner ─▶ fit ─▶ logs rewound, orphaned
                                                                     Optuna trials closed (a resumed study)
    parent = ParentRun.open(run); parent.record(what, kept, write)   MLflow best effort: a copy of the files

Every command (`tune`, `search`, `train`, `ablate`, `rank`, `vs-random`, `segments`, the null control) is a
short list of these steps; nothing else builds a Tuner.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from autovid import tracking
from autovid.config import ExperimentConfig
from autovid.engine.preflight import RunKind, preflight
from autovid.engine.setup import prepare_manifest
from autovid.errors import UserError
from autovid.files import is_remote
from autovid.tune.cluster import init_ray, is_local
from autovid.tune.experiment import experiment_dir, fit, make_callbacks, make_tuner, variant_generator
from autovid.tune.mlflow_callback import MLflowTrialCallback
from autovid.tune.resume_logs import fail_orphaned_trials

log = logging.getLogger(__name__)


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Trials run in their own working directories (and maybe other machines): ship absolute paths."""
    overrides: dict[str, Any] = {
        "data.cache_dir": str(Path(cfg.data.cache_dir).resolve()),
        "storage_path": _absolute_storage(str(cfg.storage_path)),
    }
    for key, value in (("data.root", cfg.data.root), ("data.manifest", cfg.data.manifest)):
        if value is not None:
            overrides[key] = str(Path(value).resolve())
    return cfg.with_overrides(overrides, source="resolved paths")


def _absolute_storage(path: str) -> str:
    return path if is_remote(path) else str(Path(path).resolve())


def resolve_run(cfg: ExperimentConfig, tracking_uri: str | None) -> tuple[ExperimentConfig, str]:
    """The config with absolute paths, and the MLflow URI (flag, then config, then ./mlflow.db)."""
    return absolute_paths(cfg), tracking_uri or cfg.tracking.uri or tracking.default_tracking_uri()


def check_storage(cfg: ExperimentConfig) -> None:
    """storage_path must be a writable folder (checked before Ray starts, not by each trial's first write)."""
    if is_remote(cfg.storage_path):
        return  # a remote filesystem (s3://, gs://): Ray's pyarrow filesystem reports its own errors
    root = Path(cfg.storage_path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".autovid-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"storage_path {str(root)!r} is not a writable folder: {exc.strerror or exc}") from None


def start_run(cfg: ExperimentConfig, address: str | None) -> None:
    """Synthesize/index the data once in the driver (not in every trial), check the storage, start or join Ray.

    Callers run `preflight` on what they will train first: every check that does not need Ray precedes it."""
    prepare_manifest(cfg.data)
    check_storage(cfg)
    init_ray(address)


@dataclass(frozen=True)
class Stage:
    """One Tuner: `trainable` over `space` (a trial config: the base config plus sampled or grid keys)."""

    trainable: type
    cfg: ExperimentConfig
    space: dict[str, Any]
    name: str  # the Tune experiment's folder under storage_path
    max_t: int  # epochs per trial
    scheduler: Any = None  # None: FIFO (every trial runs to the end)
    searcher: Any = None  # None: the space's grid, drawn from the stage config's seed
    num_samples: int = 1
    rewind_logs: bool = True  # after a resume (never under PBT, whose exploits repeat epochs on purpose)


@dataclass(frozen=True)
class Run:
    """What every stage of one command shares: the resolved config, the MLflow store and parent key, resume."""

    cfg: ExperimentConfig
    tracking_uri: str
    key: str  # the MLflow parent run's experiment key: every stage's trials are its children
    run_name: str  # the MLflow parent run's name
    resume: bool = False
    address: str | None = None
    resume_found: bool = False  # resume only the stages that exist (a command of several stages, interrupted)
    trial_runs: dict[str, str] = field(default_factory=dict)  # trial id -> its MLflow run, as the stages ran

    @classmethod
    def open(cls, cfg: ExperimentConfig, *, resume: bool = False, address: str | None = None,
             tracking_uri: str | None = None, key: str | None = None, run_name: str | None = None,
             resume_found: bool = False) -> Run:
        cfg, uri = resolve_run(cfg, tracking_uri)
        return cls(cfg, uri, key or experiment_dir(cfg), run_name or cfg.name, resume, address, resume_found)

    @property
    def root(self) -> Path:
        """The command's own folder under storage_path (reports, tables)."""
        return Path(experiment_dir(self.cfg))

    def check(self, cfg: ExperimentConfig, *kinds: RunKind, genotype_json: str | None = None) -> None:
        """Preflight what a stage will train (before Ray starts: hours of trials never end in a config error)."""
        preflight(cfg, *kinds, genotype_json=genotype_json, local=is_local(self.address))

    def start(self) -> None:
        start_run(self.cfg, self.address)

    def fit(self, stage: Stage) -> list[tune.Result]:
        path = experiment_dir(self.cfg, stage.name)
        resumed = self.resume and (not self.resume_found or tune.Tuner.can_restore(path))
        callbacks = make_callbacks(stage.cfg, self.key, self.tracking_uri, self.run_name)
        tuner = make_tuner(
            stage.trainable, stage.cfg, stage.space, name=stage.name, max_t=stage.max_t,
            searcher=(stage.searcher if stage.searcher is not None
                      else variant_generator(stage.cfg, random_state=stage.cfg.seed)),
            scheduler=stage.scheduler if stage.scheduler is not None else FIFOScheduler(),
            num_samples=stage.num_samples, callbacks=callbacks, resume=resumed,
        )
        results = fit(tuner, path, rewind_logs=resumed and stage.rewind_logs)
        for callback in callbacks:
            if isinstance(callback, MLflowTrialCallback):
                self.trial_runs.update(callback.run_ids)
        if resumed:  # asks of an interrupted driver that no trial will ever answer (an Optuna study's journal)
            fail_orphaned_trials(Path(path) / "optuna.journal", stage.name)
        return results


@dataclass
class ParentRun:
    """The command's MLflow parent run, written best effort: the files on disk are the results, MLflow a copy.

    The first failure is one warning naming what was not logged and where it is kept; tracking then stops for
    the rest of the command (a store that failed once is not asked again at every step)."""

    tracker: tracking.Tracker | None
    run_id: str | None
    failures: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, run: Run) -> ParentRun:
        tracker, run_id = tracking.open_parent(run.tracking_uri, run.cfg.tracking.experiment, run.key)
        return cls(tracker, run_id)

    def record(self, what: str, kept: str, write: Callable[[tracking.Tracker, str], None]) -> bool:
        """`write(tracker, run_id)` under MLflow's fail-fast retries; False (after one warning) when it failed
        or tracking had already stopped."""
        if self.tracker is None or not self.run_id:
            return False
        try:
            with tracking.fail_fast():
                write(self.tracker, self.run_id)
        except Exception as exc:  # noqa: BLE001 - a broken store must never cost the results already on disk
            log.warning("MLflow tracking: %s not logged to run %s (%s); %s", what, self.run_id,
                        tracking.describe(exc), kept)
            self.failures.append(what)
            self.tracker = None
            return False
        return True
