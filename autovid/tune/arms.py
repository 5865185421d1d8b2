"""The ablation's ways to find an architecture, one object per arm kind (as `engine/strategies.py` holds a
search's ways to pick one): DARTS, random search with weight sharing, random search, a fixed network.

    method = ARM_METHODS[arm.strategy]            (the string becomes an object here, once)
    cfg = arm_config(base, arm, seed)             base config + the method's overrides + the arm's own
    method.check(run, cfg)                        preflight what the arm trains
    found = method.find(run, arm, cfg)            genotype (or None: a fixed network), search cost, the config
                                                  the retrain uses (a fixed network's swept learning rate)
    method.describe(cfg, arm)                     the arm's line of the report's budget note
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from autovid.config import ArmConfig, ExperimentConfig
from autovid.engine.accounting import count_flops
from autovid.engine.networks import build_network, build_supernet
from autovid.engine.preflight import example_genotype
from autovid.engine.setup import clip_shape, prepare_manifest
from autovid.errors import RunFailed
from autovid.nas.genotype import Genotype
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace, load_search_space
from autovid.tune.experiment import config_of, error_line
from autovid.tune.stage import Run, Stage
from autovid.tune.trainables import BASE_KEY, GENOTYPE_KEY, SearchTrainable, TrainTrainable


class Found(NamedTuple):
    """What an arm's search produced: the genotype to retrain (None: a fixed network), its measured cost in
    CPU-seconds, and the config the retrain runs with."""

    genotype: str | None
    search_cost_s: float
    cfg: ExperimentConfig


class ArmMethod(Protocol):
    """How one kind of arm finds its architecture."""

    def overrides(self, arm: ArmConfig) -> dict[str, Any]:
        """Config overrides this kind of arm implies (before the arm's own `overrides`)."""
        ...

    def check(self, run: Run, cfg: ExperimentConfig) -> None:
        """Preflight what the arm will train: its search (supernet or search-size genotypes) and its retrain."""
        ...

    def find(self, run: Run, arm: ArmConfig, cfg: ExperimentConfig) -> Found: ...

    def describe(self, cfg: ExperimentConfig, arm: ArmConfig) -> str:
        """What the budget note says of this arm after its kind (empty, or starting with a comma)."""
        ...


def cpu_seconds(results: list[tune.Result], cfg: ExperimentConfig) -> float:
    """Measured cost: wall seconds of every trial × the CPUs (or GPUs) it held."""
    per_trial = cfg.tune.resources.total_gpu or cfg.tune.resources.total_cpu
    return float(sum((r.metrics or {}).get("time_total_s", 0.0) for r in results) * per_trial)


def search_once(run: Run, cfg: ExperimentConfig, *, name: str, what: str) -> tuple[str, float]:
    """One search trial (DARTS, or random WS by `search.strategy`): its derived genotype JSON and CPU-seconds."""
    results = run.fit(Stage(SearchTrainable, cfg, {BASE_KEY: cfg.model_dump(mode="json")}, name=name,
                            max_t=cfg.search.epochs))
    result = results[0]
    metrics = result.metrics or {}
    if result.error or not metrics.get("genotype"):
        raise RunFailed(f"{what} failed: {error_line(result.error)}")
    return metrics["genotype"], cpu_seconds(results, cfg)


def train_standalone(run: Run, cfg: ExperimentConfig, genotypes: list[str], *, epochs: int, name: str,
                     scheduler: Any = None) -> list[tune.Result]:
    """Train each genotype from scratch at search size on the weight half, scored on the α half (val/*),
    one Tune trial per genotype: random search and the standalone side of the rank check."""
    holdout = cfg.with_overrides({"train.holdout": True, "train.epochs": epochs,
                                  "train.channels": cfg.model.channels, "train.cells": cfg.model.cells})
    space = {BASE_KEY: holdout.model_dump(mode="json"), GENOTYPE_KEY: tune.grid_search(genotypes)}
    return run.fit(Stage(TrainTrainable, holdout, space, name=name, max_t=epochs, scheduler=scheduler))


# ------------------------------------------------------------------------------------------- search arms


class Darts:
    """DARTS: one supernet search (α), the derived genotype retrained."""

    def overrides(self, arm: ArmConfig) -> dict[str, Any]:
        return {}

    def check(self, run: Run, cfg: ExperimentConfig) -> None:
        run.check(cfg, "search", "train", genotype_json=example_genotype(cfg))

    def find(self, run: Run, arm: ArmConfig, cfg: ExperimentConfig) -> Found:
        genotype, cost = search_once(run, cfg, name=f"{cfg.name}-search", what=f"arm {arm.name}: the search")
        return Found(genotype, cost, cfg)

    def describe(self, cfg: ExperimentConfig, arm: ArmConfig) -> str:
        return ""


class RandomWeightSharing(Darts):
    """Random search with weight sharing (Li & Talwalkar 2019): the supernet trains single random paths, the
    best of `search.ws_candidates` random genotypes scored with the inherited weights is retrained."""

    def overrides(self, arm: ArmConfig) -> dict[str, Any]:
        return {"search.strategy": "random_ws"}


class RandomSearch:
    """Random search: uniform genotypes trained standalone on the weight half, early-stopped by ASHA on the α
    half, in rounds that spend the budget (``ablation.budget``); the best on the α half is retrained."""

    def overrides(self, arm: ArmConfig) -> dict[str, Any]:
        return {}

    def check(self, run: Run, cfg: ExperimentConfig) -> None:
        run.check(cfg, "train", genotype_json=example_genotype(cfg))

    def find(self, run: Run, arm: ArmConfig, cfg: ExperimentConfig) -> Found:
        scored, cost = random_search(run, cfg, arm)
        if not scored:
            raise RunFailed(f"arm {arm.name}: every random-search trial failed")
        return Found(max(scored, key=lambda pair: pair[0])[1], cost, cfg)

    def describe(self, cfg: ExperimentConfig, arm: ArmConfig) -> str:
        # the FLOPs budget decides the count: the one the first seed drew
        return (f", {len(random_arm_genotypes(arm_config(cfg, arm, cfg.seed), arm))} genotypes in its first round "
                f"(seed {cfg.seed})")


class Fixed:
    """A hand-designed network (``train.model``): nothing to search; its learning rate is chosen on the α half
    as a NAS arm's hyperparameters are (``ablation.baseline_lr_sweep``), and that sweep is its search cost."""

    def overrides(self, arm: ArmConfig) -> dict[str, Any]:
        return {"train.model": arm.model, "train.width": arm.width}

    def check(self, run: Run, cfg: ExperimentConfig) -> None:
        run.check(cfg, "train")

    def find(self, run: Run, arm: ArmConfig, cfg: ExperimentConfig) -> Found:
        lrs = baseline_lrs(cfg)
        if not lrs:
            return Found(None, 0.0, cfg)
        lr, cost = sweep_learning_rate(run, cfg, lrs)
        return Found(None, cost, cfg.with_overrides({"train.lr": lr}, source=f"arm {arm.name}: swept lr"))

    def describe(self, cfg: ExperimentConfig, arm: ArmConfig) -> str:
        # what each arm's protocol tuned: a fixed network's learning rate, as a NAS arm's search is tuned
        lrs = baseline_lrs(cfg)
        return f", width x{arm.width}, " + (
            f"learning rate chosen on the α half among {len(lrs)} ({lrs[0]:.2g} to {lrs[-1]:.2g}; "
            "its cost counts as search)" if lrs else f"the common retrain at lr {cfg.train.lr} (not tuned)")


ARM_METHODS: dict[str, ArmMethod] = {
    "darts": Darts(), "random_ws": RandomWeightSharing(), "random": RandomSearch(), "fixed": Fixed(),
}


def arm_config(cfg: ExperimentConfig, arm: ArmConfig, seed: int) -> ExperimentConfig:
    """An arm × seed's config: the ablation's, the arm's search space, its kind's overrides, then its own."""
    overrides: dict[str, Any] = {"seed": seed, "name": f"{cfg.name}-{arm.name}-s{seed}"}
    if arm.search_space:
        overrides["search_space"] = arm.search_space
    overrides.update(ARM_METHODS[arm.strategy].overrides(arm))
    overrides.update(arm.overrides)
    return cfg.with_overrides(overrides, source=f"arm {arm.name}")


# ----------------------------------------------------------------------------------------- random search


def random_search(run: Run, cfg: ExperimentConfig, arm: ArmConfig) -> tuple[list[tuple[float, str]], float]:
    """The random arm's trials, in rounds: ``(val/acc, genotype JSON)`` of every trial and the CPU-seconds spent.

    With ``ablation.budget = flops`` the arm spends the FLOPs of one DARTS search: a round trains as many fresh
    genotypes as the remaining budget would fit at full length; ASHA stops some early, and the FLOPs it saved
    (epochs not trained) pay for another round of fresh genotypes, until not one more fits. With
    ``budget = samples``, one round of ``samples`` genotypes.
    """
    space = load_search_space(cfg.search_space)
    draws = Draws(space, cfg.seed)
    epochs = cfg.search.epochs
    budget = search_flops(cfg)["budget"] if cfg.ablation.budget == "flops" else math.inf
    scored: list[tuple[float, str]] = []
    seconds = spent = 0.0
    for round_ in range(1, 100):
        batch: list[tuple[Genotype, float]]
        if cfg.ablation.budget == "samples":  # no FLOPs budget to spend: no cost to count
            batch = [(next(draws), 0.0) for _ in range(arm.samples)]
        else:
            batch = fitting(draws, budget - spent, cfg, space, at_least_one=not scored)
        if not batch:
            break
        genotypes = {g.to_json(): cost for g, cost in batch}
        results = train_standalone(
            run, cfg, list(genotypes), epochs=epochs, name=f"{cfg.name}-search" + (f"-r{round_}" if round_ > 1 else ""),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2),
        )
        seconds += cpu_seconds(results, cfg)
        for r in results:
            trained = int((r.metrics or {}).get("training_iteration", epochs if r.error else 0))
            spent += genotypes[config_of(r)[GENOTYPE_KEY]] * trained  # per-epoch FLOPs × epochs actually trained
            if r.metrics and not r.error:
                scored.append((r.metrics.get("val/acc", -1.0), config_of(r)[GENOTYPE_KEY]))
        if cfg.ablation.budget == "samples":
            break
    return scored, seconds


class Draws:
    """Uniform genotypes of a space from the arm's seed, with one genotype of look-ahead (``peek``)."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space, self.rng = space, np.random.default_rng(seed)
        self.next_one: Genotype | None = None

    def peek(self) -> Genotype:
        if self.next_one is None:
            self.next_one = sample_genotype(self.space, self.rng)
        return self.next_one

    def __next__(self) -> Genotype:
        genotype = self.peek()
        self.next_one = None
        return genotype


def epoch_flops(cfg: ExperimentConfig, space: SearchSpace, genotype: Genotype, classes: int | None = None) -> float:
    """Forward FLOPs of one standalone epoch (every weight-half clip once) of ``genotype`` at search size, in
    the units of ``search_flops``' budget (FLOPs per clip × half-epochs); ``classes`` read from the manifest
    when not given."""
    search_size = cfg.with_overrides({"train.channels": cfg.model.channels, "train.cells": cfg.model.cells,
                                      "train.model": None}, source="random-search budget")
    if classes is None:
        classes = int(prepare_manifest(cfg.data)["label"].nunique())
    net = build_network(search_size, num_classes=classes, genotype=genotype, space=space)
    return float(count_flops(net, (1, *clip_shape(cfg.data))))


def fitting(draws: Draws, remaining: float, cfg: ExperimentConfig, space: SearchSpace, *,
            at_least_one: bool) -> list[tuple[Genotype, float]]:
    """The next genotypes whose full-length training fits ``remaining`` FLOPs: (genotype, per-epoch FLOPs)."""
    chosen: list[tuple[Genotype, float]] = []
    classes = int(prepare_manifest(cfg.data)["label"].nunique())  # once, not once per drawn genotype
    while True:
        cost = epoch_flops(cfg, space, draws.peek(), classes)
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
    half_epochs = cfg.search.epochs + alpha_passes * (
        cfg.search.epochs - min(cfg.search.warmup_epochs, cfg.search.epochs)
    )
    flops = count_flops(supernet, (1, *clip_shape(cfg.data)))
    return {"supernet_flops": float(flops), "half_epochs": float(half_epochs), "budget": float(flops * half_epochs),
            "classes": float(classes)}


def random_arm_genotypes(cfg: ExperimentConfig, arm: ArmConfig) -> list[Genotype]:
    """The genotypes of a random-search arm's first round: `samples` of them, or (ablation.budget = flops) as
    many as fit the FLOPs budget of one DARTS search at full length (see `search_flops`); at least one. ASHA's
    savings buy later rounds (`random_search`). Deterministic."""
    space = load_search_space(cfg.search_space)
    draws = Draws(space, cfg.seed)
    if cfg.ablation.budget == "samples":
        return [next(draws) for _ in range(arm.samples)]
    return [g for g, _ in fitting(draws, search_flops(cfg)["budget"], cfg, space, at_least_one=True)]


# ---------------------------------------------------------------------------------------- fixed networks


def baseline_lrs(cfg: ExperimentConfig) -> list[float]:
    """The learning rates a fixed arm tries (``ablation.baseline_lr_sweep``); empty when it takes train.lr."""
    n = cfg.ablation.baseline_lr_sweep
    n = cfg.tune.num_samples if n is None else n
    if n < 2:
        return []
    return [float(lr) for lr in np.geomspace(cfg.train.lr / 10, cfg.train.lr * 10, n)]


def sweep_learning_rate(run: Run, cfg: ExperimentConfig, lrs: list[float]) -> tuple[float, float]:
    """A fixed network's learning rate, chosen as a NAS arm's hyperparameters are: each of ``lrs`` trained on
    the weight half and scored on the α half (never on the test split). Returns (best lr, CPU-seconds)."""
    holdout = cfg.with_overrides({"train.holdout": True}, source="baseline learning-rate sweep")
    space = {BASE_KEY: holdout.model_dump(mode="json"), "train.lr": tune.grid_search(lrs)}
    results = run.fit(Stage(TrainTrainable, holdout, space, name=f"{cfg.name}-lr-sweep", max_t=cfg.train.epochs))
    scored = [(r.metrics.get("val/acc", -1.0), config_of(r)["train.lr"]) for r in results if r.metrics and not r.error]
    if not scored:
        raise RunFailed(f"{cfg.name}: every learning rate of the baseline sweep failed")
    # ties (small α halves score in steps of 1/videos) go to the rate nearest the configured one
    best = max(scored, key=lambda pair: (pair[0], -abs(math.log(pair[1] / cfg.train.lr))))
    return float(best[1]), cpu_seconds(results, cfg)
