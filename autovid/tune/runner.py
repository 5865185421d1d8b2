"""The experiments behind `autovid tune / search / train`: the outer study, its summary and Pareto front, the retrain.

    run_search_experiment:  Run.open ─▶ check (search, train) ─▶ start ─▶ fit(search_stage) ─▶ summary.csv,
                            best genotype, pareto.csv ─▶ retrain_best | retrain_front ─▶ parent run (best effort)
    run_retrain:            Run.open ─▶ check (train) ─▶ start ─▶ fit(retrain_stage) ─▶ final_metrics.json
                            ─▶ MLflow LoggedModel (log_retrained_model)
    MLflow: one parent run per experiment, one child per trial (MLflowTrialCallback, driver side).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from autovid import tracking
from autovid.config import LATENCY_DETAILS, LATENCY_METRICS, ExperimentConfig, plain_name_problem
from autovid.engine.preflight import example_genotype
from autovid.errors import RunFailed, UserError
from autovid.files import is_remote, write_text_atomic
from autovid.pareto import FEASIBLE, feasible_rows
from autovid.tune.cluster import node_cpus
from autovid.tune.constraints import feasibility
from autovid.tune.experiment import (
    config_of,
    error_line,
    experiment_dir,
    make_scheduler,
    make_searcher,
    objectives,
    param_space,
    variant_generator,
)
from autovid.tune.stage import ParentRun, Run, Stage
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


SUMMARY_COLUMNS = ("val/acc", "objective", "alpha/entropy", "genotype/params", "genotype/flops", "genotype/skips",
                   "genotype_hash", "epoch")


def summarize(results: list[tune.Result], cfg: ExperimentConfig) -> pd.DataFrame:
    """One row per trial: its sampled hyperparameters and its last reported metrics, best objective first."""
    constraints = cfg.tune.parsed_constraints
    columns = (*SUMMARY_COLUMNS, *study_columns(cfg))
    rows = []
    for result in results:
        metrics = result.metrics or {}
        row: dict[str, Any] = {"trial": metrics.get("trial_id", "?"), "status": "ERROR" if result.error else "OK"}
        row.update({key: (result.config or {}).get(key) for key in cfg.tune.param_space})
        row.update({key: metrics.get(key) for key in columns})
        if constraints:  # None: a bounded metric was never reported (an errored trial)
            row[FEASIBLE] = feasibility(constraints, metrics)
        row["genotype"] = metrics.get("genotype")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty and "objective" in frame:
        frame = frame.sort_values("objective", ascending=False, na_position="last").reset_index(drop=True)
    return frame


def study_columns(cfg: ExperimentConfig) -> list[str]:
    """The summary's columns beyond SUMMARY_COLUMNS: a multi-objective study's objectives, the constrained
    metrics, and both latencies whenever they are measured, with how they were measured (runtime, threads)."""
    wanted = [o.metric for o in cfg.tune.objectives] + [c.metric for c in cfg.tune.parsed_constraints]
    if cfg.measures_latency:
        wanted += [*LATENCY_METRICS, *LATENCY_DETAILS]
    return [m for m in dict.fromkeys(wanted) if m not in SUMMARY_COLUMNS]


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
    retrain_mode = cfg.tune.retrain if retrain else "none"
    check_retrain_request(register, retrain_mode, cfg)
    run = Run.open(cfg, resume=resume, address=address, tracking_uri=tracking_uri)
    cfg = run.cfg
    # with a retrain, its network too (a genotype of the space at retrain size), before hours of search
    run.check(
        cfg, *(("search",) if retrain_mode == "none" else ("search", "train")), genotype_json=example_genotype(cfg)
    )
    run.start()
    results = run.fit(search_stage(cfg))
    outcome = TuneOutcome(experiment_dir(cfg), summarize(results, cfg), None, None, None)
    # MLflow is best effort from here on: summary.csv and best_genotype.json reach disk whatever the store does
    parent = ParentRun.open(run)
    outcome.parent_run_id = parent.run_id
    ok = finished_trials(outcome.summary)
    feasible = feasible_trials(ok, outcome, cfg)
    if feasible.empty:
        return outcome
    pick_best(outcome, feasible, results)
    write_outputs(outcome, parent)
    write_study_outputs(outcome, cfg, ok, parent)
    if retrain_mode == "pareto" and outcome.pareto is not None:
        outcome.pareto_retrained = retrain_front(outcome, results, cfg, parent, resume=resume,
                                                 tracking_uri=run.tracking_uri)
    if retrain_mode == "best" and outcome.best_genotype:
        outcome.retrain = retrain_best(outcome, run, parent, register=register)
    return outcome


def check_retrain_request(register: str | None, retrain_mode: str, cfg: ExperimentConfig) -> None:
    """--register NAME names one retrained network: not with a retrain of the whole front (check_register)."""
    if register and retrain_mode == "pareto":
        raise UserError(f"--register {register} names one network, and tune.retrain=pareto retrains every front "
                        f"member: register the one you pick with `autovid train CONFIG --genotype G.json --register`")
    check_register(register, cfg)


def search_stage(cfg: ExperimentConfig) -> Stage:
    """The outer study: SearchTrainable trials drawn by the configured searcher, stopped by its scheduler."""
    return Stage(SearchTrainable, cfg, param_space(cfg), name=cfg.name, max_t=cfg.search.epochs,
                 searcher=make_searcher(cfg, Path(experiment_dir(cfg))),
                 scheduler=make_scheduler(cfg, cfg.search.epochs), num_samples=cfg.tune.num_samples,
                 rewind_logs=cfg.tune.scheduler.name != "pbt")


def finished_trials(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of trials that finished and reported an objective (best first)."""
    return summary[summary["status"] == "OK"].dropna(subset=["objective"]) if not summary.empty else summary


def feasible_trials(ok: pd.DataFrame, outcome: TuneOutcome, cfg: ExperimentConfig) -> pd.DataFrame:
    """The finished trials that met tune.constraints (all of them without constraints). When none did,
    summary.csv is written anyway: it shows why."""
    if ok.empty:
        log.error("no trial finished successfully; see %s", outcome.experiment_path)
        return ok
    feasible = ok[feasible_rows(ok)]
    if len(feasible) < len(ok):
        log.warning("%d of %d finished trials broke tune.constraints (%s): reported as infeasible in summary.csv, "
                    "never the best trial or on the Pareto front", len(ok) - len(feasible), len(ok),
                    "; ".join(cfg.tune.constraints))
    if feasible.empty:
        if not is_remote(outcome.experiment_path):
            write_text_atomic(Path(outcome.experiment_path) / "summary.csv",
                              outcome.summary.drop(columns=["genotype"]).to_csv(index=False))
        log.error("no finished trial met tune.constraints; see %s", outcome.experiment_path)
    return feasible


def pick_best(outcome: TuneOutcome, ok: pd.DataFrame, results: list[tune.Result]) -> None:
    """The winner: the first row of `ok` (the summary's order: by objective), its config and final α."""
    best = ok.iloc[0]
    best_result = next(r for r in results if (r.metrics or {}).get("trial_id") == best["trial"])
    outcome.best_trial_id = str(best["trial"])
    outcome.best_genotype = best["genotype"]
    outcome.best_config = dict(config_of(best_result))
    outcome.best_alphas = (best_result.metrics or {}).get("alphas")


def retrain_best(outcome: TuneOutcome, run: Run, parent: ParentRun, *, register: str | None) -> dict[str, Any]:
    """tune.retrain=best: retrain the winner under its own config (`<name>-retrain`); its final metrics go to
    final_metrics.json and, as a copy, to the parent run (`retrain_best.json`, `best/*`)."""
    assert outcome.best_config is not None
    final = run_retrain(
        resolve_trial_config(outcome.best_config),
        outcome.best_genotype,
        name=f"{run.cfg.name}-retrain",
        resume=run.resume and tune.Tuner.can_restore(f"{outcome.experiment_path}-retrain"),
        tracking_uri=run.tracking_uri,
        experiment_key=outcome.experiment_path,
        register=register,
    )

    def log_retrain(tracker: tracking.Tracker, run_id: str) -> None:
        tracker.log_dict(run_id, final, "retrain_best.json")
        tracker.log_metrics(run_id, {f"best/{k}": v for k, v in final.items()}, step=0)

    parent.record("retrain results", "they are in final_metrics.json", log_retrain)
    return final


def write_outputs(outcome: TuneOutcome, parent: ParentRun) -> None:
    """summary.csv and best_genotype.json beside the experiment, then on the MLflow parent run (a copy)."""
    out = Path(outcome.experiment_path)
    table = outcome.summary.drop(columns=["genotype"])  # genotypes travel as JSON files, not table cells
    if not is_remote(outcome.experiment_path):
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("summary.csv", table.to_csv(index=False)),
                           ("best_genotype.json", outcome.best_genotype or "")):
            write_text_atomic(out / name, text)  # a crash or a full disk never leaves a truncated file

    def log_summary(tracker: tracking.Tracker, run_id: str) -> None:
        tracker.log_table(run_id, table, "summary")
        if outcome.best_genotype:
            tracker.log_genotype(run_id, outcome.best_genotype, prefix="best_")
        tracker.end(run_id)

    parent.record("summary", f"summary.csv and best_genotype.json are in {outcome.experiment_path}", log_summary)


def write_study_outputs(outcome: TuneOutcome, cfg: ExperimentConfig, ok: pd.DataFrame, parent: ParentRun) -> None:
    """Multi-objective: `pareto.csv` and `pareto.png` (the non-dominated trials among the finished ones) beside
    the experiment. Then, on the MLflow parent run, those two and Optuna's plots of the study's journal."""
    from autovid.pareto import pareto_front
    from autovid.report import pareto_figure, write_pareto

    pairs = objectives(cfg)
    table = ok.drop(columns=["genotype"], errors="ignore")
    if cfg.tune.multi_objective:
        outcome.pareto = pareto_front(ok, pairs)
        if not is_remote(outcome.experiment_path):
            write_pareto(table, pairs, outcome.experiment_path)

    def log_study(tracker: tracking.Tracker, run_id: str) -> None:
        from autovid.tune.study import load_study, study_figures

        if outcome.pareto is not None:
            tracker.log_text(run_id, pareto_front(table, pairs).to_csv(index=False), "pareto.csv")
            tracker.log_figure(run_id, pareto_figure(table, pairs), "pareto.png")
        study = load_study(outcome.experiment_path, cfg.name)
        if study is not None:
            for name, figure in study_figures(study, [m for m, _ in pairs]).items():
                tracker.log_figure(run_id, figure, f"optuna/{name}")

    parent.record("Pareto front / Optuna plots",
                  f"pareto.csv and optuna.journal are in {outcome.experiment_path}", log_study)


RETRAINED_COLUMNS = ("test/acc", "test/top5", "params", "flops", "time_total_s")


def retrain_front(
    outcome: TuneOutcome,
    results: list[tune.Result],
    cfg: ExperimentConfig,
    parent: ParentRun,
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
    out = Path(outcome.experiment_path)
    for member in outcome.pareto.to_dict("records"):
        rows.append(retrain_member(member, outcome, results, cfg, resume=resume, tracking_uri=tracking_uri))
        if not is_remote(outcome.experiment_path):  # after each member: an interrupted run keeps the finished ones
            write_text_atomic(out / "pareto_retrained.csv", pd.DataFrame(rows).to_csv(index=False))
    frame = pd.DataFrame(rows)
    parent.record("pareto_retrained.csv", f"it is in {out}",
                  lambda tracker, run_id: tracker.log_text(run_id, frame.to_csv(index=False), "pareto_retrained.csv"))
    failed = [row["trial"] for row in rows if row["status"] != "OK"]
    if failed:
        raise RunFailed(f"retraining {len(failed)} of {len(rows)} Pareto front members failed ({', '.join(failed)}); "
                        f"the others are in {out / 'pareto_retrained.csv'}")
    return frame


def retrain_member(member: Mapping[Hashable, Any], outcome: TuneOutcome, results: list[tune.Result],
                   cfg: ExperimentConfig, *, resume: bool, tracking_uri: str) -> dict[str, Any]:
    """Retrain one front member with its own trial's config, as `<name>-retrain-<trial>`: its pareto_retrained.csv
    row (search-time objectives, then test accuracy and cost, status OK or ERROR: a failure is logged, not raised)."""
    trial = str(member["trial"])
    result = next(r for r in results if (r.metrics or {}).get("trial_id") == trial)
    row: dict[str, Any] = {"trial": trial, "genotype_hash": member.get("genotype_hash"),
                           **{m: member.get(m) for m, _ in objectives(cfg)}}  # search-time objectives
    try:
        final = run_retrain(
            resolve_trial_config(dict(config_of(result))), member["genotype"], name=f"{cfg.name}-retrain-{trial}",
            resume=resume and tune.Tuner.can_restore(f"{outcome.experiment_path}-retrain-{trial}"),
            tracking_uri=tracking_uri, experiment_key=outcome.experiment_path,
        )
    except RunFailed as exc:
        log.error("retraining front member %s failed: %s", trial, exc)
        return {**row, "status": "ERROR"}
    return {**row, **{key: final.get(key) for key in RETRAINED_COLUMNS}, "status": "OK"}


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
    check_register(register, cfg)
    run = Run.open(cfg.with_overrides({"name": name}, source="retrain"), resume=resume, address=address,
                   tracking_uri=tracking_uri, key=experiment_key, run_name=name)
    run.check(run.cfg, "train", genotype_json=genotype_json)
    run.start()
    stage = retrain_stage(run.cfg, genotype_json)
    result = run.fit(stage)[0]
    if result.error:
        raise RunFailed(f"retraining failed: {error_line(result.error)} (details: {result.path}/error.txt)")
    metrics = result.metrics or {}
    keep = ("test/acc", "test/top5", "test/loss", "test/correct", "params", "flops", "epoch", "time_total_s")
    final = {k: metrics[k] for k in keep if k in metrics}
    cfg, experiment_path = stage.cfg, experiment_dir(stage.cfg)
    final["trial_cpus"] = cfg.tune.resources.total_cpu
    if not is_remote(experiment_path):
        Path(experiment_path).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(experiment_path) / "final_metrics.json", json.dumps(final, indent=2))
        if result.checkpoint is not None:
            final["checkpoint"] = str(Path(result.checkpoint.path) / "state.pt")
    if result.checkpoint is not None and cfg.tracking.log_models:  # after final_metrics.json: MLflow copies the disk
        # a resumed experiment runs the callbacks Tune restored, not the stage's: their runs are then found by tag
        final.update(log_retrained_model(result, cfg, tracking_uri=run.tracking_uri, experiment_key=run.key,
                                         known_runs=run.trial_runs, register=register))
    return final


def retrain_stage(cfg: ExperimentConfig, genotype_json: str | None) -> Stage:
    """One TrainTrainable trial; `tune.retrain_cpu: node` gives it the largest node's cores (shared by its
    data-parallel workers), and its threads follow."""
    cpus = (
        max(1.0, node_cpus() // cfg.tune.resources.workers) if cfg.tune.retrain_cpu == "node" else cfg.tune.retrain_cpu
    )
    cfg = cfg.with_overrides({"tune.resources.cpu": cpus}, source="retrain")
    return Stage(TrainTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json"), GENOTYPE_KEY: genotype_json},
                 name=cfg.name, max_t=cfg.train.epochs, searcher=variant_generator(cfg))


def check_registered_name(name: str | None) -> None:
    """`--register NAME` must be a plain name (MLflow refuses '/' and ':'); checked before any training."""
    problem = None if name is None else plain_name_problem(name)
    if problem is not None:
        raise UserError(f"--register {problem}")


def check_register(register: str | None, cfg: ExperimentConfig) -> None:
    """`--register NAME`: a plain name, and a logged model to register (tracking.log_models); before any training."""
    check_registered_name(register)
    if register is not None and not cfg.tracking.log_models:
        raise UserError("--register registers the logged model: set tracking.log_models=true")


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
    checkpoint = result.checkpoint
    if checkpoint is None:
        log.warning("MLflow tracking: trial %s left no checkpoint, so no network to log as an MLflow model", trial_id)
        return logged
    try:
        with checkpoint.as_directory() as folder:
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
                    trial_id, missing, tracking.describe(exc), checkpoint.path)
    return logged
