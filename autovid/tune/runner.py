"""Build and run Tune experiments from an ExperimentConfig: the outer Optuna search, ASHA/PBT, resume.

    ExperimentConfig ─▶ param_space {"base": cfg, "data.num_segments": choice(...), ...}
                     ─▶ Tuner(SearchTrainable, OptunaSearch(journal file), ASHA | PBT | none)
                     ─▶ ResultGrid ─▶ summary table, best genotype ─▶ Tuner(TrainTrainable) retrain
    MLflow: one parent run per experiment, one child per trial (MLflowTrialCallback, driver side).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray
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
from autovid.config import LATENCY_METRICS, PLAIN_NAME, Distribution, ExperimentConfig
from autovid.engine.preflight import example_genotype, preflight
from autovid.engine.setup import prepare_manifest
from autovid.errors import RunFailed, UserError
from autovid.files import write_text_atomic
from autovid.tune import watchdog
from autovid.tune.mlflow_callback import MLflowTrialCallback
from autovid.tune.progress import ConsoleReporter
from autovid.tune.resume_logs import dedupe_trial_logs, fail_orphaned_trials
from autovid.tune.trainables import (
    BASE_KEY,
    GENOTYPE_KEY,
    SearchTrainable,
    TrainTrainable,
    resolve_trial_config,
    resolved_params,
)

log = logging.getLogger(__name__)

OBJECTIVE = "objective"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's name for "this node may join a cluster"
LR_KEYS = ("search.w_lr", "search.alpha_lr")


@dataclass
class TuneOutcome:
    """What an experiment produced: where it lives, its trials, the winner and its retrain."""

    experiment_path: str
    summary: pd.DataFrame
    best_trial_id: str | None
    best_genotype: str | None
    best_config: dict[str, Any] | None
    retrain: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    best_alphas: str | None = None  # the winner's final softmax(α) as JSON ({"ops": [...], "normal": [[...]]})
    pareto: pd.DataFrame | None = None  # multi-objective studies: the non-dominated trials (summary rows)
    pareto_retrained: pd.DataFrame | None = None  # tune.retrain=pareto: each front member's retrain results


def init_ray(address: str | None) -> None:
    """Start local Ray (embedded default) or connect to a cluster (`auto`, `ray://host:port`, RAY_ADDRESS).

    A local Ray listens on 127.0.0.1 only, keeps its dashboard off, and is stopped by a watchdog process if
    this driver dies without shutting it down (SIGKILL). Ray's token authentication is left as Ray
    configures it (on by default)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    with single_machine_ray():
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=True)
    watchdog.start()


@contextlib.contextmanager
def single_machine_ray() -> Iterator[None]:
    """Make the Ray started inside bind its servers to the loopback address.

    Ray binds to the node IP, which on Linux is the machine's network address; on macOS and Windows, where
    Ray clusters are off by default, it is 127.0.0.1. Ray's own switch for that (read when `ray` is imported,
    and by Ray's child processes from the environment) makes a local run a single-machine one; it is set only
    while the node starts, so that a later connection to a real cluster from this process still works."""
    from ray._private import ray_constants

    saved = (os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


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


def trial_dirname(trial: Any) -> str:
    """Short trial folder names: Ray's default packs the whole (large) base config into the name."""
    return f"trial_{trial.trial_id}"


def trial_name(trial: Any) -> str:
    return f"{trial.trainable_name.replace('Trainable', '').lower()}_{trial.trial_id}"


def resolve_run(cfg: ExperimentConfig, tracking_uri: str | None) -> tuple[ExperimentConfig, str]:
    """The config with absolute paths, and the MLflow URI (flag, then config, then ./mlflow.db)."""
    return absolute_paths(cfg), tracking_uri or cfg.tracking.uri or tracking.default_tracking_uri()


def is_local(address: str | None) -> bool:
    """Trials run on this machine: no cluster address given, here or in RAY_ADDRESS."""
    return not (address or os.environ.get("RAY_ADDRESS"))


def check_storage(cfg: ExperimentConfig) -> None:
    """storage_path must be a writable folder (checked before Ray starts, not by each trial's first write)."""
    if "://" in str(cfg.storage_path):
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


def node_cpus() -> float:
    """CPUs of the largest live node of the Ray cluster this process is connected to (at least 1)."""
    return max([float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] + [1.0])


def _absolute_storage(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


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


def make_searcher(cfg: ExperimentConfig, experiment_dir: Path) -> Any:
    """OptunaSearch with its study in a journal file beside the run (inspectable with Optuna's tools).

    A multi-objective study hands Optuna every (metric, mode) pair; Tune itself then gets no metric (see
    `_tuner`). Warm-start points run first with either searcher."""
    searcher = cfg.tune.searcher
    points = [dict(p) for p in cfg.tune.points_to_evaluate] or None
    if searcher.name == "random" or not cfg.tune.param_space or cfg.tune.scheduler.name == "pbt":
        return BasicVariantGenerator(random_state=searcher.seed, points_to_evaluate=points)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=searcher.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=searcher.seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=searcher.seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=searcher.seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=searcher.seed, population_size=searcher.population_size),
    }
    storage = None
    if "://" not in str(experiment_dir):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        experiment_dir.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(experiment_dir / "optuna.journal")))
    pairs = objectives(cfg)
    metric: str | list[str] = [m for m, _ in pairs] if cfg.tune.multi_objective else OBJECTIVE
    mode: str | list[str] = [d for _, d in pairs] if cfg.tune.multi_objective else "max"
    return OptunaSearch(
        metric=metric, mode=mode, sampler=samplers[searcher.sampler](), study_name=cfg.name, storage=storage,
        points_to_evaluate=points,
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


def _callbacks(cfg: ExperimentConfig, experiment_path: str, tracking_uri: str, run_name: str) -> list[Any]:
    mlflow_cb = MLflowTrialCallback(
        tracking_uri,
        cfg.tracking.experiment,
        run_name,
        parent_params=cfg.flat(),
        parent_tags=tracking.standard_tags(search_space=cfg.search_space),
        config_resolver=resolved_params,
        experiment_key=experiment_path,
    )
    return [mlflow_cb, ConsoleReporter()]


def _tuner(
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
    resources = {"cpu": cfg.tune.resources.cpu, "gpu": cfg.tune.resources.gpu}
    wrapped = tune.with_resources(trainable, resources)
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
            max_concurrent_trials=cfg.tune.max_concurrent_trials,
            time_budget_s=cfg.tune.time_budget_s,
            trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_name,
            # PBT: an exploited trial keeps its actor and gets the explored config through reset_config
            # (a fresh actor would work too: after_restore re-applies the config's learning rates)
            reuse_actors=isinstance(scheduler, PopulationBasedTraining),
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


def fit(tuner: tune.Tuner, experiment_path: str) -> tune.ResultGrid:
    """`tuner.fit()`, then the trial logs rewound to one row per epoch (a resumed trial repeats some)."""
    results = tuner.fit()
    dedupe_trial_logs(experiment_path)
    return results


def error_line(error: BaseException | None) -> str:
    """A trial's error in one line: the exception raised inside the trial, not Ray's wrapping traceback."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"


def check_resumable(path: str) -> None:
    """Refuse to resume from a damaged experiment state (say, written to a full disk) with one line.

    Tune would log "Failed to restore the run state", start the experiment afresh and exit 0, losing every
    finished trial from the summary; this checks the file it will load first."""
    if "://" in path:
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
    snapshot at `setup` time is a resume (`_tuner` never starts afresh over one), so no restored state then
    means the restore failed, before a single trial ran or a file was overwritten."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.restored = False

    def get_state(self) -> dict[str, Any]:
        return {"path": self.path}

    def set_state(self, state: dict[str, Any]) -> None:
        self.restored = True

    def setup(self, **info: Any) -> None:
        if "://" in self.path or self.restored:
            return
        if any(Path(self.path).glob("experiment_state-*.json")):
            raise ResumeError(f"cannot resume {self.path}: Tune could not load its saved state (see the log "
                              f"above); nothing was changed")


SUMMARY_COLUMNS = ("val/acc", "objective", "alpha/entropy", "genotype/params", "genotype/flops", "genotype/skips",
                   "genotype_hash", "epoch")


def summarize(results: tune.ResultGrid, cfg: ExperimentConfig) -> pd.DataFrame:
    """One row per trial: its sampled hyperparameters and its last reported metrics."""
    rows = []
    # the objectives of a multi-objective study, and both latencies whenever they are measured
    objective_columns = [m for m in dict.fromkeys([o.metric for o in cfg.tune.objectives]
                                                  + (list(LATENCY_METRICS) if cfg.measures_latency else []))
                         if m not in SUMMARY_COLUMNS]
    for result in results:
        metrics = result.metrics or {}
        row: dict[str, Any] = {"trial": metrics.get("trial_id", "?"), "status": "ERROR" if result.error else "OK"}
        row.update({key: (result.config or {}).get(key) for key in cfg.tune.param_space})
        row.update({key: metrics.get(key) for key in (*SUMMARY_COLUMNS, *objective_columns)})
        row["genotype"] = metrics.get("genotype")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty and "objective" in frame:
        frame = frame.sort_values("objective", ascending=False, na_position="last").reset_index(drop=True)
    return frame


def run_search_experiment(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    retrain: bool = True,
    address: str | None = None,
    tracking_uri: str | None = None,
    register: str | None = None,
) -> TuneOutcome:
    """`autovid tune`/`autovid search`: the outer search over NAS hyperparameters, then retrain the best trial
    or every trial of the Pareto front (tune.retrain; `retrain=False`, i.e. --no-retrain, retrains nothing)."""
    check_registered_name(register)  # --register NAME: the retrained model's registry name
    cfg, tracking_uri = resolve_run(cfg, tracking_uri)
    retrain_mode = cfg.tune.retrain if retrain else "none"
    if register and retrain_mode == "pareto":
        raise UserError(f"--register {register} names one network, and tune.retrain=pareto retrains every front "
                        f"member: register the one you pick with `autovid train CONFIG --genotype G.json --register`")
    preflight(cfg, "search", local=is_local(address))
    if retrain_mode != "none":
        # the retrain's network: a genotype of the space at retrain depth and width, before hours of search
        preflight(cfg, "train", genotype_json=example_genotype(cfg), local=is_local(address))
    start_run(cfg, address)
    experiment_path = f"{str(cfg.storage_path).rstrip('/')}/{cfg.name}"
    tuner = _tuner(
        SearchTrainable,
        cfg,
        param_space(cfg),
        name=cfg.name,
        max_t=cfg.search.epochs,
        searcher=make_searcher(cfg, Path(experiment_path)),
        scheduler=make_scheduler(cfg, cfg.search.epochs),
        num_samples=cfg.tune.num_samples,
        callbacks=_callbacks(cfg, experiment_path, tracking_uri, cfg.name),
        resume=resume,
    )
    results = fit(tuner, experiment_path)
    if resume:
        fail_orphaned_trials(Path(experiment_path) / "optuna.journal", cfg.name)
    summary = summarize(results, cfg)
    outcome = TuneOutcome(experiment_path, summary, None, None, None)
    # MLflow is best effort from here on: summary.csv and best_genotype.json reach disk whatever the store does
    tracker, outcome.parent_run_id = tracking.open_parent(tracking_uri, cfg.tracking.experiment, experiment_path)
    ok = summary[summary["status"] == "OK"].dropna(subset=["objective"]) if not summary.empty else summary
    if ok.empty:
        log.error("no trial finished successfully; see %s", experiment_path)
        return outcome
    best = ok.iloc[0]
    best_result = next(r for r in results if (r.metrics or {}).get("trial_id") == best["trial"])
    outcome.best_trial_id = str(best["trial"])
    outcome.best_genotype = best["genotype"]
    outcome.best_config = dict(best_result.config)
    outcome.best_alphas = (best_result.metrics or {}).get("alphas")
    tracker = _write_outputs(outcome, tracker)
    tracker = _write_study_outputs(outcome, cfg, ok, tracker)
    if retrain_mode == "pareto" and outcome.pareto is not None:
        outcome.pareto_retrained = retrain_front(outcome, results, cfg, tracker, resume=resume,
                                                 tracking_uri=tracking_uri)
    if retrain_mode == "best" and outcome.best_genotype:
        outcome.retrain = run_retrain(
            resolve_trial_config(outcome.best_config),
            outcome.best_genotype,
            name=f"{cfg.name}-retrain",
            resume=resume and tune.Tuner.can_restore(f"{experiment_path}-retrain"),
            tracking_uri=tracking_uri,
            experiment_key=experiment_path,
            register=register,
        )
        if tracker is not None and outcome.parent_run_id:
            try:
                with tracking.fail_fast():
                    tracker.log_dict(outcome.parent_run_id, outcome.retrain, "retrain_best.json")
                    tracker.log_metrics(outcome.parent_run_id, {f"best/{k}": v for k, v in outcome.retrain.items()},
                                        step=0)
            except Exception as exc:  # noqa: BLE001 - final_metrics.json holds them; MLflow is a copy
                log.warning("MLflow tracking: retrain results not logged to run %s (%s); they are in "
                            "final_metrics.json", outcome.parent_run_id, tracking.describe(exc))
    return outcome


def _write_outputs(outcome: TuneOutcome, tracker: tracking.Tracker | None) -> tracking.Tracker | None:
    """summary.csv and best_genotype.json beside the experiment, then on the MLflow parent run.

    Returns `tracker`, or None once MLflow failed (after one warning): the files are the results, MLflow a copy.
    """
    out = Path(outcome.experiment_path)
    table = outcome.summary.drop(columns=["genotype"])  # genotypes travel as JSON files, not table cells
    if "://" not in outcome.experiment_path:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("summary.csv", table.to_csv(index=False)),
                           ("best_genotype.json", outcome.best_genotype or "")):
            write_text_atomic(out / name, text)  # a crash or a full disk never leaves a truncated file
    if tracker is None or not outcome.parent_run_id:
        return tracker
    try:
        with tracking.fail_fast():
            tracker.log_table(outcome.parent_run_id, table, "summary")
            if outcome.best_genotype:
                tracker.log_genotype(outcome.parent_run_id, outcome.best_genotype, prefix="best_")
            tracker.end(outcome.parent_run_id)
    except Exception as exc:  # noqa: BLE001 - a broken store must not cost the results already on disk
        log.warning("MLflow tracking: summary not logged to run %s (%s); summary.csv and best_genotype.json "
                    "are in %s", outcome.parent_run_id, tracking.describe(exc), outcome.experiment_path)
        return None
    return tracker


def _write_study_outputs(
    outcome: TuneOutcome, cfg: ExperimentConfig, ok: pd.DataFrame, tracker: tracking.Tracker | None
) -> tracking.Tracker | None:
    """Multi-objective: `pareto.csv` and `pareto.png` (the non-dominated trials among the finished ones) beside
    the experiment. Then, on the MLflow parent run, those two and Optuna's plots of the study's journal.

    Returns `tracker`, or None once MLflow failed (after one warning), as `_write_outputs` does."""
    from autovid.pareto import pareto_front
    from autovid.report import pareto_figure, write_pareto

    pairs = objectives(cfg)
    table = ok.drop(columns=["genotype"], errors="ignore")
    if cfg.tune.multi_objective:
        outcome.pareto = pareto_front(ok, pairs)
        if "://" not in outcome.experiment_path:
            write_pareto(table, pairs, outcome.experiment_path)
    if tracker is None or not outcome.parent_run_id:
        return tracker
    from autovid.tune.study import load_study, study_figures

    try:
        with tracking.fail_fast():
            if outcome.pareto is not None:
                tracker.log_text(outcome.parent_run_id, pareto_front(table, pairs).to_csv(index=False), "pareto.csv")
                tracker.log_figure(outcome.parent_run_id, pareto_figure(table, pairs), "pareto.png")
            study = load_study(outcome.experiment_path, cfg.name)
            if study is not None:
                for name, figure in study_figures(study, [m for m, _ in pairs]).items():
                    tracker.log_figure(outcome.parent_run_id, figure, f"optuna/{name}")
    except Exception as exc:  # noqa: BLE001 - the files on disk are the results, MLflow a copy
        log.warning("MLflow tracking: Pareto front / Optuna plots not logged to run %s (%s); pareto.csv and "
                    "optuna.journal are in %s", outcome.parent_run_id, tracking.describe(exc), outcome.experiment_path)
        return None
    return tracker


RETRAINED_COLUMNS = ("test/acc", "test/top5", "params", "flops", "time_total_s")


def retrain_front(
    outcome: TuneOutcome,
    results: tune.ResultGrid,
    cfg: ExperimentConfig,
    tracker: tracking.Tracker | None,
    *,
    resume: bool,
    tracking_uri: str,
) -> pd.DataFrame:
    """tune.retrain=pareto: retrain every front member (as `<name>-retrain-<trial>`) and tabulate its test
    accuracy beside the search-time objectives; `pareto_retrained.csv` is rewritten after each member, so an
    interrupted run keeps the finished ones. A member whose retrain fails is recorded and the others go on;
    RunFailed follows at the end."""
    assert outcome.pareto is not None
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    out = Path(outcome.experiment_path)
    searched = [m for m, _ in objectives(cfg)]
    for member in outcome.pareto.to_dict("records"):
        trial = str(member["trial"])
        result = next(r for r in results if (r.metrics or {}).get("trial_id") == trial)
        name = f"{cfg.name}-retrain-{trial}"
        row: dict[str, Any] = {"trial": trial, "genotype_hash": member.get("genotype_hash"),
                               **{m: member.get(m) for m in searched}}  # search-time objectives
        try:
            final = run_retrain(
                resolve_trial_config(dict(result.config)), member["genotype"], name=name,
                resume=resume and tune.Tuner.can_restore(f"{outcome.experiment_path}-retrain-{trial}"),
                tracking_uri=tracking_uri, experiment_key=outcome.experiment_path,
            )
            row.update({key: final.get(key) for key in RETRAINED_COLUMNS})
            row["status"] = "OK"
        except RunFailed as exc:
            log.error("retraining front member %s failed: %s", trial, exc)
            row["status"] = "ERROR"
            failed.append(trial)
        rows.append(row)
        frame = pd.DataFrame(rows)
        if "://" not in outcome.experiment_path:
            write_text_atomic(out / "pareto_retrained.csv", frame.to_csv(index=False))
    frame = pd.DataFrame(rows)
    if tracker is not None and outcome.parent_run_id:
        try:
            with tracking.fail_fast():
                tracker.log_text(outcome.parent_run_id, frame.to_csv(index=False), "pareto_retrained.csv")
        except Exception as exc:  # noqa: BLE001 - pareto_retrained.csv is on disk
            log.warning("MLflow tracking: pareto_retrained.csv not logged to run %s (%s)", outcome.parent_run_id,
                        tracking.describe(exc))
    if failed:
        raise RunFailed(f"retraining {len(failed)} of {len(rows)} Pareto front members failed ({', '.join(failed)}); "
                        f"the others are in {out / 'pareto_retrained.csv'}")
    return frame


def run_retrain(
    cfg: ExperimentConfig,
    genotype_json: str | None,
    *,
    name: str,
    resume: bool = False,
    tracking_uri: str | None = None,
    experiment_key: str | None = None,
    address: str | None = None,
    register: str | None = None,
) -> dict[str, Any]:
    """Retrain one architecture from scratch as a single Tune trial; returns its final test metrics.

    The final network is then logged as an MLflow LoggedModel of the trial's run (`mlflow_model` in the
    result) and, with `register`, as a new version of that registered model (`registered_model`)."""
    check_registered_name(register)
    cfg, tracking_uri = resolve_run(cfg.with_overrides({"name": name}, source="retrain"), tracking_uri)
    preflight(cfg, "train", genotype_json=genotype_json, local=is_local(address))
    start_run(cfg, address)
    cpus = node_cpus() if cfg.tune.retrain_cpu == "node" else cfg.tune.retrain_cpu
    cfg = cfg.with_overrides({"tune.resources.cpu": cpus}, source="retrain")  # the trial's threads follow
    experiment_path = f"{str(cfg.storage_path).rstrip('/')}/{name}"
    space = {BASE_KEY: cfg.model_dump(mode="json"), GENOTYPE_KEY: genotype_json}
    tuner = _tuner(
        TrainTrainable,
        cfg,
        space,
        name=name,
        max_t=cfg.train.epochs,
        searcher=BasicVariantGenerator(),
        scheduler=FIFOScheduler(),
        num_samples=1,
        callbacks=(callbacks := _callbacks(cfg, experiment_key or experiment_path, tracking_uri, name)),
        resume=resume,
    )
    result = fit(tuner, experiment_path)[0]
    if result.error:
        raise RunFailed(f"retraining failed: {error_line(result.error)} (details: {result.path}/error.txt)")
    metrics = result.metrics or {}
    keep = ("test/acc", "test/top5", "test/loss", "test/correct", "params", "flops", "epoch", "time_total_s")
    final = {k: metrics[k] for k in keep if k in metrics}
    final["trial_cpus"] = cfg.tune.resources.cpu
    if "://" not in experiment_path:
        Path(experiment_path).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(experiment_path) / "final_metrics.json", json.dumps(final, indent=2))
        if result.checkpoint is not None:
            final["checkpoint"] = str(Path(result.checkpoint.path) / "state.pt")
    if result.checkpoint is not None:  # after final_metrics.json: MLflow is a copy of what is on disk
        # a resumed experiment runs the callbacks Tune restored, not these: their runs are then found by tag
        known = next((c.run_ids for c in callbacks if isinstance(c, MLflowTrialCallback)), {})
        final.update(log_retrained_model(result, cfg, tracking_uri=tracking_uri,
                                         experiment_key=experiment_key or experiment_path, known_runs=known,
                                         register=register))
    return final


def check_registered_name(name: str | None) -> None:
    """`--register NAME` must be a plain name (MLflow refuses '/' and ':'); checked before any training."""
    if name is not None and not PLAIN_NAME.fullmatch(name):
        raise UserError(f"--register {name!r} is not a plain name (letters, digits, '.', '_', '-'; "
                        f"no '/' or leading '.')")


def log_retrained_model(
    result: tune.Result,
    cfg: ExperimentConfig,
    *,
    tracking_uri: str,
    experiment_key: str,
    known_runs: Mapping[str, str],
    register: str | None = None,
) -> dict[str, str]:
    """Log a finished retrain's final network as an MLflow LoggedModel of its trial's child run, linked to the
    run's final metrics; with `register`, also as a new version of that registered model.

    Runs in the driver after the trial: `state.pt` is read with `load_state` (weights only) and the network
    rebuilt on the CPU. Returns `{"mlflow_model": "models:/<id>", "registered_model": "models:/<name>/<v>"}`,
    as far as it got: a failure is one warning, never a failed experiment (the checkpoint is the result)."""
    import torch

    from autovid.engine.checkpoint import load_state
    from autovid.engine.evaluation import trained_network
    from autovid.engine.setup import clip_shape
    from autovid.export import METADATA_KEY, model_metadata
    from autovid.tune.trainables import STATE_FILE

    metrics = result.metrics or {}
    trial_id = str(metrics.get("trial_id", ""))
    logged: dict[str, str] = {}
    try:
        with result.checkpoint.as_directory() as folder:
            state = load_state(Path(folder) / STATE_FILE)
        model, trained = trained_network(state, source=f"{result.path} checkpoint")
        meta = model_metadata(state)  # what `autovid export` writes and `autovid predict` reads
        # two zero clips, not one: torch.export fixes a batch dimension of size 1, a larger one stays dynamic
        example = torch.zeros(2, *clip_shape(trained.data))
        with tracking.fail_fast():
            tracker = tracking.Tracker(tracking_uri, cfg.tracking.experiment)
            run_id = known_runs.get(trial_id)
            if run_id is None:
                parent = tracker.find_run(tracking.TAG_EXPERIMENT_ID, experiment_key)
                run_id = parent and tracker.find_run(tracking.TAG_TRIAL_ID, trial_id, parent_id=parent)
            if not run_id:
                raise LookupError(f"no MLflow run of trial {trial_id} (was the store down during the run?)")
            tags = {**tracking.standard_tags(search_space=meta.get("search_space"),
                                             genotype_hash=meta.get("genotype_hash")),
                    tracking.TAG_TRIAL_ID: trial_id}
            step = metrics.get("training_iteration")
            # --resume of a retrain that had finished: its model was logged by the first session
            model_id = tracker.model_at(run_id, int(step)) if step is not None else None
            if model_id is None:
                model_id = tracker.log_network(run_id, model, name=cfg.name, input_example=example,
                                               metadata={METADATA_KEY: meta}, tags=tags, step=step)
                log.info("MLflow: retrained network logged as models:/%s (run %s)", model_id, run_id)
            logged["mlflow_model"] = f"models:/{model_id}"
            if register:
                version = tracker.register_model(model_id, register)
                logged["registered_model"] = f"models:/{register}/{version}"
                log.info("MLflow: registered as %s", logged["registered_model"])
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the caller its results
        missing = "registered" if logged else "logged as an MLflow model"
        log.warning("MLflow tracking: the retrained network of trial %s was not %s (%s); its checkpoint is %s",
                    trial_id, missing, tracking.describe(exc), result.checkpoint.path)
    return logged
