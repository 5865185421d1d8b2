"""One Tune experiment: its folder, searcher, scheduler, callbacks and Tuner, and a resume that restores or refuses.

    make_tuner(trainable, cfg, space) ─▶ Tuner(trainable with resources, OptunaSearch | random,
                                         ASHA | HyperBand | median | PBT | FIFO, MLflow + console + ResumeGuard)
    fit(tuner, path, rewind_logs=...) ─▶ list of Results; after a resume, trial logs rewound to one row per epoch
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.search import BasicVariantGenerator

from autovid import tracking
from autovid.config import Distribution, ExperimentConfig
from autovid.data.backends import DECODER_BACKEND_PARAM
from autovid.data.backends import resolve as resolve_decoder
from autovid.engine.setup import manifest_file
from autovid.errors import RunFailed, UserError
from autovid.files import is_remote
from autovid.tune.mlflow_callback import MLflowTrialCallback
from autovid.tune.progress import ConsoleReporter
from autovid.tune.resume_logs import dedupe_trial_logs
from autovid.tune.trainables import (
    BASE_KEY,
    resolved_params,
)
from autovid.tune.workers import trial_resources

log = logging.getLogger(__name__)

OBJECTIVE = "objective"


LR_KEYS = ("search.w_lr", "search.alpha_lr")


def trial_dirname(trial: Any) -> str:
    """Short trial folder names: Ray's default packs the whole (large) base config into the name."""
    return f"trial_{trial.trial_id}"


def trial_name(trial: Any) -> str:
    return f"{trial.trainable_name.replace('Trainable', '').lower()}_{trial.trial_id}"


def to_tune_domain(dist: Distribution) -> Any:
    """A config Distribution as a Tune domain (Optuna reads Tune domains through OptunaSearch)."""
    if dist.type == "choice":
        return tune.choice(list(dist.values or []))
    assert dist.low is not None and dist.high is not None
    if dist.type == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.type == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.type == "int":
        return tune.randint(int(dist.low), int(dist.high) + 1)  # high is inclusive in our configs
    return tune.lograndint(int(dist.low), int(dist.high) + 1)


def param_space(cfg: ExperimentConfig) -> dict[str, Any]:
    space: dict[str, Any] = {BASE_KEY: cfg.model_dump(mode="json")}
    space.update({key: to_tune_domain(dist) for key, dist in cfg.tune.param_space.items()})
    return space


def objectives(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(metric, mode) pairs the study optimises: tune.objectives, or the scalar objective maximised."""
    return [(o.metric, o.mode) for o in cfg.tune.objectives] or [(OBJECTIVE, "max")]


def variant_generator(cfg: ExperimentConfig, **options: Any) -> BasicVariantGenerator:
    """Tune's random/grid generator, running at most ``tune.max_concurrent_trials`` trials at once.

    Tune applies ``TuneConfig.max_concurrent_trials`` only by wrapping a ``Searcher`` in a ConcurrencyLimiter;
    given a generator it warns that the setting is ignored and runs as many trials as fit. The generator
    takes the limit itself (and `make_tuner` then passes none to Tune)."""
    return BasicVariantGenerator(max_concurrent=cfg.tune.max_concurrent_trials, **options)


def make_searcher(cfg: ExperimentConfig, experiment_dir: Path) -> Any:
    """OptunaSearch with its study in a journal file beside the run (inspectable with Optuna's tools).

    A multi-objective study hands Optuna every (metric, mode) pair; Tune itself then gets no metric (see
    `make_tuner`). Warm-start points run first with either searcher. `tune.constraints` become each trial's
    Optuna constraint values, which tpe and nsga2 sample by (the config refuses constraints with the others)."""
    searcher = cfg.tune.searcher
    points = [dict(p) for p in cfg.tune.points_to_evaluate] or None
    if searcher.name == "random" or not cfg.tune.param_space or cfg.tune.scheduler.name == "pbt":
        return variant_generator(cfg, random_state=searcher.seed, points_to_evaluate=points)
    import optuna

    from autovid.tune.constraints import ConstrainedOptunaSearch
    from autovid.tune.nsga2 import PicklableNSGAIISampler

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=searcher.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=searcher.seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=searcher.seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=searcher.seed),
        "nsga2": lambda: PicklableNSGAIISampler(seed=searcher.seed, population_size=searcher.population_size),
    }
    storage = None
    if not is_remote(experiment_dir):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        experiment_dir.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(experiment_dir / "optuna.journal")))
    pairs = objectives(cfg)
    metric: str | list[str] = [m for m, _ in pairs] if cfg.tune.multi_objective else OBJECTIVE
    mode: str | list[str] = [d for _, d in pairs] if cfg.tune.multi_objective else "max"
    return ConstrainedOptunaSearch(
        metric=metric, mode=mode, sampler=samplers[searcher.sampler](), study_name=cfg.name, storage=storage,
        points_to_evaluate=points, constraints=cfg.tune.parsed_constraints,
    )


def make_scheduler(cfg: ExperimentConfig, max_t: int) -> Any:
    sched = cfg.tune.scheduler
    if sched.name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration", max_t=max_t, grace_period=min(sched.grace_period, max_t),
            reduction_factor=sched.reduction_factor,
        )
    if sched.name == "hyperband":
        # synchronous brackets: a trial pauses (checkpointed) at each rung until its bracket decides
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t, reduction_factor=sched.reduction_factor)
    if sched.name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=min(sched.grace_period, max_t),
                                  min_samples_required=sched.min_samples)
    if sched.name == "pbt":
        mutations = {key: to_tune_domain(cfg.tune.param_space[key]) for key in LR_KEYS if key in cfg.tune.param_space}
        if not mutations:
            raise UserError("tune.scheduler.name=pbt mutates learning rates only: add search.w_lr and/or "
                            "search.alpha_lr to tune.param_space")
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=sched.perturbation_interval,
            hyperparam_mutations=mutations,
        )
    return FIFOScheduler()


def make_callbacks(cfg: ExperimentConfig, experiment_path: str, tracking_uri: str, run_name: str) -> list[Any]:
    mlflow_cb = MLflowTrialCallback(
        tracking_uri,
        cfg.tracking.experiment,
        run_name,
        parent_params={**cfg.flat(), DECODER_BACKEND_PARAM: resolve_decoder(cfg.data.decoder)},
        parent_tags=tracking.standard_tags(search_space=cfg.search_space),
        config_resolver=resolved_params,
        experiment_key=experiment_path,
        manifest=manifest_file(cfg.data),  # written by start_run before any Tuner: every run logs it as its input
        system_metrics=cfg.tracking.system_metrics,
    )
    return [mlflow_cb, ConsoleReporter()]


def make_tuner(
    trainable: type,
    cfg: ExperimentConfig,
    space: dict[str, Any],
    *,
    name: str,
    max_t: int,
    searcher: Any,
    scheduler: Any,
    num_samples: int,
    callbacks: list[Any],
    resume: bool,
) -> tune.Tuner:
    storage = str(cfg.storage_path)
    path = f"{storage.rstrip('/')}/{name}"
    wrapped = tune.with_resources(trainable, trial_resources(cfg))
    exists = tune.Tuner.can_restore(path)
    if resume:
        if not exists:
            raise UserError(f"nothing to resume: no experiment at {path}")
        check_resumable(path)
        return tune.Tuner.restore(path, trainable=wrapped, resume_errored=True, param_space=space)
    if exists:
        raise UserError(f"experiment {name!r} already exists at {path}; use --resume to continue it, "
                        f"or name=<new name> to start another")
    return tune.Tuner(
        wrapped,
        param_space=space,
        tune_config=tune.TuneConfig(
            # multi-objective: the searcher holds its metric list; a Tune-level metric would replace it
            metric=None if cfg.tune.multi_objective else OBJECTIVE,
            mode=None if cfg.tune.multi_objective else "max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            # a variant generator carries its own limit (see `variant_generator`)
            max_concurrent_trials=None
            if isinstance(searcher, BasicVariantGenerator)
            else cfg.tune.max_concurrent_trials,
            time_budget_s=cfg.tune.time_budget_s,
            trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_name,
            # a reused actor gets the next trial's config through reset_config, which rebuilds the session.
            # PBT: an exploited trial keeps its actor and is then restored from the donor's checkpoint
            # (a fresh actor would work too: after_restore re-applies the config's learning rates)
            reuse_actors=cfg.tune.reuse_actors or isinstance(scheduler, PopulationBasedTraining),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[*callbacks, ResumeGuard(path)],
            stop={"training_iteration": max_t},
            checkpoint_config=tune.CheckpointConfig(
                # PBT clones other trials' checkpoints at exploit time: deleting old ones breaks it.
                num_to_keep=None if isinstance(scheduler, PopulationBasedTraining) else 2,
                checkpoint_frequency=cfg.tune.checkpoint_frequency,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
            verbose=0,
        ),
    )


def fit(tuner: tune.Tuner, experiment_path: str, *, rewind_logs: bool) -> list[tune.Result]:
    """`tuner.fit()`, then, with `rewind_logs` (a resumed experiment; never under PBT, whose exploits repeat
    epochs on purpose), the trial logs rewound to one row per epoch: a resumed trial repeats the epochs
    after its last recorded checkpoint. The grid's results as a list (a ResultGrid is indexable, not typed as
    iterable)."""
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    if rewind_logs:
        try:
            dedupe_trial_logs(experiment_path)
        except Exception as exc:  # noqa: BLE001 - a tidy-up of Ray's logs must never cost the results
            log.warning("could not rewind the trial logs under %s: %s: %s", experiment_path, type(exc).__name__, exc)
    return results


def config_of(result: tune.Result) -> dict[str, Any]:
    """A trial's config: Ray types it optional, but every trial Tune ran has one."""
    if result.config is None:
        raise RunFailed(f"the trial at {result.path} has no config")
    return result.config


def error_line(error: BaseException | None) -> str:
    """A trial's error in one line: the exception raised inside the trial, not Ray's wrapping traceback."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"


def check_resumable(path: str) -> None:
    """Refuse to resume from a damaged experiment state (say, written to a full disk) with one line.

    Tune would log "Failed to restore the run state", start the experiment afresh and exit 0, losing every
    finished trial from the summary; this checks the file it will load first."""
    if is_remote(path):
        return  # remote storage: ResumeGuard still stops a silent restart
    states = sorted(Path(path).glob("experiment_state-*.json"))
    if not states:
        raise UserError(f"cannot resume {path}: it has no experiment_state-*.json (the first snapshot was never "
                        f"written); start it again under a new name")
    newest = states[-1]  # the one Tune loads: the newest by name
    try:
        json.loads(newest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        older = f"; an older snapshot exists ({states[-2].name}): move {newest.name} away to resume from it" \
            if len(states) > 1 else ""
        raise UserError(f"cannot resume {path}: its experiment state {newest.name} is damaged ({exc}){older}") from None


class ResumeError(UserError):
    """`--resume` found an experiment that Tune could not restore."""


class ResumeGuard(Callback):
    """Turns Tune's silent restart of an experiment whose saved state failed to load into an error.

    Tune restores callback state (`set_state`) only after it has loaded the trials; when that fails it logs
    "Restarting experiment" and calls `setup` on a fresh run. An experiment folder that already holds a
    snapshot at `setup` time is a resume (`make_tuner` never starts afresh over one), so no restored state then
    means the restore failed, before a single trial ran or a file was overwritten."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.restored = False

    def get_state(self) -> dict[str, Any]:
        return {"path": self.path}

    def set_state(self, state: dict[str, Any]) -> None:
        self.restored = True

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        if is_remote(self.path) or self.restored:
            return
        if any(Path(self.path).glob("experiment_state-*.json")):
            raise ResumeError(f"cannot resume {self.path}: Tune could not load its saved state (see the log "
                              f"above); nothing was changed")

def experiment_dir(cfg: ExperimentConfig, name: str | None = None) -> str:
    """Where Tune keeps experiment `name` (default: the config's name) under `cfg.storage_path`."""
    return f"{str(cfg.storage_path).rstrip('/')}/{name or cfg.name}"
