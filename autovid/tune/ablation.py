"""Ablations in one harness: DARTS, random search, random search with weight sharing and fixed networks,
each arm × seed as Ray Tune trials, every final architecture retrained under one protocol, one report; and the
checks beside them (rank correlation of weight sharing, the null control, vs-random, segments vs dense).

    for arm in ablation.arms, seed in ablation.seeds:           (results.csv grows row by row: resumable)
        ARM_METHODS[arm.strategy].find ─▶ genotype (darts / random_ws: a search; random: standalone
                                          trials under ASHA; fixed: a model, its learning rate swept)
        run_retrain (same epochs, data, seed)
    report.md / report.csv / accuracy_vs_params.png          (autovid.report)

Every stage runs through `tune/stage.py` (`Run.fit(Stage(...))`); the arm kinds live in `tune/arms.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune

from autovid import report, stats, tracking
from autovid.config import ArmConfig, ExperimentConfig, load_arm
from autovid.engine.checkpoint import load_state
from autovid.engine.session import SearchSession
from autovid.engine.setup import prepare_manifest
from autovid.errors import RunFailed, UserError
from autovid.files import write_csv_atomic, write_text_atomic
from autovid.nas.genotype import Genotype, derive_genotype
from autovid.nas.ops import mixes_time
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace, load_search_space
from autovid.provenance import provenance
from autovid.rng import Stream
from autovid.rng import generator as rng_stream
from autovid.tune.arms import (
    ARM_METHODS,
    RandomSearch,
    arm_config,
    search_flops,
    search_once,
    train_standalone,
)
from autovid.tune.experiment import config_of, error_line
from autovid.tune.runner import run_retrain
from autovid.tune.stage import ParentRun, Run, Stage
from autovid.tune.trainables import BASE_KEY, GENOTYPE_KEY, STATE_FILE, SearchTrainable, TrainTrainable

log = logging.getLogger(__name__)

# `correct`: the retrained network's per-test-video hits ("0"/"1", test-set order), for paired comparisons
RESULT_COLUMNS = ("arm", "seed", "top1", "top5", "params", "flops", "search_cost_s", "retrain_cost_s", "genotype_hash",
                  "train_lr", "correct")


def hits_array(hits: str) -> np.ndarray:
    """A retrain's per-video hits ("0"/"1" per test video, as reported in `test/correct`) as a 0/1 array."""
    return np.frombuffer(str(hits).encode(), dtype=np.uint8) - ord("0")


def run_arm(run: Run, arm: ArmConfig, seed: int) -> dict[str, Any]:
    """One arm × seed: the arm's search (its method's), then the common retrain; a results.csv row."""
    found = ARM_METHODS[arm.strategy].find(run, arm, arm_config(run.cfg, arm, seed))
    cfg = found.cfg
    final = run_retrain(cfg, found.genotype, name=f"{cfg.name}-retrain", resume=run.resume,
                        tracking_uri=run.tracking_uri, experiment_key=run.key)
    return {
        "arm": arm.name, "seed": seed, "top1": final["test/acc"], "top5": final.get("test/top5"),
        "params": final.get("params"), "flops": final.get("flops"), "search_cost_s": found.search_cost_s,
        "retrain_cost_s": final.get("time_total_s", 0.0) * (run.cfg.tune.resources.total_gpu or final["trial_cpus"]),
        "genotype_hash": Genotype.from_json(found.genotype).hash if found.genotype else "",
        "train_lr": cfg.train.lr,
        "correct": final["test/correct"],
    }


def budget_note(cfg: ExperimentConfig, arms: list[ArmConfig]) -> str:
    """The report's protocol paragraph: data, search, retrain, the equal budget, and each arm's line."""
    c = cfg
    lines = [
        f"Data: {c.data.dataset} (split {c.data.split}), {c.data.num_segments} segments x "
        f"{c.data.frames_per_segment} frames (stride {c.data.stride}) at {c.data.crop_size}x{c.data.crop_size}, "
        f"{c.data.mode} sampling, {c.data.modality} input; seeds {list(c.ablation.seeds)}.",
        f"Search: supernet {c.model.cells} cells x {c.model.channels} channels, {c.search.epochs} epochs "
        f"({c.search.warmup_epochs} warm-up), {c.search.order}-order DARTS.",
        f"Retrain (every arm, same protocol): {c.train.epochs} epochs, {c.train.optimizer} lr {c.train.lr} cosine, "
        f"stem init {c.model.stem_init}; NAS networks "
        f"{c.train.cells} cells x {c.train.channels} channels.",
    ]
    if c.ablation.budget == "flops" and any(isinstance(ARM_METHODS[arm.strategy], RandomSearch) for arm in arms):
        flops = search_flops(c)
        lines.append(
            "Equal search budget (ablation.budget = flops): one DARTS search = supernet "
            f"{flops['supernet_flops'] / 1e6:.1f} MFLOPs/clip x {flops['half_epochs']:.0f} half-epochs "
            f"(weight + α passes, {c.search.order} order); a random arm trains as many standalone genotypes "
            f"(search size, {c.search.epochs} epochs each) as fit that "
            "budget, and the epochs ASHA stops early buy further rounds of fresh genotypes until none fits."
        )
    for arm in arms:
        lines.append(f"- {arm.name}: {arm.strategy}{ARM_METHODS[arm.strategy].describe(c, arm)}. {arm.description}")
    lines.append("Costs are measured: trial wall-clock seconds x CPUs held (CPU-hours per seed in the table, "
                 "CPU-seconds in report.csv).")
    return "\n".join(lines)


def run_ablation(cfg: ExperimentConfig, *, resume: bool = False, address: str | None = None,
                 tracking_uri: str | None = None) -> dict[str, Path]:
    """Run every arm × seed (skipping finished ones on resume), then write the report."""
    arms = ablation_arms(cfg)
    run = Run.open(cfg, resume=resume, address=address, tracking_uri=tracking_uri, resume_found=True)
    origin = provenance(run.cfg, prepare_manifest(run.cfg.data))  # what runs: the tree and data at the start
    results_path = run.root / "results.csv"
    if results_path.exists() and not resume:
        raise UserError(f"ablation {cfg.name!r} already has results at {results_path}; use --resume to continue it")
    for arm in arms:  # every arm's networks, before the first of hours of trials
        ARM_METHODS[arm.strategy].check(run, arm_config(run.cfg, arm, run.cfg.ablation.seeds[0]))
    run.root.mkdir(parents=True, exist_ok=True)
    run.start()
    done = run_arms(run, arms, results_path)
    correct = {(str(a), int(s)): hits_array(hits) for a, s, hits in zip(done["arm"], done["seed"], done["correct"])}
    paths = report.write_ablation_report(done, run.root, budget_note=budget_note(run.cfg, arms), correct=correct,
                                         reference=run.cfg.ablation.reference, alpha=run.cfg.ablation.alpha,
                                         provenance=origin)
    ParentRun.open(run).record("the ablation report", f"it is in {run.root}",
                               lambda tracker, run_id: log_files(tracker, run_id, paths.values()))
    return paths


def ablation_arms(cfg: ExperimentConfig) -> list[ArmConfig]:
    """The configured arms (baselines/ names), the reference among them."""
    if not cfg.ablation.arms:
        raise UserError("ablation.arms is empty: list baselines/ names (e.g. darts-p3d, random-p3d, r3d-18)")
    arms = [load_arm(name) for name in cfg.ablation.arms]
    if cfg.ablation.reference not in [arm.name for arm in arms]:
        raise UserError(f"ablation.reference {cfg.ablation.reference!r} is not one of the arms "
                        f"({', '.join(arm.name for arm in arms)})")
    return arms


def run_arms(run: Run, arms: list[ArmConfig], results_path: Path) -> pd.DataFrame:
    """Every arm × seed not yet in results.csv, which is rewritten after each: an interruption loses nothing."""
    # `correct` is a string of 0/1 (read as text, or its leading zeros would be lost)
    done = (pd.read_csv(results_path, dtype={"correct": str}) if results_path.exists()
            else pd.DataFrame(columns=list(RESULT_COLUMNS)))
    finished = {(str(a), int(s)) for a, s in zip(done["arm"], done["seed"])}
    for arm in arms:
        for seed in run.cfg.ablation.seeds:
            if (arm.name, seed) in finished:
                log.info("ablation: %s seed %d already done, skipped", arm.name, seed)
                continue
            log.info("ablation: %s seed %d", arm.name, seed)
            done = pd.concat([done, pd.DataFrame([run_arm(run, arm, seed)])], ignore_index=True)
            write_csv_atomic(done, results_path)
    return done


def log_files(tracker: tracking.Tracker, run_id: str, paths: Iterable[Path]) -> None:
    """Attach report files to a finished parent run (reopened, then ended again)."""
    tracker.reopen(run_id)
    for path in paths:
        tracker.log_artifact(run_id, path)
    tracker.end(run_id)


def run_rank_check(cfg: ExperimentConfig, *, resume: bool = False, address: str | None = None,
                   tracking_uri: str | None = None) -> dict[str, Any]:
    """Does weight sharing rank architectures right? Kendall τ / Spearman ρ between inherited-weight
    scores (a random-WS supernet) and standalone training of the same sampled genotypes."""
    n = cfg.ablation.rank_samples
    if n < 3:
        raise UserError("ablation.rank_samples must be at least 3 for a rank correlation")
    run = Run.open(cfg.with_overrides({"search.strategy": "random_ws", "search.ws_candidates": 1}), resume=resume,
                   address=address, tracking_uri=tracking_uri, resume_found=True)
    cfg = run.cfg
    run.check(cfg, "search")
    run.start()
    supernet = run.fit(Stage(SearchTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json")},
                             name=f"{cfg.name}-rank-supernet", max_t=cfg.search.epochs))[0]
    if supernet.error or supernet.checkpoint is None:
        raise RunFailed(f"the weight-sharing supernet failed: {error_line(supernet.error)}")
    session = SearchSession(cfg)
    session.load_state_dict(load_state(Path(supernet.checkpoint.path) / STATE_FILE))
    rng = rng_stream(cfg.seed, Stream.RANK_GENOTYPES)
    space = load_search_space(cfg.search_space)
    genotypes = [sample_genotype(space, rng) for _ in range(n)]
    inherited = session.score_genotypes(genotypes)
    standalone_results = train_standalone(run, cfg, [g.to_json() for g in genotypes], epochs=cfg.ablation.rank_epochs,
                                          name=f"{cfg.name}-rank-standalone")
    by_genotype = {config_of(r)[GENOTYPE_KEY]: r.metrics.get("val/acc") for r in standalone_results if r.metrics}
    standalone = [by_genotype.get(g.to_json(), float("nan")) for g in genotypes]
    table = pd.DataFrame({"genotype_hash": [g.hash for g in genotypes], "inherited_val_acc": inherited,
                          "standalone_val_acc": standalone})
    run.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, run.root / "rank.csv")
    valid = table.dropna()
    result: dict[str, Any] = report.rank_correlation(
        valid["inherited_val_acc"].to_numpy(), valid["standalone_val_acc"].to_numpy()
    )
    report.plot_rank_scatter(valid["inherited_val_acc"].to_numpy(), valid["standalone_val_acc"].to_numpy(),
                             run.root / "rank_scatter.png", ("inherited-weight val acc", "standalone val acc"),
                             point_labels=list(valid["genotype_hash"]))
    result.update({"table": str(run.root / "rank.csv"), "plot": str(run.root / "rank_scatter.png")})
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
    run = Run.open(cfg, resume=resume, address=address, tracking_uri=tracking_uri, resume_found=True)
    cfg = run.cfg
    origin = provenance(cfg, prepare_manifest(cfg.data))  # what runs: the tree and data at the start
    run.check(cfg, "search")
    run.start()
    grid = {BASE_KEY: cfg.model_dump(mode="json"), "seed": tune.grid_search([cfg.seed + i for i in range(seeds)]),
            "search.shuffle_labels": tune.grid_search([False, True])}
    results = run.fit(Stage(SearchTrainable, cfg, grid, name=f"{cfg.name}-null-control", max_t=cfg.search.epochs))
    rows = []
    for r in results:
        metrics, config = r.metrics or {}, config_of(r)
        if r.error or not metrics.get("genotype"):
            raise RunFailed(f"null control: the search of seed {config['seed']} failed: {error_line(r.error)}")
        rows.append({"seed": config["seed"], "labels": "shuffled" if config["search.shuffle_labels"] else "true",
                     "genotype": metrics["genotype_hash"], "val_acc": metrics["val/acc"],
                     "alpha_entropy": metrics["alpha/entropy"], "genotype_json": metrics["genotype"]})
    table = pd.DataFrame(rows, columns=list(NULL_CONTROL_COLUMNS)).sort_values(["labels", "seed"], ignore_index=True)
    run.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, run.root / "null_control.csv")
    result = null_control_stats(table, ops=len(load_search_space(cfg.search_space).ops))
    result.update({"table": str(run.root / "null_control.csv"), "report": str(run.root / "null_control.md"),
                   "provenance": origin})
    write_text_atomic(run.root / "null_control.md", report.null_control_markdown(result))
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


def searched_genotypes(run: Run, cfg: ExperimentConfig, seeds: list[int]) -> dict[int, str]:
    """The config's DARTS search run once per seed (a Tune trial each): seed -> derived genotype JSON."""
    found = {}
    for seed in seeds:
        seeded = cfg.with_overrides({"seed": seed, "name": f"{cfg.name}-s{seed}"}, source=f"search seed {seed}")
        found[seed], _ = search_once(run, seeded, name=f"{seeded.name}-search",
                                     what=f"versus-random: the search of seed {seed}")
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
    check_versus_random(cfg, samples=samples, seeds=seeds)
    run = Run.open(cfg, resume=resume, address=address, tracking_uri=tracking_uri, resume_found=True)
    cfg = run.cfg
    manifest = prepare_manifest(cfg.data)
    origin = provenance(cfg, manifest)  # what runs: the tree and data at the start
    space = load_search_space(cfg.search_space)
    rng = rng_stream(cfg.seed, Stream.VERSUS_RANDOM)  # not the random arms' or the rank check's draws
    randoms = [sample_genotype(space, rng).to_json() for _ in range(samples)]
    control = spatial_control(space).to_json()
    seed_list = [cfg.seed + i for i in range(seeds)]
    run.check(cfg, *(("train",) if genotype_json else ("search", "train")), genotype_json=genotype_json or randoms[0])
    run.start()
    searched = ({seed: genotype_json for seed in seed_list} if genotype_json
                else searched_genotypes(run, cfg, seed_list))
    rows: list[dict[str, Any]] = []
    for seed in seed_list:
        sources = {searched[seed]: "searched", control: "control", **{g: "random" for g in randoms}}
        rows += retrain_sources(run, cfg.with_overrides({"seed": seed}, source=f"retrain seed {seed}"), sources, space)
    table = pd.DataFrame(rows, columns=list(VERSUS_RANDOM_COLUMNS))
    run.root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, run.root / "vs_random.csv")  # the data first: kept when the statistics cannot be had
    result = versus_random_stats(table, classes=int(manifest["label"].nunique()), alpha=cfg.ablation.alpha)
    return write_versus_random_report(run.root, result, origin)


def check_versus_random(cfg: ExperimentConfig, *, samples: int, seeds: int) -> None:
    """What `vs-random` needs before anything runs: two random genotypes, a seed, a search space to draw from."""
    if samples < 2:
        raise UserError("--samples must be at least 2 random genotypes")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    if cfg.train.model is not None:
        raise UserError(f"vs-random compares genotypes of a search space: unset train.model ({cfg.train.model})")


def write_versus_random_report(root: Path, result: dict[str, Any], origin: dict[str, Any]) -> dict[str, Any]:
    """vs_random.md beside vs_random.csv; the result with both paths and the provenance."""
    result = {**result, "table": str(root / "vs_random.csv"), "report": str(root / "vs_random.md"),
              "provenance": origin}
    write_text_atomic(root / "vs_random.md", report.versus_random_markdown(result))
    return result


def retrain_sources(
    run: Run, seeded: ExperimentConfig, sources: dict[str, str], space: SearchSpace
) -> list[dict[str, Any]]:
    """Retrain every genotype of ``sources`` (genotype JSON -> searched / control / random) under one seed, a
    Tune grid; a vs_random.csv row per genotype that trained (a failure is a warning, the others count)."""
    grid = {BASE_KEY: seeded.model_dump(mode="json"), GENOTYPE_KEY: tune.grid_search(list(sources))}
    results = run.fit(Stage(TrainTrainable, seeded, grid, name=f"{run.cfg.name}-versus-random-s{seeded.seed}",
                            max_t=seeded.train.epochs))
    rows = []
    for r in results:
        if r.error or not r.metrics or "test/acc" not in r.metrics:
            log.warning("versus-random: seed %d, a genotype failed to train: %s", seeded.seed, error_line(r.error))
            continue
        g = Genotype.from_json(config_of(r)[GENOTYPE_KEY])
        rows.append({"genotype": g.hash, "source": sources[config_of(r)[GENOTYPE_KEY]], "seed": seeded.seed,
                     "top1": r.metrics["test/acc"], "params": r.metrics.get("params"), "flops": r.metrics.get("flops"),
                     "temporal_edges": sum(mixes_time(op, space.kernel) for op, _ in (*g.normal, *g.reduce))})
    return rows


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
        "searched": list(searched["genotype"]),
        "searched_top1": list(searched["top1"]),
        "seeds": int(table["seed"].nunique()),
        "random_samples": int(len(complete)),
        "random_top1_mean": float(complete.to_numpy().mean()),
        "icc": icc,
        "standing": stats.standing(searched["top1"].to_numpy(), complete.mean(axis=1).to_numpy(), alpha=alpha),
        "control_top1": float(control.mean()) if len(control) else math.nan,
        "control_ci": (stats.accuracy_ci(np.asarray(control)[:, None]) if len(control) >= 2 else None),
        "chance": 1.0 / classes,
        "alpha": alpha,
    }


def run_segments_sweep(
    cfg: ExperimentConfig,
    genotype_json: str | None,
    *,
    segments: list[int],
    seeds: int = 1,
    resume: bool = False,
    address: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """The paper's untested assumption: TSN segments vs one dense clip of the same number of frames,
    for K in `segments`, retraining the same architecture under ``seeds`` seeds each (a Tune grid). With two or
    more seeds, segments vs dense is tested at each K across seeds (``report.segments_comparisons``, Holm)."""
    if not segments or min(segments) < 1:
        raise UserError(f"segment counts must be positive integers, got {segments}")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    run = Run.open(cfg, resume=resume, address=address, tracking_uri=tracking_uri, resume_found=True)
    cfg = run.cfg
    origin = provenance(cfg, prepare_manifest(cfg.data))  # what runs: the tree and data at the start
    for k in segments:
        for mode in ("segments", "dense"):
            run.check(cfg.with_overrides({"data.num_segments": k, "data.mode": mode}), "train",
                      genotype_json=genotype_json)
    run.start()
    space = {
        BASE_KEY: cfg.model_dump(mode="json"),
        GENOTYPE_KEY: genotype_json,
        "data.num_segments": tune.grid_search(list(segments)),
        "data.mode": tune.grid_search(["segments", "dense"]),
        "seed": tune.grid_search([cfg.seed + i for i in range(seeds)]),
    }
    results = run.fit(Stage(TrainTrainable, cfg, space, name=f"{cfg.name}-segments", max_t=cfg.train.epochs))
    frame = pd.DataFrame([segments_row(config_of(r), r.metrics, cfg) for r in results if r.metrics and not r.error])
    return {**write_segments(run.root, frame, alpha=cfg.ablation.alpha), "provenance": origin}


def segments_row(trial: dict[str, Any], metrics: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any]:
    """One retrain of the segments sweep: its clip setting, seed and test accuracy (with the per-video hits)."""
    return {"mode": trial["data.mode"], "num_segments": trial["data.num_segments"], "seed": trial["seed"],
            "frames": trial["data.num_segments"] * cfg.data.frames_per_segment,
            "top1": metrics.get("test/acc"), "correct": metrics.get("test/correct")}


def write_segments(root: Path, frame: pd.DataFrame, *, alpha: float) -> dict[str, Any]:
    """segments.csv (mean and CI per setting), seeds.csv (every run), segments_vs_dense.csv (per K, across
    seeds, Holm) and segments.png under `root`; what the CLI prints, with the paths."""
    root.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(frame.drop(columns="correct"), root / "seeds.csv")  # the runs first: they are the data
    table = report.segments_table(frame)
    write_csv_atomic(table, root / "segments.csv")
    hits = {(m, int(k), int(seed)): hits_array(c) for m, k, seed, c in
            zip(frame["mode"], frame["num_segments"], frame["seed"], frame["correct"])}
    comparisons = report.segments_comparisons(hits, alpha=alpha)
    write_csv_atomic(comparisons, root / "segments_vs_dense.csv")
    report.plot_segments(frame, root / "segments.png")
    return {"table": table, "comparisons": comparisons, "csv": root / "segments.csv",
            "comparisons_csv": root / "segments_vs_dense.csv", "plot": root / "segments.png"}
