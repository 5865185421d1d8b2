"""The experiments behind `autovid tune / search / train`: the outer study, its summary and Pareto front, the retrain.

    ExperimentConfig ─▶ preflight ─▶ start_run (data indexed once, storage checked, Ray started or joined)
                     ─▶ make_tuner(SearchTrainable, ...) (tune/experiment.py) ─▶ fit ─▶ summary.csv, best genotype,
                        pareto.csv ─▶ run_retrain (TrainTrainable) ─▶ final_metrics.json, MLflow LoggedModel
    MLflow: one parent run per experiment, one child per trial (MLflowTrialCallback, driver side).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import (
    FIFOScheduler,
)

from autovid import tracking
from autovid.config import LATENCY_DETAILS, LATENCY_METRICS, ExperimentConfig, plain_name_problem
from autovid.engine.preflight import example_genotype, preflight
from autovid.engine.setup import prepare_manifest
from autovid.errors import RunFailed, UserError
from autovid.files import is_remote, write_text_atomic
from autovid.pareto import FEASIBLE, feasible_rows
from autovid.tune.cluster import init_ray, is_local, node_cpus
from autovid.tune.constraints import feasibility
from autovid.tune.experiment import (
    error_line,
    experiment_dir,
    fit,
    make_callbacks,
    make_scheduler,
    make_searcher,
    make_tuner,
    objectives,
    param_space,
    variant_generator,
)
from autovid.tune.mlflow_callback import MLflowTrialCallback
from autovid.tune.resume_logs import fail_orphaned_trials
from autovid.tune.trainables import (
    BASE_KEY,
    GENOTYPE_KEY,
    SearchTrainable,
    TrainTrainable,
    resolve_trial_config,
)

log = logging.getLogger(__name__)


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


def _absolute_storage(path: str) -> str:
    return path if is_remote(path) else str(Path(path).resolve())


SUMMARY_COLUMNS = ("val/acc", "objective", "alpha/entropy", "genotype/params", "genotype/flops", "genotype/skips",
                   "genotype_hash", "epoch")


def summarize(results: tune.ResultGrid, cfg: ExperimentConfig) -> pd.DataFrame:
    """One row per trial: its sampled hyperparameters and its last reported metrics."""
    rows = []
    # the objectives of a multi-objective study, the constrained metrics, and both latencies whenever they are
    # measured, with how they were measured (runtime, threads, spread)
    constraints = cfg.tune.parsed_constraints
    objective_columns = [m for m in dict.fromkeys([o.metric for o in cfg.tune.objectives]
                                                  + [c.metric for c in constraints]
                                                  + (list(LATENCY_METRICS + LATENCY_DETAILS)
                                                     if cfg.measures_latency else []))
                         if m not in SUMMARY_COLUMNS]
    for result in results:
        metrics = result.metrics or {}
        row: dict[str, Any] = {"trial": metrics.get("trial_id", "?"), "status": "ERROR" if result.error else "OK"}
        row.update({key: (result.config or {}).get(key) for key in cfg.tune.param_space})
        row.update({key: metrics.get(key) for key in (*SUMMARY_COLUMNS, *objective_columns)})
        if constraints:  # None: a bounded metric was never reported (an errored trial)
            row[FEASIBLE] = feasibility(constraints, metrics)
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
    # with a retrain, its network too (a genotype of the space at retrain size), before hours of search
    kinds = ("search",) if retrain_mode == "none" else ("search", "train")
    preflight(cfg, *kinds, genotype_json=example_genotype(cfg), local=is_local(address))
    start_run(cfg, address)
    experiment_path = experiment_dir(cfg)
    tuner = make_tuner(
        SearchTrainable,
        cfg,
        param_space(cfg),
        name=cfg.name,
        max_t=cfg.search.epochs,
        searcher=make_searcher(cfg, Path(experiment_path)),
        scheduler=make_scheduler(cfg, cfg.search.epochs),
        num_samples=cfg.tune.num_samples,
        callbacks=make_callbacks(cfg, experiment_path, tracking_uri, cfg.name),
        resume=resume,
    )
    results = fit(tuner, experiment_path, rewind_logs=resume and cfg.tune.scheduler.name != "pbt")
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
    feasible = ok[feasible_rows(ok)]
    if len(feasible) < len(ok):
        log.warning("%d of %d finished trials broke tune.constraints (%s): reported as infeasible in summary.csv, "
                    "never the best trial or on the Pareto front", len(ok) - len(feasible), len(ok),
                    "; ".join(cfg.tune.constraints))
    if feasible.empty:
        if not is_remote(experiment_path):  # it shows why: every finished trial infeasible
            write_text_atomic(Path(experiment_path) / "summary.csv", summary.drop(columns=["genotype"]).to_csv(index=False))
        log.error("no finished trial met tune.constraints; see %s", experiment_path)
        return outcome
    best = feasible.iloc[0]
    best_result = next(r for r in results if (r.metrics or {}).get("trial_id") == best["trial"])
    outcome.best_trial_id = str(best["trial"])
    outcome.best_genotype = best["genotype"]
    outcome.best_config = dict(best_result.config)
    outcome.best_alphas = (best_result.metrics or {}).get("alphas")
    tracker = write_outputs(outcome, tracker)
    tracker = write_study_outputs(outcome, cfg, ok, tracker)
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


def write_outputs(outcome: TuneOutcome, tracker: tracking.Tracker | None) -> tracking.Tracker | None:
    """summary.csv and best_genotype.json beside the experiment, then on the MLflow parent run.

    Returns `tracker`, or None once MLflow failed (after one warning): the files are the results, MLflow a copy.
    """
    out = Path(outcome.experiment_path)
    table = outcome.summary.drop(columns=["genotype"])  # genotypes travel as JSON files, not table cells
    if not is_remote(outcome.experiment_path):
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


def write_study_outputs(
    outcome: TuneOutcome, cfg: ExperimentConfig, ok: pd.DataFrame, tracker: tracking.Tracker | None
) -> tracking.Tracker | None:
    """Multi-objective: `pareto.csv` and `pareto.png` (the non-dominated trials among the finished ones) beside
    the experiment. Then, on the MLflow parent run, those two and Optuna's plots of the study's journal.

    Returns `tracker`, or None once MLflow failed (after one warning), as `write_outputs` does."""
    from autovid.pareto import pareto_front
    from autovid.report import pareto_figure, write_pareto

    pairs = objectives(cfg)
    table = ok.drop(columns=["genotype"], errors="ignore")
    if cfg.tune.multi_objective:
        outcome.pareto = pareto_front(ok, pairs)
        if not is_remote(outcome.experiment_path):
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
        if not is_remote(outcome.experiment_path):
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
    # "node": the retrain's workers share the largest node's cores
    cpus = max(1.0, node_cpus() // cfg.tune.resources.workers) if cfg.tune.retrain_cpu == "node" else cfg.tune.retrain_cpu
    cfg = cfg.with_overrides({"tune.resources.cpu": cpus}, source="retrain")  # the trial's threads follow
    experiment_path = experiment_dir(cfg, name)
    space = {BASE_KEY: cfg.model_dump(mode="json"), GENOTYPE_KEY: genotype_json}
    tuner = make_tuner(
        TrainTrainable,
        cfg,
        space,
        name=name,
        max_t=cfg.train.epochs,
        searcher=variant_generator(cfg),
        scheduler=FIFOScheduler(),
        num_samples=1,
        callbacks=(callbacks := make_callbacks(cfg, experiment_key or experiment_path, tracking_uri, name)),
        resume=resume,
    )
    result = fit(tuner, experiment_path, rewind_logs=resume)[0]
    if result.error:
        raise RunFailed(f"retraining failed: {error_line(result.error)} (details: {result.path}/error.txt)")
    metrics = result.metrics or {}
    keep = ("test/acc", "test/top5", "test/loss", "test/correct", "params", "flops", "epoch", "time_total_s")
    final = {k: metrics[k] for k in keep if k in metrics}
    final["trial_cpus"] = cfg.tune.resources.total_cpu
    if not is_remote(experiment_path):
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
    problem = None if name is None else plain_name_problem(name)
    if problem is not None:
        raise UserError(f"--register {problem}")


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
