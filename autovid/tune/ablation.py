"""Ablations in one harness: DARTS, random search, random search with weight sharing and fixed networks,
each arm × seed as Ray Tune trials, every final architecture retrained under one protocol, one report.

    for arm in ablation.arms, seed in ablation.seeds:           (results.csv grows row by row: resumable)
        darts / random_ws ─▶ Tuner(SearchTrainable)  ─▶ genotype ─┐
        random            ─▶ Tuner(TrainTrainable × samples, ASHA, holdout) ─▶ best genotype ─┤
        fixed             ─────────────────────────────────────────────────────────── model ─┤
                                                   run_retrain (same epochs, data, seed) ◀─┘
    report.md / report.csv / accuracy_vs_params.png          (autovid.report)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from autovid import report, stats, tracking
from autovid.config import ArmConfig, ExperimentConfig, load_arm
from autovid.engine.accounting import count_flops
from autovid.engine.checkpoint import load_state
from autovid.engine.networks import build_network, build_supernet
from autovid.engine.preflight import example_genotype, preflight
from autovid.engine.session import SearchSession
from autovid.engine.setup import clip_shape, prepare_manifest
from autovid.errors import RunFailed, UserError
from autovid.files import write_csv_atomic, write_text_atomic
from autovid.nas.genotype import Genotype, derive_genotype
from autovid.nas.ops import mixes_time
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace, load_search_space
from autovid.provenance import provenance
from autovid.rng import Stream
from autovid.rng import generator as rng_stream
from autovid.tune.cluster import is_local
from autovid.tune.experiment import error_line, experiment_dir, fit, make_callbacks, make_tuner
from autovid.tune.runner import resolve_run, run_retrain, start_run
from autovid.tune.trainables import BASE_KEY, GENOTYPE_KEY, STATE_FILE, SearchTrainable, TrainTrainable

log = logging.getLogger(__name__)

# `correct`: the retrained network's per-test-video hits ("0"/"1", test-set order), for paired comparisons
RESULT_COLUMNS = ("arm", "seed", "top1", "top5", "params", "flops", "search_cost_s", "retrain_cost_s", "genotype_hash",
                  "train_lr", "correct")


def hits_array(hits: str) -> np.ndarray:
    """A retrain's per-video hits ("0"/"1" per test video, as reported in `test/correct`) as a 0/1 array."""
    return np.frombuffer(str(hits).encode(), dtype=np.uint8) - ord("0")


class _Context:
    """What every sub-experiment of one ablation shares: config, MLflow parent key, output folder."""

    def __init__(self, cfg: ExperimentConfig, *, resume: bool, tracking_uri: str) -> None:
        self.cfg = cfg
        self.resume = resume
        self.tracking_uri = tracking_uri
        self.root = Path(str(cfg.storage_path)) / cfg.name
        self.key = str(self.root)  # MLflow parent run: every arm's trials are its children

    def fit(self, trainable: type, cfg: ExperimentConfig, space: dict[str, Any], *, name: str, max_t: int,
            scheduler: Any, num_samples: int = 1) -> tune.ResultGrid:
        path = experiment_dir(self.cfg, name)
        tuner = make_tuner(
            trainable, cfg, space, name=name, max_t=max_t, searcher=BasicVariantGenerator(random_state=cfg.seed),
            scheduler=scheduler, num_samples=num_samples,
            callbacks=make_callbacks(cfg, self.key, self.tracking_uri, self.cfg.name),
            resume=(resumed := self.resume and tune.Tuner.can_restore(path)),
        )
        return fit(tuner, path, rewind_logs=resumed)  # FIFO and ASHA only here: no PBT


def train_standalone(ctx: _Context, cfg: ExperimentConfig, genotypes: list[str], *, epochs: int, name: str,
                     scheduler: Any) -> tune.ResultGrid:
    """Train each genotype from scratch at search size on the weight half, scored on the α half (val/*),
    one Tune trial per genotype: random search and the standalone side of the rank check."""
    holdout = cfg.with_overrides({"train.holdout": True, "train.epochs": epochs,
                                  "train.channels": cfg.model.channels, "train.cells": cfg.model.cells})
    space = {BASE_KEY: holdout.model_dump(mode="json"), GENOTYPE_KEY: tune.grid_search(genotypes)}
    return ctx.fit(TrainTrainable, holdout, space, name=name, max_t=epochs, scheduler=scheduler)


def _cpu_seconds(results: tune.ResultGrid, cfg: ExperimentConfig) -> float:
    """Measured cost: wall seconds of every trial × the CPUs (or GPUs) it held."""
    per_trial = cfg.tune.resources.total_gpu or cfg.tune.resources.total_cpu
    return float(sum((r.metrics or {}).get("time_total_s", 0.0) for r in results) * per_trial)


def arm_config(cfg: ExperimentConfig, arm: ArmConfig, seed: int) -> ExperimentConfig:
    overrides: dict[str, Any] = {"seed": seed, "name": f"{cfg.name}-{arm.name}-s{seed}"}
    if arm.search_space:
        overrides["search_space"] = arm.search_space
    if arm.strategy == "fixed":
        overrides.update({"train.model": arm.model, "train.width": arm.width})
    if arm.strategy == "random_ws":
        overrides["search.strategy"] = "random_ws"
    overrides.update(arm.overrides)
    return cfg.with_overrides(overrides, source=f"arm {arm.name}")


def preflight_arm(cfg: ExperimentConfig, arm: ArmConfig, *, local: bool) -> None:
    """Check what an arm will train: its search (supernet or search-size genotypes) and its retrain."""
    if arm.strategy == "fixed":
        preflight(cfg, "train", local=local)
        return
    kinds = ("train",) if arm.strategy == "random" else ("search", "train")
    preflight(cfg, *kinds, genotype_json=example_genotype(cfg), local=local)


def find_architecture(ctx: _Context, arm: ArmConfig, cfg: ExperimentConfig) -> tuple[str | None, float]:
    """The arm's search: returns (genotype JSON or None for fixed networks, search cost in CPU-seconds)."""
    if arm.strategy == "fixed":
        return None, 0.0
    if arm.strategy in ("darts", "random_ws"):
        results = ctx.fit(SearchTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json")}, name=f"{cfg.name}-search",
                          max_t=cfg.search.epochs, scheduler=FIFOScheduler())
        result = results[0]
        if result.error or not (result.metrics or {}).get("genotype"):
            raise RunFailed(f"arm {arm.name}: the search failed: {error_line(result.error)}")
        return result.metrics["genotype"], _cpu_seconds(results, cfg)
    # random: uniform genotypes trained standalone on the weight half, early-stopped by ASHA on the α half.
    scored, cost = random_search(ctx, cfg, arm)
    if not scored:
        raise RunFailed(f"arm {arm.name}: every random-search trial failed")
    return max(scored, key=lambda pair: pair[0])[1], cost


def random_search(ctx: _Context, cfg: ExperimentConfig, arm: ArmConfig) -> tuple[list[tuple[float, str]], float]:
    """The random arm's trials, in rounds: ``(val/acc, genotype JSON)`` of every trial and the CPU-seconds spent.

    With ``ablation.budget = flops`` the arm spends the FLOPs of one DARTS search: a round trains as many fresh
    genotypes as the remaining budget would fit at full length; ASHA stops some early, and the FLOPs it saved
    (epochs not trained) pay for another round of fresh genotypes, until not one more fits. With
    ``budget = samples``, one round of ``samples`` genotypes.
    """
    space = load_search_space(cfg.search_space)
    draws = _Draws(space, cfg.seed)
    epochs = cfg.search.epochs
    budget = search_flops(cfg)["budget"] if cfg.ablation.budget == "flops" else math.inf
    scored: list[tuple[float, str]] = []
    seconds = spent = 0.0
    for round_ in range(1, 100):
        if cfg.ablation.budget == "samples":
            batch = [next(draws) for _ in range(arm.samples)]
        else:
            batch = _fitting(draws, budget - spent, cfg, space, at_least_one=not scored)
        if not batch:
            break
        genotypes = {g.to_json(): cost for g, cost in batch}
        results = train_standalone(
            ctx, cfg, list(genotypes), epochs=epochs, name=f"{cfg.name}-search" + (f"-r{round_}" if round_ > 1 else ""),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2),
        )
        seconds += _cpu_seconds(results, cfg)
        for r in results:
            trained = int((r.metrics or {}).get("training_iteration", epochs if r.error else 0))
            spent += genotypes[r.config[GENOTYPE_KEY]] * trained  # per-epoch FLOPs × epochs actually trained
            if r.metrics and not r.error:
                scored.append((r.metrics.get("val/acc", -1.0), r.config[GENOTYPE_KEY]))
        if cfg.ablation.budget == "samples":
            break
    return scored, seconds


class _Draws:
    """Uniform genotypes of a space from the arm's seed, with one genotype of look-ahead (``peek``)."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space, self.rng, self.next_one = space, np.random.default_rng(seed), None

    def peek(self) -> Genotype:
        if self.next_one is None:
            self.next_one = sample_genotype(self.space, self.rng)
        return self.next_one

    def __next__(self) -> Genotype:
        genotype = self.peek()
        self.next_one = None
        return genotype


def _epoch_flops(cfg: ExperimentConfig, space: SearchSpace, genotype: Genotype, classes: int | None = None) -> float:
    """Forward FLOPs of one standalone epoch (every weight-half clip once) of ``genotype`` at search size, in
    the units of ``search_flops``' budget (FLOPs per clip × half-epochs); ``classes`` read from the manifest
    when not given."""
    search_size = cfg.with_overrides({"train.channels": cfg.model.channels, "train.cells": cfg.model.cells,
                                      "train.model": None}, source="random-search budget")
    if classes is None:
        classes = int(prepare_manifest(cfg.data)["label"].nunique())
    net = build_network(search_size, num_classes=classes, genotype=genotype, space=space)
    return float(count_flops(net, (1, *clip_shape(cfg.data))))


def _fitting(draws: _Draws, remaining: float, cfg: ExperimentConfig, space: SearchSpace, *,
             at_least_one: bool) -> list[tuple[Genotype, float]]:
    """The next genotypes whose full-length training fits ``remaining`` FLOPs: (genotype, per-epoch FLOPs)."""
    chosen: list[tuple[Genotype, float]] = []
    classes = int(prepare_manifest(cfg.data)["label"].nunique())  # once, not once per drawn genotype
    while True:
        cost = _epoch_flops(cfg, space, draws.peek(), classes)
        if (chosen or not at_least_one) and cost * cfg.search.epochs > remaining:
            return chosen
        chosen.append((next(draws), cost))
        remaining -= cost * cfg.search.epochs


def search_flops(cfg: ExperimentConfig) -> dict[str, float]:
    """Forward FLOPs per clip of the search-size supernet, and the DARTS search's budget in clip-passes.

    One DARTS epoch passes every clip of the weight half through the supernet (weight step) and, after the
    warm-up, every clip of the α half (first-order α step): 2·epochs − warm-up half-epochs; a second-order α
    step counts four passes (virtual step, α gradient, two finite-difference passes). A standalone
    network trained for `epochs` on the weight half makes `epochs` half-epochs. Backward passes cost about
    twice the forward in both, so forward FLOPs × half-epochs compare the two like for like.
    """
    classes = int(prepare_manifest(cfg.data)["label"].nunique())
    supernet = build_supernet(cfg, num_classes=classes)
    # second order: each α step also runs the virtual weight step and the two finite-difference passes on the
    # weight half, four passes where first order runs one
    alpha_passes = 4 if cfg.search.order == "second" else 1
    half_epochs = cfg.search.epochs + alpha_passes * (cfg.search.epochs - min(cfg.search.warmup_epochs, cfg.search.epochs))
    flops = count_flops(supernet, (1, *clip_shape(cfg.data)))
    return {"supernet_flops": float(flops), "half_epochs": float(half_epochs), "budget": float(flops * half_epochs),
            "classes": float(classes)}


def random_arm_genotypes(cfg: ExperimentConfig, arm: ArmConfig) -> list[Genotype]:
    """The genotypes of a random-search arm's first round: `samples` of them, or (ablation.budget = flops) as
    many as fit the FLOPs budget of one DARTS search at full length (see `search_flops`); at least one. ASHA's
    savings buy later rounds (`random_search`). Deterministic."""
    space = load_search_space(cfg.search_space)
    draws = _Draws(space, cfg.seed)
    if cfg.ablation.budget == "samples":
        return [next(draws) for _ in range(arm.samples)]
    return [g for g, _ in _fitting(draws, search_flops(cfg)["budget"], cfg, space, at_least_one=True)]


def baseline_lrs(cfg: ExperimentConfig) -> list[float]:
    """The learning rates a fixed arm tries (``ablation.baseline_lr_sweep``); empty when it takes train.lr."""
    n = cfg.ablation.baseline_lr_sweep
    n = cfg.tune.num_samples if n is None else n
    if n < 2:
        return []
    return [float(lr) for lr in np.geomspace(cfg.train.lr / 10, cfg.train.lr * 10, n)]


def sweep_learning_rate(ctx: _Context, cfg: ExperimentConfig, lrs: list[float]) -> tuple[float, float]:
    """A fixed network's learning rate, chosen as a NAS arm's hyperparameters are: each of ``lrs`` trained on
    the weight half and scored on the α half (never on the test split). Returns (best lr, CPU-seconds)."""
    holdout = cfg.with_overrides({"train.holdout": True}, source="baseline learning-rate sweep")
    space = {BASE_KEY: holdout.model_dump(mode="json"), "train.lr": tune.grid_search(lrs)}
    results = ctx.fit(TrainTrainable, holdout, space, name=f"{cfg.name}-lr-sweep", max_t=cfg.train.epochs,
                      scheduler=FIFOScheduler())
    scored = [(r.metrics.get("val/acc", -1.0), r.config["train.lr"]) for r in results if r.metrics and not r.error]
    if not scored:
        raise RunFailed(f"{cfg.name}: every learning rate of the baseline sweep failed")
    # ties (small α halves score in steps of 1/videos) go to the rate nearest the configured one
    best = max(scored, key=lambda pair: (pair[0], -abs(math.log(pair[1] / cfg.train.lr))))
    return float(best[1]), _cpu_seconds(results, cfg)


def run_arm(ctx: _Context, arm: ArmConfig, seed: int) -> dict[str, Any]:
    cfg = arm_config(ctx.cfg, arm, seed)
    genotype_json, search_cost = find_architecture(ctx, arm, cfg)
    if arm.strategy == "fixed" and (lrs := baseline_lrs(cfg)):
        lr, sweep_cost = sweep_learning_rate(ctx, cfg, lrs)
        cfg, search_cost = cfg.with_overrides({"train.lr": lr}, source=f"arm {arm.name}: swept lr"), sweep_cost
    final = run_retrain(cfg, genotype_json, name=f"{cfg.name}-retrain", resume=ctx.resume,
                        tracking_uri=ctx.tracking_uri, experiment_key=ctx.key)
    return {
        "arm": arm.name, "seed": seed, "top1": final["test/acc"], "top5": final.get("test/top5"),
        "params": final.get("params"), "flops": final.get("flops"), "search_cost_s": search_cost,
        "retrain_cost_s": final.get("time_total_s", 0.0) * (ctx.cfg.tune.resources.total_gpu or final["trial_cpus"]),
        "genotype_hash": Genotype.from_json(genotype_json).hash if genotype_json else "",
        "train_lr": cfg.train.lr,
        "correct": final["test/correct"],
    }


def budget_note(cfg: ExperimentConfig, arms: list[ArmConfig]) -> str:
    c = cfg
    lines = [
        f"Data: {c.data.dataset} (split {c.data.split}), {c.data.num_segments} segments x {c.data.frames_per_segment} frames "
        f"(stride {c.data.stride}) at {c.data.crop_size}x{c.data.crop_size}, {c.data.mode} sampling, {c.data.modality} input; "
        f"seeds {list(c.ablation.seeds)}.",
        f"Search: supernet {c.model.cells} cells x {c.model.channels} channels, {c.search.epochs} epochs "
        f"({c.search.warmup_epochs} warm-up), {c.search.order}-order DARTS.",
        f"Retrain (every arm, same protocol): {c.train.epochs} epochs, {c.train.optimizer} lr {c.train.lr} cosine, "
        f"stem init {c.model.stem_init}; NAS networks "
        f"{c.train.cells} cells x {c.train.channels} channels.",
    ]
    if c.ablation.budget == "flops" and any(arm.strategy == "random" for arm in arms):
        flops = search_flops(c)
        lines.append(
            f"Equal search budget (ablation.budget = flops): one DARTS search = supernet {flops['supernet_flops'] / 1e6:.1f} "
            f"MFLOPs/clip x {flops['half_epochs']:.0f} half-epochs (weight + α passes, {c.search.order} order); a "
            f"random arm trains as many standalone genotypes (search size, {c.search.epochs} epochs each) as fit that "
            "budget, and the epochs ASHA stops early buy further rounds of fresh genotypes until none fits.")
    for arm in arms:
        extra = ""
        if arm.strategy == "random":  # the FLOPs budget decides the count: the one the first seed drew
            extra = (f", {len(random_arm_genotypes(arm_config(c, arm, c.seed), arm))} genotypes in its first round "
                     f"(seed {c.seed})")
        # what each arm's protocol tuned: a fixed network's learning rate, as a NAS arm's search is tuned
        if arm.strategy == "fixed":
            lrs = baseline_lrs(c)
            extra += f", width x{arm.width}, " + (
                f"learning rate chosen on the α half among {len(lrs)} ({lrs[0]:.2g} to {lrs[-1]:.2g}; "
                "its cost counts as search)" if lrs else f"the common retrain at lr {c.train.lr} (not tuned)")
        lines.append(f"- {arm.name}: {arm.strategy}{extra}. {arm.description}")
    lines.append("Costs are measured: trial wall-clock seconds x CPUs held (CPU-hours per seed in the table, "
                 "CPU-seconds in report.csv).")
    return "\n".join(lines)


def run_ablation(cfg: ExperimentConfig, *, resume: bool = False, address: str | None = None,
                 tracking_uri: str | None = None) -> dict[str, Path]:
    """Run every arm × seed (skipping finished ones on resume), then write the report."""
    if not cfg.ablation.arms:
        raise UserError("ablation.arms is empty: list baselines/ names (e.g. darts-p3d, random-p3d, r3d-18)")
    arms = [load_arm(name) for name in cfg.ablation.arms]
    if cfg.ablation.reference not in [arm.name for arm in arms]:
        raise UserError(f"ablation.reference {cfg.ablation.reference!r} is not one of the arms "
                        f"({', '.join(arm.name for arm in arms)})")
    cfg, tracking_uri = resolve_run(cfg, tracking_uri)
    origin = provenance(cfg, prepare_manifest(cfg.data))  # what runs: the tree and data at the start
    ctx = _Context(cfg, resume=resume, tracking_uri=tracking_uri)
    results_path = ctx.root / "results.csv"
    if results_path.exists() and not resume:
        raise UserError(f"ablation {cfg.name!r} already has results at {results_path}; use --resume to continue it")
    for arm in arms:  # every arm's networks, before the first of hours of trials
        preflight_arm(arm_config(cfg, arm, cfg.ablation.seeds[0]), arm, local=is_local(address))
    ctx.root.mkdir(parents=True, exist_ok=True)
    start_run(cfg, address)
    # `correct` is a string of 0/1 (read as text, or its leading zeros would be lost)
    done = (pd.read_csv(results_path, dtype={"correct": str}) if results_path.exists()
            else pd.DataFrame(columns=list(RESULT_COLUMNS)))
    finished = {(str(a), int(s)) for a, s in zip(done["arm"], done["seed"])}
    for arm in arms:
        for seed in cfg.ablation.seeds:
            if (arm.name, seed) in finished:
                log.info("ablation: %s seed %d already done, skipped", arm.name, seed)
                continue
            log.info("ablation: %s seed %d", arm.name, seed)
            row = run_arm(ctx, arm, seed)
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            write_csv_atomic(done, results_path)  # after every arm × seed: an interruption loses nothing
    correct = {(str(a), int(s)): hits_array(hits) for a, s, hits in zip(done["arm"], done["seed"], done["correct"])}
    paths = report.write_ablation_report(done, ctx.root, budget_note=budget_note(cfg, arms), correct=correct,
                                         reference=cfg.ablation.reference, alpha=cfg.ablation.alpha,
                                         provenance=origin)
    tracker = tracking.Tracker(tracking_uri, cfg.tracking.experiment)
    parent = tracker.find_run("autovid.experiment_id", ctx.key)
    if parent:
        tracker.reopen(parent)
        for path in paths.values():
            tracker.log_artifact(parent, path)
        tracker.end(parent)
    return paths


def run_rank_check(cfg: ExperimentConfig, *, resume: bool = False, address: str | None = None,
                   tracking_uri: str | None = None) -> dict[str, Any]:
    """Does weight sharing rank architectures right? Kendall τ / Spearman ρ between inherited-weight
    scores (a random-WS supernet) and standalone training of the same sampled genotypes."""
    n = cfg.ablation.rank_samples
    if n < 3:
        raise UserError("ablation.rank_samples must be at least 3 for a rank correlation")
    cfg, tracking_uri = resolve_run(
        cfg.with_overrides({"search.strategy": "random_ws", "search.ws_candidates": 1}), tracking_uri
    )
    ctx = _Context(cfg, resume=resume, tracking_uri=tracking_uri)
    preflight(cfg, "search", local=is_local(address))
    start_run(cfg, address)
    supernet = ctx.fit(SearchTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json")}, name=f"{cfg.name}-rank-supernet",
                       max_t=cfg.search.epochs, scheduler=FIFOScheduler())[0]
    if supernet.error or supernet.checkpoint is None:
        raise RunFailed(f"the weight-sharing supernet failed: {error_line(supernet.error)}")
    session = SearchSession(cfg)
    session.load_state_dict(load_state(Path(supernet.checkpoint.path) / STATE_FILE))
    rng = rng_stream(cfg.seed, Stream.RANK_GENOTYPES)
    space = load_search_space(cfg.search_space)
    genotypes = [sample_genotype(space, rng) for _ in range(n)]
    inherited = session.score_genotypes(genotypes)
    standalone_results = train_standalone(
        ctx, cfg, [g.to_json() for g in genotypes], epochs=cfg.ablation.rank_epochs,
        name=f"{cfg.name}-rank-standalone", scheduler=FIFOScheduler(),
    )
    by_genotype = {r.config[GENOTYPE_KEY]: r.metrics.get("val/acc") for r in standalone_results if r.metrics}
    standalone = [by_genotype.get(g.to_json(), float("nan")) for g in genotypes]
    table = pd.DataFrame({"genotype_hash": [g.hash for g in genotypes], "inherited_val_acc": inherited,
                          "standalone_val_acc": standalone})
    ctx.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, ctx.root / "rank.csv")
    valid = table.dropna()
    result: dict[str, Any] = report.rank_correlation(valid["inherited_val_acc"].to_numpy(), valid["standalone_val_acc"].to_numpy())
    report.plot_rank_scatter(valid["inherited_val_acc"].to_numpy(), valid["standalone_val_acc"].to_numpy(),
                             ctx.root / "rank_scatter.png", ("inherited-weight val acc", "standalone val acc"),
                             point_labels=list(valid["genotype_hash"]))
    result.update({"table": str(ctx.root / "rank.csv"), "plot": str(ctx.root / "rank_scatter.png")})
    return result


NULL_CONTROL_COLUMNS = ("seed", "labels", "genotype", "val_acc", "alpha_entropy", "genotype_json")


def run_null_control(cfg: ExperimentConfig, *, seeds: int = 3, resume: bool = False, address: str | None = None,
                     tracking_uri: str | None = None) -> dict[str, Any]:
    """A search beside its null: the config's search for ``seeds`` seeds on the true labels and, identically, on
    labels permuted across the train videos (``search.shuffle_labels``, a fixed permutation per seed), one Tune
    grid of 2 × seeds trials. A search that searches agrees with itself across seeds more than its null does,
    and its α commits (entropy falls) further than on labels that carry no signal.

    Writes null_control.csv (``NULL_CONTROL_COLUMNS``) and null_control.md (with provenance).
    """
    if seeds < 2:
        raise UserError("--seeds must be at least 2 (agreement is measured between seeds)")
    cfg, tracking_uri = resolve_run(cfg, tracking_uri)
    origin = provenance(cfg, prepare_manifest(cfg.data))  # what runs: the tree and data at the start
    ctx = _Context(cfg, resume=resume, tracking_uri=tracking_uri)
    preflight(cfg, "search", local=is_local(address))
    start_run(cfg, address)
    grid = {BASE_KEY: cfg.model_dump(mode="json"), "seed": tune.grid_search([cfg.seed + i for i in range(seeds)]),
            "search.shuffle_labels": tune.grid_search([False, True])}
    results = ctx.fit(SearchTrainable, cfg, grid, name=f"{cfg.name}-null-control", max_t=cfg.search.epochs,
                      scheduler=FIFOScheduler())
    rows = []
    for r in results:
        if r.error or not (r.metrics or {}).get("genotype"):
            raise RunFailed(f"null control: the search of seed {r.config['seed']} failed: {error_line(r.error)}")
        rows.append({"seed": r.config["seed"], "labels": "shuffled" if r.config["search.shuffle_labels"] else "true",
                     "genotype": r.metrics["genotype_hash"], "val_acc": r.metrics["val/acc"],
                     "alpha_entropy": r.metrics["alpha/entropy"], "genotype_json": r.metrics["genotype"]})
    table = pd.DataFrame(rows, columns=list(NULL_CONTROL_COLUMNS)).sort_values(["labels", "seed"], ignore_index=True)
    ctx.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, ctx.root / "null_control.csv")
    result = null_control_stats(table, ops=len(load_search_space(cfg.search_space).ops))
    result.update({"table": str(ctx.root / "null_control.csv"), "report": str(ctx.root / "null_control.md"),
                   "provenance": origin})
    write_text_atomic(ctx.root / "null_control.md", report.null_control_markdown(result))
    return result


def null_control_stats(table: pd.DataFrame, *, ops: int) -> dict[str, Any]:
    """Agreement between seeds (``report.operator_agreement``), α entropies (as fractions of ln #ops) and α-half
    accuracies of the real and the null searches in a null-control table."""
    out: dict[str, Any] = {"seeds": int(table["seed"].nunique())}
    for labels in ("true", "shuffled"):
        part = table[table["labels"] == labels]
        out[labels] = {
            "agreement": report.operator_agreement(list(part["genotype_json"])),
            "entropy": [float(h) / math.log(ops) for h in part["alpha_entropy"]],
            "val_acc": [float(a) for a in part["val_acc"]],
            "genotypes": list(part["genotype"]),
        }
    out["agreement_gain"] = out["true"]["agreement"] - out["shuffled"]["agreement"]
    out["entropies_separate"] = max(out["true"]["entropy"]) < min(out["shuffled"]["entropy"])
    return out


VERSUS_RANDOM_COLUMNS = ("genotype", "source", "seed", "top1", "params", "flops", "temporal_edges")


def spatial_control(space: SearchSpace) -> Genotype:
    """The space's topology with ``conv_1`` on every edge: a cell that mixes no frames (with a spatial-only stem
    and fixed layers it cannot see motion at all), the floor a searched cell is judged against."""
    # uniform weights: ties keep the lower inputs, so the topology is the same every time
    edges = derive_genotype(space, {t: np.ones((space.num_edges, len(space.ops))) for t in space.cell_types})
    return Genotype(edges.topology, tuple(("conv_1", j) for _, j in edges.normal), edges.normal_concat,
                    tuple(("conv_1", j) for _, j in edges.reduce), edges.reduce_concat)


def searched_genotypes(ctx: _Context, cfg: ExperimentConfig, seeds: list[int]) -> dict[int, str]:
    """The config's DARTS search run once per seed (a Tune trial each): seed -> derived genotype JSON."""
    found = {}
    for seed in seeds:
        seeded = cfg.with_overrides({"seed": seed, "name": f"{cfg.name}-s{seed}"}, source=f"search seed {seed}")
        results = ctx.fit(SearchTrainable, seeded, {BASE_KEY: seeded.model_dump(mode="json")},
                          name=f"{seeded.name}-search", max_t=seeded.search.epochs, scheduler=FIFOScheduler())
        result = results[0]
        if result.error or not (result.metrics or {}).get("genotype"):
            raise RunFailed(f"versus-random: the search of seed {seed} failed: {error_line(result.error)}")
        found[seed] = result.metrics["genotype"]
    return found


def run_versus_random(cfg: ExperimentConfig, genotype_json: str | None, *, samples: int, seeds: int = 2,
                      resume: bool = False, address: str | None = None,
                      tracking_uri: str | None = None) -> dict[str, Any]:
    """Did the search beat chance? Retrain, for each of ``seeds`` seeds, the searched genotype (``genotype_json``,
    or without it the config's own search run with that seed), ``samples`` uniform random genotypes of the same
    space and a spatial control cell (``spatial_control``), all under the config's retrain protocol.

    Reports the share of accuracy variance due to the genotype among the random ones (one-way ICC over seeds,
    with its F-based CI), the searched method's seed-level standing in that population (``stats.standing``),
    and the control's accuracy against chance. Writes vs_random.csv (``VERSUS_RANDOM_COLUMNS``) and
    vs_random.md (with provenance) under the experiment folder.
    """
    if samples < 2:
        raise UserError("--samples must be at least 2 random genotypes")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    if cfg.train.model is not None:
        raise UserError(f"vs-random compares genotypes of a search space: unset train.model ({cfg.train.model})")
    cfg, tracking_uri = resolve_run(cfg, tracking_uri)
    manifest = prepare_manifest(cfg.data)
    origin = provenance(cfg, manifest)  # what runs: the tree and data at the start
    ctx = _Context(cfg, resume=resume, tracking_uri=tracking_uri)
    space = load_search_space(cfg.search_space)
    rng = rng_stream(cfg.seed, Stream.VERSUS_RANDOM)  # not the random arms' or the rank check's draws
    randoms = [sample_genotype(space, rng).to_json() for _ in range(samples)]
    control = spatial_control(space).to_json()
    seed_list = [cfg.seed + i for i in range(seeds)]
    kinds = ("train",) if genotype_json else ("search", "train")
    preflight(cfg, *kinds, genotype_json=genotype_json or randoms[0], local=is_local(address))
    start_run(cfg, address)
    searched = ({seed: genotype_json for seed in seed_list} if genotype_json
                else searched_genotypes(ctx, cfg, seed_list))
    rows = []
    for seed in seed_list:
        seeded = cfg.with_overrides({"seed": seed}, source=f"retrain seed {seed}")
        sources = {searched[seed]: "searched", control: "control", **{g: "random" for g in randoms}}
        grid = {BASE_KEY: seeded.model_dump(mode="json"), GENOTYPE_KEY: tune.grid_search(list(sources))}
        results = ctx.fit(TrainTrainable, seeded, grid, name=f"{cfg.name}-versus-random-s{seed}",
                          max_t=seeded.train.epochs, scheduler=FIFOScheduler())
        for r in results:
            if r.error or not r.metrics or "test/acc" not in r.metrics:
                log.warning("versus-random: seed %d, a genotype failed to train: %s", seed, error_line(r.error))
                continue
            g = Genotype.from_json(r.config[GENOTYPE_KEY])
            rows.append({"genotype": g.hash, "source": sources[r.config[GENOTYPE_KEY]], "seed": seed,
                         "top1": r.metrics["test/acc"], "params": r.metrics.get("params"),
                         "flops": r.metrics.get("flops"),
                         "temporal_edges": sum(mixes_time(op, space.kernel) for op, _ in (*g.normal, *g.reduce))})
    table = pd.DataFrame(rows, columns=list(VERSUS_RANDOM_COLUMNS))
    ctx.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, ctx.root / "vs_random.csv")
    result = versus_random_stats(table, classes=int(manifest["label"].nunique()),
                                 alpha=cfg.ablation.alpha)
    result.update({"table": str(ctx.root / "vs_random.csv"), "report": str(ctx.root / "vs_random.md"),
                   "provenance": origin})
    write_text_atomic(ctx.root / "vs_random.md", report.versus_random_markdown(result))
    return result


def versus_random_stats(table: pd.DataFrame, *, classes: int, alpha: float = 0.05) -> dict[str, Any]:
    """The statistics of a vs-random table: ICC of the random genotypes (genotype × seed), the searched
    method's standing among their means, and the spatial control against chance (1 / classes)."""
    random_rows = table[table["source"] == "random"]
    by_genotype = random_rows.pivot_table(index="genotype", columns="seed", values="top1")
    complete = by_genotype.dropna()  # genotypes that trained under every seed
    if len(complete) < 2:
        raise RunFailed("versus-random: fewer than two random genotypes trained under every seed")
    searched = table.loc[table["source"] == "searched"].sort_values("seed")
    if searched.empty:
        raise RunFailed("versus-random: the searched genotype failed to train")
    icc = (stats.icc_oneway(complete.to_numpy(), confidence=1 - alpha) if complete.shape[1] >= 2
           else {"icc": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan})
    control = table.loc[table["source"] == "control", "top1"]
    return {
        "searched": list(searched["genotype"]), "searched_top1": list(searched["top1"]),
        "seeds": int(table["seed"].nunique()), "random_samples": int(len(complete)),
        "random_top1_mean": float(complete.to_numpy().mean()),
        "icc": icc, "standing": stats.standing(searched["top1"].to_numpy(), complete.mean(axis=1).to_numpy(), alpha=alpha),
        "control_top1": float(control.mean()) if len(control) else math.nan,
        "control_ci": (stats.accuracy_ci(np.asarray(control)[:, None]) if len(control) >= 2 else None),
        "chance": 1.0 / classes, "alpha": alpha,
    }


def run_segments_sweep(cfg: ExperimentConfig, genotype_json: str | None, *, segments: list[int], seeds: int = 1,
                       resume: bool = False, address: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """The paper's untested assumption: TSN segments vs one dense clip of the same number of frames,
    for K in `segments`, retraining the same architecture under ``seeds`` seeds each (a Tune grid). With two or
    more seeds, segments vs dense is tested at each K across seeds (``report.segments_comparisons``, Holm)."""
    if not segments or min(segments) < 1:
        raise UserError(f"segment counts must be positive integers, got {segments}")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    cfg, tracking_uri = resolve_run(cfg, tracking_uri)
    origin = provenance(cfg, prepare_manifest(cfg.data))  # what runs: the tree and data at the start
    ctx = _Context(cfg, resume=resume, tracking_uri=tracking_uri)
    for k in segments:
        for mode in ("segments", "dense"):
            preflight(cfg.with_overrides({"data.num_segments": k, "data.mode": mode}), "train",
                      genotype_json=genotype_json, local=is_local(address))
    start_run(cfg, address)
    space = {BASE_KEY: cfg.model_dump(mode="json"), GENOTYPE_KEY: genotype_json,
             "data.num_segments": tune.grid_search(list(segments)), "data.mode": tune.grid_search(["segments", "dense"]),
             "seed": tune.grid_search([cfg.seed + i for i in range(seeds)])}
    results = ctx.fit(TrainTrainable, cfg, space, name=f"{cfg.name}-segments", max_t=cfg.train.epochs,
                      scheduler=FIFOScheduler())
    rows = [
        {"mode": r.config["data.mode"], "num_segments": r.config["data.num_segments"], "seed": r.config["seed"],
         "frames": r.config["data.num_segments"] * cfg.data.frames_per_segment, "top1": r.metrics.get("test/acc"),
         "correct": r.metrics.get("test/correct")}
        for r in results if r.metrics and not r.error
    ]
    frame = pd.DataFrame(rows)
    ctx.root.mkdir(parents=True, exist_ok=True)
    table = report.segments_table(frame)
    write_csv_atomic(table, ctx.root / "segments.csv")
    write_csv_atomic(frame.drop(columns="correct"), ctx.root / "seeds.csv")
    hits = {(m, int(k), int(seed)): hits_array(c) for m, k, seed, c in
            zip(frame["mode"], frame["num_segments"], frame["seed"], frame["correct"])}
    comparisons = report.segments_comparisons(hits, alpha=cfg.ablation.alpha)
    write_csv_atomic(comparisons, ctx.root / "segments_vs_dense.csv")
    report.plot_segments(frame, ctx.root / "segments.png")
    return {"table": table, "comparisons": comparisons, "csv": ctx.root / "segments.csv",
            "comparisons_csv": ctx.root / "segments_vs_dense.csv", "plot": ctx.root / "segments.png",
            "provenance": origin}
