"""Typed experiment configs: YAML files validated by pydantic, dotted overrides, built-in config names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from autovid.data.sampling import ClipSpec
from autovid.errors import UserError
from autovid.resources import resource_path
from autovid.safe_yaml import MAX_TEXT_CHARS, parse_yaml, read_yaml_file, shorten


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode takes a bool for a number: `tune.resources.workers=true` would run with 1 worker
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


# Every number of a config is one of these (an int stays lax otherwise: 4.0 and "4" still read as 4)
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegInt = Annotated[Int, Field(ge=0)]
MAX_NAME_CHARS = 128
PLAIN_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")


def plain_name_problem(value: str) -> str | None:
    """What keeps `value` from being a plain name (None when it is one): the length limit, or the characters."""
    if len(value) > MAX_NAME_CHARS:
        return (
            f"{shorten(value, 40)!r} is {len(value):,} characters long: a name has at most {MAX_NAME_CHARS} characters"
        )
    if not PLAIN_NAME.fullmatch(value):
        return f"{shorten(value)!r} is not a plain name (letters, digits, '.', '_', '-'; no '/' or leading '.')"
    return None


def _plain_name(value: str) -> str:
    # names become folders under storage_path (and MLflow run names): `../x` or `a/b` would escape it
    problem = plain_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]
Seed = Annotated[Int, Field(ge=0, lt=2**32)]  # numpy and torch seeds: non-negative, 32 bits
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegFloat = Annotated[Float, Field(ge=0)]


class _Frozen(BaseModel):
    """Base: unknown keys are errors, floats are finite, and a loaded config is never mutated."""

    # `train.lr=.inf` or `nan` would validate as a float and train to NaN: refuse them where they are typed
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SyntheticConfig(_Frozen):
    """The embedded motion benchmark (written as real videos on first use); see autovid.data.synthetic."""

    classes: Annotated[Int, Field(ge=2, le=14)] = 10  # the first N motions (11-14 depend on event order)
    videos_per_class: Annotated[Int, Field(ge=2)] = 30
    groups: Annotated[Int, Field(ge=2)] = 10  # scenes; every scene performs every class
    test_groups: PositiveInt = 3  # scenes g01..gNN form the test split (unseen scenes)
    size: Annotated[Int, Field(ge=16, le=512)] = 64  # frame side in pixels (even)
    frames: Annotated[Int, Field(ge=4)] = 32
    seed: Seed = 0
    codec: Literal["mpeg4", "h264", "mjpeg"] = "mpeg4"
    # difficulty knobs: more noise, texture, clutter or sway, or slower motion, make the benchmark harder
    noise: NonNegFloat = 0.03
    texture: NonNegFloat = 0.08
    clutter: NonNegInt = 2
    jitter: NonNegInt = 0
    speed: PositiveFloat = 1.0
    polarity: Literal["bright", "mixed"] = "bright"  # actor brighter than the scene, or a random sign per channel


class DataConfig(_Frozen):
    """Where videos come from and how clips are sampled from them (TSN segments or one dense clip)."""

    dataset: Literal["synthetic", "ucf101", "hmdb51", "folder", "csv"] = "synthetic"
    root: Path | None = None  # dataset root (not used for synthetic)
    manifest: Path | None = None  # a prebuilt manifest.parquet; skips indexing when given
    split: Annotated[Int, Field(ge=1, le=3)] = 1  # official split number (UCF101/HMDB51)
    cache_dir: Path = Path(".autovid_cache")  # synthetic videos and manifests built on the fly
    synthetic: SyntheticConfig = SyntheticConfig()
    num_segments: PositiveInt = 4  # K temporal segments (the paper: 4)
    frames_per_segment: PositiveInt = 2  # L frames per segment (the paper: 2)
    stride: PositiveInt = 1  # frame step inside a segment
    mode: Literal["segments", "dense"] = "segments"  # dense = one clip of K*L frames
    # rgb: frames as decoded; rgb_diff: TSN's RGB difference (L+1 frames decoded, their L differences fed)
    modality: Literal["rgb", "rgb_diff"] = "rgb"
    resize: tuple[PositiveInt, PositiveInt] | None = None  # (h, w) at decode time; None keeps the file's size
    crop_size: PositiveInt = 56
    # train-time random resized crop: the window's area as a fraction of the frame (torchvision's `scale`)
    crop_scale: tuple[Annotated[Float, Field(gt=0, le=1)], Annotated[Float, Field(gt=0, le=1)]] = (0.4, 1.0)
    batch_size: PositiveInt = 16
    num_workers: NonNegInt = 0
    test_clips: PositiveInt = 1  # clips drawn per test video, logits averaged
    # the video decoder (autovid.data.backends): auto = decord where its wheel exists (x86-64 Linux), else PyAV;
    # torchcodec (pip install 'autovid[torchcodec]') decodes on the GPU when the run's device is CUDA
    decoder: Literal["auto", "decord", "pyav", "torchcodec"] = "auto"

    @property
    def clip_spec(self) -> ClipSpec:
        """How one clip is cut from a video and shaped for the networks (the dataset, loaders, cost, export)."""
        return ClipSpec(num_segments=self.num_segments, frames_per_segment=self.frames_per_segment, stride=self.stride,
                        mode=self.mode, modality=self.modality, resize=self.resize, crop_size=self.crop_size)

    @model_validator(mode="after")
    def _root_for_real_data(self) -> "DataConfig":
        if self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (low, high) with low <= high, got {list(self.crop_scale)}")
        if self.dataset != "synthetic" and self.root is None and self.manifest is None:
            raise ValueError(f"data.root (or data.manifest) is required for dataset {self.dataset!r}")
        return self


class ModelConfig(_Frozen):
    """The supernet searched over (its depth and width are the search-time ones)."""

    channels: PositiveInt = 8  # initial channels C
    cells: PositiveInt = 3  # number of cells / modules
    stem_multiplier: PositiveInt = 2
    pc_k: PositiveInt = 1  # PC-DARTS: 1/pc_k of the channels go through mixed ops (1 = plain DARTS)
    consensus: Literal["avg", "max"] = "avg"
    # temporal_difference: the first time-mixing convolution (the stem) starts as a difference of consecutive
    # frames (autovid.engine.init), for the supernet, the retrained network and hand-designed baselines alike
    stem_init: Literal["random", "temporal_difference"] = "random"
    # where time may be mixed: anywhere (the stem and the module topology's fixed reductions in the space's
    # kernel style, as in the paper) or searched (stem and fixed reductions spatial-only 1×k×k, so every
    # temporal interaction is one the search chose; stem_init's motion prior then initialises the temporal
    # convolutions of the first searched cell instead of the stem's)
    temporal_mixing: Literal["anywhere", "searched"] = "anywhere"
    # the supernet's mixed op: DARTS' plain sum (reference), the same values with less work (fused, faster on
    # CPU), or auto: fused on CPU, reference on CUDA where it was measured faster
    mixed_op: Literal["auto", "reference", "fused"] = "auto"


class SearchConfig(_Frozen):
    """Bilevel DARTS optimisation (defaults from the DARTS reference implementation)."""

    epochs: PositiveInt = 6
    warmup_epochs: NonNegInt = 1  # α frozen for the first epochs
    order: Literal["first", "second"] = "first"
    train_portion: Annotated[Float, Field(gt=0, lt=1)] = 0.5  # weight half vs α half of the train split
    # the supernet weights' optimizer: DARTS' momentum SGD, or Adam (first order only: the second-order
    # virtual step mirrors an SGD step)
    w_optimizer: Literal["sgd", "adam"] = "sgd"
    w_lr: PositiveFloat = 0.025
    w_lr_min: NonNegFloat = 0.001
    w_momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.9
    w_weight_decay: NonNegFloat = 3e-4
    grad_clip: PositiveFloat = 5.0
    alpha_lr: PositiveFloat = 3e-4
    alpha_betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.5, 0.999)
    alpha_weight_decay: NonNegFloat = 1e-3
    max_skips: NonNegInt = 2  # DARTS+ collapse guard on the derived normal cell
    stop_on_collapse: bool = False  # stop the trial (instead of only flagging) when the guard trips
    strategy: Literal["darts", "random_ws"] = "darts"  # random_ws: uniform single paths, no α updates
    ws_candidates: PositiveInt = 16  # random_ws: genotypes scored with inherited weights at the end
    precise_bn_batches: NonNegInt = 8  # BN statistics recomputed before validation (0 = off)
    # the null control: the identical search on the train split's labels permuted across videos (a fixed
    # permutation per seed, in both the weight and α halves; the test split keeps its true labels)
    shuffle_labels: bool = False

    @model_validator(mode="after")
    def _second_order_needs_sgd(self) -> "SearchConfig":
        if self.order == "second" and self.w_optimizer != "sgd":
            raise ValueError("search.order=second unrolls an SGD step: it needs search.w_optimizer=sgd")
        return self


class TrainConfig(_Frozen):
    """Retraining a discrete network from scratch (deeper and wider than the search, as in the paper)."""

    epochs: PositiveInt = 10
    channels: PositiveInt = 16
    cells: PositiveInt = 4
    # sgd: momentum SGD as in DARTS; adam/adamw: far fewer steps to learn from raw RGB on short budgets
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = 0.05
    lr_min: NonNegFloat = 0.0
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegFloat = 3e-4
    grad_clip: PositiveFloat = 5.0
    # DARTS' retrained stem is 3C wide (its search stem too; ours searches with model.stem_multiplier=2, cheaper)
    stem_multiplier: PositiveInt = 3
    # final drop-path probability: DARTS ramps it linearly from 0 at the first epoch to this at the last
    drop_path: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    holdout: bool = False  # train on the weight half, report val/* on the α half (architecture selection)
    model: str | None = None  # a registered hand-designed network instead of a genotype (e.g. r3d_18)
    width: PositiveFloat = 1.0  # width multiplier for hand-designed networks
    precise_bn_batches: NonNegInt = 8  # BN statistics recomputed before evaluation (0 = off)


class Distribution(_Frozen):
    """One hyperparameter of the outer (Optuna) search, keyed by the dotted config key it overrides."""

    type: Literal["choice", "uniform", "loguniform", "int", "logint"]
    values: list[Any] | None = None
    low: Float | None = None
    high: Float | None = None

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} distribution needs low < high")
        elif self.type.startswith("log") and self.low <= 0:
            raise ValueError(f"a {self.type} distribution needs low > 0")
        return self


class SearcherConfig(_Frozen):
    name: Literal["optuna", "random"] = "optuna"
    # tpe handles one or several objectives; nsga2 is Optuna's genetic multi-objective sampler (its first
    # generation, population_size trials, is random); cmaes is single-objective only
    sampler: Literal["tpe", "random", "cmaes", "qmc", "nsga2"] = "tpe"
    seed: Seed = 0
    population_size: Annotated[Int, Field(ge=2)] = 50  # nsga2 only: trials per generation


class SchedulerConfig(_Frozen):
    """Early stopping of trials on the scalar objective (none = every trial runs all its epochs)."""

    name: Literal["asha", "none", "pbt", "hyperband", "median"] = "asha"
    grace_period: PositiveInt = 1  # asha, median: epochs before a trial may be stopped
    reduction_factor: Annotated[Float, Field(gt=1)] = 2.0  # asha, hyperband
    perturbation_interval: PositiveInt = 2  # PBT only: epochs between exploit/explore
    min_samples: PositiveInt = 3  # median only: trials that must have reached an epoch before it compares


class ObjectiveConfig(_Frozen):
    """What the outer search maximises: val accuracy, or accuracy minus a cost penalty."""

    kind: Literal["accuracy", "cost_aware"] = "accuracy"
    cost: Literal["params", "flops"] = "params"
    weight: NonNegFloat = 0.05  # penalty per doubling of cost above the reference
    reference: PositiveFloat = 1e5  # cost (params or FLOPs) at which the penalty is zero


# Metrics a multi-objective study may optimise: what every SearchTrainable step reports (latency only when an
# objective asks for it, see ExperimentConfig.measures_latency), with their natural direction for reference.
OBJECTIVE_METRICS: dict[str, str] = {
    "val/acc": "max", "val/top5": "max", "val/loss": "min", "objective": "max",
    "genotype/params": "min", "genotype/flops": "min",
    "genotype/latency_ms": "min",  # median forward time of the derived network at retrain size, batch 1
    "genotype/latency_ms_b": "min",  # the same at batch data.batch_size
}
LATENCY_METRICS = ("genotype/latency_ms", "genotype/latency_ms_b")
# reported beside them: the interquartile range of the batch-1 timing, the runtime (name and version) and its threads
LATENCY_DETAILS = ("genotype/latency_iqr_ms", "genotype/latency_runtime", "genotype/latency_threads")


class ObjectiveSpec(_Frozen):
    """One objective of a multi-objective study: a reported metric and its direction."""

    metric: Literal[tuple(OBJECTIVE_METRICS)]  # type: ignore[valid-type]
    mode: Literal["max", "min"]


# A constraint of a study: `<metric> <= <number>` or `<metric> >= <number>`, on a metric every trial reports.
_CONSTRAINT = re.compile(r"\s*([A-Za-z_][\w/.]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


@dataclass(frozen=True)
class Constraint:
    """One parsed `tune.constraints` entry; `violation` is Optuna's convention (<= 0 feasible)."""

    metric: str
    op: str  # "<=" or ">="
    bound: float

    def violation(self, value: float) -> float:
        """How far `value` is past the bound: <= 0 when it satisfies the constraint (Optuna's constraints_func)."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    """`genotype/params <= 1.0e6` -> Constraint; anything else (another operator, an unknown metric, a bound
    that is not a finite number) is a ValueError naming what is wrong."""
    match = _CONSTRAINT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{shorten(str(text))!r} is not of the form '<metric> <= <number>' or '<metric> >= <number>'")
    metric, op, bound = match.group(1), match.group(2), float(match.group(3))
    if metric not in OBJECTIVE_METRICS:
        raise ValueError(f"{metric!r} is not a metric a constraint can bound; one of {', '.join(OBJECTIVE_METRICS)}")
    if not math.isfinite(bound):
        raise ValueError(f"{shorten(text)!r}: the bound must be a finite number")
    return Constraint(metric, op, bound)


def _check_constraint(text: str) -> str:
    parse_constraint(text)
    return text


ConstraintText = Annotated[str, AfterValidator(_check_constraint)]


class LatencyConfig(_Frozen):
    """How `genotype/latency_ms(_b)` is measured: eager PyTorch on the trial's device, or ONNX Runtime (CPU) on the
    graph `autovid export --format onnx` writes, with `threads` intra-op threads."""

    runtime: Literal["eager", "onnxruntime"] = "eager"
    threads: PositiveInt = 1  # onnxruntime only: intra-op threads of the timed session (fixed: figures compare)


class ResourcesConfig(_Frozen):
    """What one trial holds. With ``workers`` > 1 the trial runs data-parallel on that many Ray actors (one
    torch.distributed rank each), and ``cpu`` / ``gpu`` are per worker."""

    cpu: PositiveFloat = 1.0
    gpu: NonNegFloat = 0.0  # fractional GPUs allowed with one worker (e.g. 0.5 packs two trials per GPU)
    workers: PositiveInt = 1  # data-parallel ranks per trial; data.batch_size stays the global batch

    @model_validator(mode="after")
    def _every_device_used(self) -> "ResourcesConfig":
        # A trial never holds devices it does not use: one process drives one GPU.
        if self.gpu > 1:
            raise ValueError(
                f"gpu={self.gpu:g} per worker, but a worker drives one GPU: set "
                f"tune.resources.workers={self.workers * int(-(-self.gpu // 1))} and gpu=1 to use them all"
            )
        if self.workers > 1 and 0 < self.gpu < 1:
            raise ValueError(f"gpu={self.gpu:g} with workers={self.workers}: data-parallel workers need a whole GPU "
                             f"each (NCCL cannot run two ranks on one GPU)")
        return self

    @property
    def total_gpu(self) -> float:
        return self.gpu * self.workers

    @property
    def total_cpu(self) -> float:
        return self.cpu * self.workers


class TuneConfig(_Frozen):
    """The Ray Tune experiment around the search: sampler, scheduler, budget, resources."""

    num_samples: PositiveInt = 4
    max_concurrent_trials: PositiveInt = 2
    searcher: SearcherConfig = SearcherConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    resources: ResourcesConfig = ResourcesConfig()
    max_failures: NonNegInt = 2  # retries of a trial whose worker died
    checkpoint_frequency: PositiveInt = 1
    # hand a finished trial's Ray actor to the next trial (its session rebuilt for the new config) instead of
    # starting a process per trial: each saves a worker start (~5 s of imports, 0.4 GB) in a study of many
    # short trials. Always on under PBT, whose exploits rely on it.
    reuse_actors: bool = False
    time_budget_s: PositiveFloat | None = None
    param_space: dict[str, Distribution] = {}
    # several objectives = a multi-objective study (Pareto front); the scalar `objective` above then only
    # orders the summary and picks the trial `retrain: best` retrains
    objectives: list[ObjectiveSpec] = []
    # warm start: whole param_space assignments run first (each replaces one of num_samples)
    points_to_evaluate: list[dict[str, Any]] = []
    # after the study: retrain the best trial, every trial of the Pareto front, or nothing
    retrain: Literal["best", "pareto", "none"] = "best"
    # CPUs of the single retrain trial: "node" = every CPU of the largest live Ray node (it runs alone)
    retrain_cpu: PositiveFloat | Literal["node"] = "node"
    # feasibility bounds the study hands Optuna's sampler (tpe, nsga2: constraints_func); an infeasible trial is
    # reported as such and is never the best trial or on the Pareto front
    constraints: list[ConstraintText] = []
    latency: LatencyConfig = LatencyConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        # tune.retrain_best (a bool) became tune.retrain. Checkpoints and Tune experiment states written before
        # hold the old key in their stored config, so it is still read (true = best, false = none), not refused.
        if isinstance(data, dict) and "retrain_best" in data:
            data = dict(data)
            old = data.pop("retrain_best")
            if isinstance(old, bool):
                migrated = "best" if old else "none"
                if data.setdefault("retrain", migrated) != migrated:
                    raise ValueError(f"tune.retrain_best={str(old).lower()} (the former key) contradicts "
                                     f"tune.retrain={data['retrain']}: keep tune.retrain only")
            else:
                raise ValueError(f"tune.retrain_best (now tune.retrain: best | pareto | none) must be true or "
                                 f"false, got {old!r}")
        return data

    @model_validator(mode="after")
    def _check_study(self) -> "TuneConfig":
        metrics = [o.metric for o in self.objectives]
        if len(metrics) == 1:
            raise ValueError("tune.objectives needs two or more entries (one objective: use tune.objective)")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"tune.objectives names a metric twice: {metrics}")
        if metrics and self.scheduler.name != "none":
            raise ValueError(f"tune.objectives (multi-objective) needs tune.scheduler.name=none: "
                             f"{self.scheduler.name} stops or exploits trials on one metric")
        if metrics and self.searcher.sampler == "cmaes" and self.searcher.name == "optuna":
            raise ValueError("tune.searcher.sampler=cmaes is single-objective: use tpe or nsga2 with tune.objectives")
        if self.retrain == "pareto" and not metrics:
            raise ValueError("tune.retrain=pareto needs tune.objectives (a Pareto front)")
        if self.constraints and (self.searcher.name != "optuna" or self.searcher.sampler not in ("tpe", "nsga2")
                                 or self.scheduler.name == "pbt" or not self.param_space):
            raise ValueError("tune.constraints need Optuna's constraints support: tune.searcher.name=optuna with "
                             "sampler tpe or nsga2, a non-empty tune.param_space, and a scheduler other than pbt")
        if len(self.points_to_evaluate) > self.num_samples:
            raise ValueError(f"tune.points_to_evaluate has {len(self.points_to_evaluate)} points, more than "
                             f"tune.num_samples={self.num_samples}")
        for i, point in enumerate(self.points_to_evaluate):
            _check_point(point, self.param_space, f"tune.points_to_evaluate[{i}]")
        return self

    @property
    def multi_objective(self) -> bool:
        return bool(self.objectives)

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(text) for text in self.constraints]


def _check_point(point: dict[str, Any], space: dict[str, Distribution], where: str) -> None:
    """A warm-start point assigns every param_space key a value its distribution can produce."""
    if set(point) != set(space):
        missing, extra = sorted(set(space) - set(point)), sorted(set(point) - set(space))
        raise ValueError(
            f"{where} must assign exactly the tune.param_space keys"
            + (f"; missing {missing}" if missing else "")
            + (f"; not in param_space {extra}" if extra else "")
        )
    for key, value in point.items():
        dist = space[key]
        if dist.type == "choice":
            if value not in (dist.values or []):
                raise ValueError(f"{where}: {key}={value!r} is not one of {dist.values}")
            continue
        assert dist.low is not None and dist.high is not None
        integral = dist.type in ("int", "logint")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and value != int(value)):
            raise ValueError(f"{where}: {key}={value!r} is not {'an integer' if integral else 'a number'}")
        if not dist.low <= value <= dist.high:
            raise ValueError(f"{where}: {key}={value!r} is outside [{dist.low:g}, {dist.high:g}]")


class TrackingConfig(_Frozen):
    uri: str | None = None  # None: sqlite:///mlflow.db in the working directory
    experiment: str = "autovid"
    # MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) on the experiment's parent run,
    # sampled in the driver process: the driver's node
    system_metrics: bool = False
    # each retrain's final network as an MLflow LoggedModel (a torch.export trace: seconds per retrain, so studies
    # of many retrains may turn it off; the checkpoint on disk is the result either way)
    log_models: bool = True


class AblationConfig(_Frozen):
    """Arms compared by `autovid ablate`; each arm is a baselines/*.yaml file or name."""

    arms: list[str] = []
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0, 1, 2]
    rank_samples: NonNegInt = 0  # genotypes for the weight-sharing rank check (0 = skip)
    rank_epochs: PositiveInt = 2
    reference: str = "darts-p3d"  # every arm is compared with this one, video by video on the same test set
    # flops: a random-search arm draws genotypes until their standalone training (search-size network, full
    # search.epochs each) would exceed the FLOPs of one DARTS search (supernet weight + α passes);
    # samples: each random arm trains its own `samples` genotypes
    budget: Literal["flops", "samples"] = "flops"
    alpha: Annotated[Float, Field(gt=0, lt=1)] = 0.05  # significance level of those comparisons
    # fair baselines: a hand-designed (fixed) arm tries this many learning rates, log-spaced from train.lr / 10
    # to train.lr × 10, each trained on the weight half and scored on the α half, and retrains with the best;
    # None = tune.num_samples, the size of the outer search over the NAS setup; 0 or 1 = train.lr as given
    baseline_lr_sweep: NonNegInt | None = None


class ArmConfig(_Frozen):
    """One arm of an ablation (a baselines/*.yaml file): how its architecture is found, and its budget."""

    name: PlainName
    strategy: Literal["darts", "random", "random_ws", "fixed"]
    description: str = ""
    search_space: str | None = None  # darts / random / random_ws: a search_spaces/ name or path
    model: str | None = None  # fixed: a registered network (see `autovid models`)
    width: PositiveFloat = 1.0  # fixed: width multiplier of the registered network
    samples: PositiveInt = 8  # random: genotypes trained standalone under ASHA
    overrides: dict[str, Any] = {}  # dotted config overrides applied to this arm only

    @model_validator(mode="after")
    def _check(self) -> "ArmConfig":
        if self.strategy == "fixed" and not self.model:
            raise ValueError("a fixed arm needs 'model' (a registered network name)")
        if self.strategy != "fixed" and not self.search_space:
            raise ValueError(f"a {self.strategy} arm needs 'search_space'")
        return self


class ExperimentConfig(_Frozen):
    """Everything one autovid run needs; the fully resolved form is what gets recorded."""

    name: PlainName = "autovid"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    autocast: Literal["none", "bf16"] = "none"  # bf16 autocast on CUDA
    # torch.compile fast path of the forward passes (engine/fastpath.py): auto = on CUDA only (on CPU the
    # hand-fused eager ops are the fast path and inductor compiles take minutes); compile = on any device
    compile: Literal["off", "auto", "compile"] = "auto"
    search_space: str = "p3d"  # a search_spaces/ name or a YAML path
    storage_path: Path = Path("autovid_runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()
    ablation: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _check_param_space(self) -> "ExperimentConfig":
        flat = flatten(self.model_dump(mode="json"))
        for key in self.tune.param_space:
            if key not in flat:
                raise ValueError(f"tune.param_space key {key!r} is not a config key")
        return self

    @property
    def measures_latency(self) -> bool:
        """Searches time the derived network (costly) only when an objective or a constraint asks for a latency."""
        return any(m in LATENCY_METRICS for m in [o.metric for o in self.tune.objectives]
                   + [c.metric for c in self.tune.parsed_constraints])

    def flat(self) -> dict[str, Any]:
        """The resolved config as a flat `{dotted.key: value}` dict (JSON-compatible values)."""
        return flatten(self.model_dump(mode="json"))

    def with_overrides(self, overrides: dict[str, Any], *, source: str = "overrides") -> "ExperimentConfig":
        """A new validated config with dotted keys replaced (the original is never mutated)."""
        data = self.model_dump(mode="json")
        for key, value in overrides.items():
            if key == "tune.retrain_best" and isinstance(value, bool):  # the former key, as in stored configs
                key, value = "tune.retrain", "best" if value else "none"
            _set_dotted(data, key, value, source)
        return validate_config(data, source=source)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)




def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; leaves (including lists and the param_space dict) stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted != "tune.param_space":
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{source}: unknown config key {shorten(path)!r}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


MAX_PROBLEMS = 5  # validation problems listed in the one error line; the rest are counted


def _format_error(exc: ValidationError, source: str) -> str:
    """One line: the first MAX_PROBLEMS problems, each cut to 200 characters, and how many more there are (a file
    of 100,000 unknown keys must not answer with a line of megabytes)."""
    problems = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        key = shorten(".".join(str(p) for p in err["loc"]) or "(top level)")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        # a model-level check that names its keys in full (tune.objectives ...) needs no "tune: " before it
        problems.append(shorten(msg if msg.startswith(f"{key}.") else f"{key}: {msg}", 200))
    more = len(errors) - len(problems)
    return f"{source}: " + "; ".join(problems) + (f"; and {more:,} more problem{'s' * (more > 1)}" if more else "")


def validate_config(data: dict[str, Any], *, source: str) -> ExperimentConfig:
    """Validate a plain dict; any problem becomes one UserError line naming the key and the source."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(exc, source)) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key.sub=value` strings to a dict; values are parsed as YAML scalars/lists (`4`, `1e-3`, `[1,2]`), by the
    bounded reader of config files (at most MAX_TEXT_CHARS each, nesting and aliases bounded)."""
    out: dict[str, Any] = {}
    for item in items:
        if len(item) > MAX_TEXT_CHARS:
            raise UserError(f"override {shorten(item)!r} is longer than {MAX_TEXT_CHARS // 1024} KiB, the limit of "
                            "an override (put large values in the config file)")
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {shorten(item)!r} is not of the form key.sub=value")
        out[key.strip()] = parse_yaml(raw, source=f"override {shorten(key.strip())}") if raw.strip() else None
    return out


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a tune_configs/ name or a YAML path, then apply `key=value` overrides. The file is read by the
    bounded reader (size, nesting, aliases); an empty one is refused, not taken for the default experiment."""
    path = resource_path("tune_configs", name_or_path)
    data = read_yaml_file(path)
    if data is None or data == {}:
        raise UserError(f"{path}: the config is empty; give at least one key (e.g. name: my-experiment), or use a "
                        "built-in config such as quickstart")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys to values")
    cfg = validate_config(data, source=str(path))
    if overrides:
        cfg = cfg.with_overrides(parse_overrides(overrides), source=f"{path} (command-line overrides)")
    return cfg


def load_arm(name_or_path: str | Path) -> ArmConfig:
    """Load one ablation arm from baselines/ (by name) or a YAML path."""
    path = resource_path("baselines", name_or_path)
    data = read_yaml_file(path, what="ablation arm")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: an ablation arm must be a mapping with at least name and strategy")
    try:
        return ArmConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(exc, str(path))) from None
