"""Stateful runs with an epoch-wise `step()`: a DARTS search and a from-scratch retrain.

A session owns everything one run needs (loaders, network, optimizers, schedulers, RNG) and nothing about
where it runs: Ray Tune trainables, the CLI and the tests drive the same objects. `state_dict()` holds all
that is needed to continue exactly where a run stopped.

    SearchSession.step():  search_epoch (w on the weight half, α on the α half) ─▶ evaluate (α half)
                           ─▶ derive genotype ─▶ params/FLOPs of the derived network ─▶ metrics dict
    TrainSession.step():   train_epoch (whole train split) ─▶ evaluate (test split, multi-clip)

With ``parallel=DataParallel(rank, world)`` (a process group already initialised) a session is one of
``world`` data-parallel replicas: it loads rank's part of every global batch, and every rank returns the
metrics of the global batches. Rank 0 alone derives the genotype and its costs; the replicas' parameters
(α included) are checked to be identical after every epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from autovid.config import ExperimentConfig
from autovid.data.loaders import LoaderBundle, epoch_sampler
from autovid.engine.accounting import measure_latency
from autovid.engine.distributed import DataParallel
from autovid.engine.fastpath import accelerate
from autovid.engine.networks import build_network, build_supernet, network_cost
from autovid.engine.setup import build_data, clip_shape, resolve_device
from autovid.engine.strategies import make_strategy
from autovid.engine.trainer import alpha_entropy, evaluate, recalibrate_bn, search_epoch, train_epoch
from autovid.errors import TrainingDiverged
from autovid.nas.architect import Architect
from autovid.nas.genotype import Genotype
from autovid.nas.search_space import load_search_space
from autovid.nas.supernet import SuperNet
from autovid.rng import Stream, epoch_seed

log = logging.getLogger(__name__)

class Session(Protocol):
    """A run driven epoch by epoch (`SearchSession`, `TrainSession`, or N data-parallel ranks of one: the
    Tune side's `ReplicatedSession`); `state_dict()` holds all that is needed to continue exactly."""

    epoch: int

    @property
    def done(self) -> bool: ...

    def step(self) -> dict[str, Any]:
        """One epoch; its metrics (`split/metric` keys)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SearchRun(Session, Protocol):
    """A search session: it may stop early (a collapse) and takes new learning rates (PBT)."""

    def should_stop(self, metrics: dict[str, Any]) -> bool: ...

    def learning_rates(self) -> tuple[float, float]: ...

    def set_learning_rates(self, *, w_lr: float, alpha_lr: float) -> None: ...


class TrainRun(Session, Protocol):
    """A retrain session: evaluated on the test split, or on the α half (``eval_prefix`` "val")."""

    eval_prefix: str


def _reseed_loader(loader: Any, seed: int, epoch: int) -> None:
    """Put a loader's shuffling and per-clip sampling in the state of `epoch`, whatever ran before:
    a restored run then draws exactly the batches an uninterrupted one would."""
    if loader is None:
        return
    sampler = epoch_sampler(loader)
    if sampler is not None:
        sampler.generator.manual_seed(seed)
        sampler.epoch = epoch
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)


def drop_path_at(final: float, epoch: int, epochs: int) -> float:
    """The drop-path probability of 0-based `epoch`: a linear ramp from 0 to `final` at the last epoch."""
    return final * epoch / max(epochs - 1, 1)


def fast_path(cfg: ExperimentConfig, model: nn.Module, device: torch.device, parallel: DataParallel) -> nn.Module:
    """What the epoch loops call for forward passes: ``model``, or its compiled fast path (``cfg.compile``).
    Data-parallel ranks stay eager: the collectives of their BatchNorm would break the graph at every layer."""
    return accelerate(model, device=device, mode="off" if parallel.enabled else cfg.compile)


def make_optimizer(kind: str, params: Any, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Momentum SGD, or Adam/AdamW with betas (momentum, 0.999)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


def search_halves(data: LoaderBundle) -> tuple[DataLoader, DataLoader]:
    """The weight and α halves of a bundle built with a search split (``build_data(train_portion=...)``)."""
    if data.search_w is None or data.search_a is None:
        raise ValueError("the data bundle has no search split")
    return data.search_w, data.search_a


class SearchSession:
    """One DARTS (or random weight-sharing) search; `step()` runs one search epoch and returns metrics."""

    def __init__(self, cfg: ExperimentConfig, parallel: DataParallel | None = None) -> None:
        self.cfg = cfg
        self.parallel = parallel or DataParallel()
        self.device = resolve_device(cfg.device)
        self.space = load_search_space(cfg.search_space)
        self.data = build_data(cfg.data, seed=cfg.seed, train_portion=cfg.search.train_portion,
                               shard=self.parallel.shard, shuffle_labels=cfg.search.shuffle_labels, device=self.device)
        self.search_w, self.search_a = search_halves(self.data)
        torch.manual_seed(cfg.seed)  # anything that still draws from the global generator
        s = cfg.search
        supernet = build_supernet(cfg, num_classes=self.data.num_classes, space=self.space, device=self.device)
        self.model = self.parallel.prepare(supernet).to(self.device)
        self.w_optimizer = make_optimizer(s.w_optimizer, self.model.weight_parameters(), lr=s.w_lr,
                                          momentum=s.w_momentum, weight_decay=s.w_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=s.epochs, eta_min=s.w_lr_min
        )
        self.architect = Architect(
            self.model,
            lr=s.alpha_lr,
            betas=(s.alpha_betas[0], s.alpha_betas[1]),
            weight_decay=s.alpha_weight_decay,
            order=s.order,
            w_momentum=s.w_momentum,
            w_weight_decay=s.w_weight_decay,
            parallel=self.parallel if self.parallel.enabled else None,
        )
        self.autocast_dtype = torch.bfloat16 if cfg.autocast == "bf16" and self.device.type == "cuda" else None
        self.fast = fast_path(cfg, self.model, self.device, self.parallel)  # the architect stays on the model
        self.epoch = 0
        self.alpha_history: list[dict[str, Any]] = []
        self.strategy = make_strategy(s, cfg.seed)
        self._cost_cache: dict[str, dict[str, int]] = {}
        self._latency_cache: dict[str, dict[str, float | str]] = {}

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.search.epochs

    def genotype(self) -> Genotype:
        """The search's current answer (DARTS: derived from α; random-WS: the best candidate scored)."""
        return self.strategy.genotype(self)

    def score_genotypes(self, genotypes: list[Genotype]) -> list[float]:
        """Validation accuracy (α half) of each genotype run as a single path with inherited weights."""
        scores = []
        for genotype in genotypes:
            self.model.set_path(genotype)  # a single path has its own BN statistics: recompute them first
            recalibrate_bn(
                self.model, self.search_w, batches=self.cfg.search.precise_bn_batches, device=self.device
            )
            _reseed_loader(self.search_a, epoch_seed(self.cfg.seed, 0, Stream.WS_SCORING), 0)
            result = self._evaluate_alpha_half()
            scores.append(float(result["val/acc"]))
        self.model.set_path(None)
        return scores

    def derived_cost(self, genotype: Genotype) -> dict[str, int]:
        """Params and FLOPs of the network the genotype becomes at retrain depth and width (cached)."""
        if genotype.hash not in self._cost_cache:
            net = build_network(self.cfg, num_classes=self.data.num_classes, genotype=genotype, space=self.space)
            self._cost_cache[genotype.hash] = network_cost(self.cfg, net)
        return self._cost_cache[genotype.hash]

    def derived_latency(self, genotype: Genotype) -> dict[str, float | str]:
        """Median forward time (ms) of the retrain-size network at batch 1 (`genotype/latency_ms`) and batch
        data.batch_size (`genotype/latency_ms_b`), with the runtime and its thread count beside them; cached per
        genotype. tune.latency.runtime: eager PyTorch on this trial's device, or ONNX Runtime on the CPU on the
        graph `autovid export --format onnx` writes (then also `genotype/latency_iqr_ms`, the batch-1 IQR)."""
        key = genotype.hash
        if key not in self._latency_cache:
            net = build_network(self.cfg, num_classes=self.data.num_classes, genotype=genotype, space=self.space)
            shape = clip_shape(self.cfg.data)
            latency = self.cfg.tune.latency
            if latency.runtime == "onnxruntime":
                from autovid.engine.onnx import onnx_latency

                one, batch = onnx_latency(net, shape, (1, self.cfg.data.batch_size), threads=latency.threads)
                self._latency_cache[key] = {
                    "genotype/latency_ms": one.median_ms, "genotype/latency_ms_b": batch.median_ms,
                    "genotype/latency_iqr_ms": one.iqr_ms, "genotype/latency_runtime": one.runtime,
                    "genotype/latency_threads": one.threads,
                }
            else:
                net.to(self.device)
                self._latency_cache[key] = {
                    "genotype/latency_ms": measure_latency(net, (1, *shape), device=self.device),
                    "genotype/latency_ms_b": measure_latency(
                        net, (self.cfg.data.batch_size, *shape), device=self.device
                    ),
                    "genotype/latency_runtime": f"torch {torch.__version__} eager {self.device.type}",
                    "genotype/latency_threads": torch.get_num_threads(),
                }
        return self._latency_cache[key]

    def step(self) -> dict[str, Any]:
        """One search epoch: weight and α updates, validation on the α half, the derived genotype."""
        s = self.cfg.search
        started = time.perf_counter()
        _reseed_loader(self.search_w, epoch_seed(self.cfg.seed, self.epoch, Stream.TRAIN_BATCHES), self.epoch)
        _reseed_loader(self.search_a, epoch_seed(self.cfg.seed, self.epoch, Stream.ALPHA_BATCHES), self.epoch)
        torch.manual_seed(epoch_seed(self.cfg.seed, self.epoch, Stream.TORCH_GLOBAL))
        update_alpha = self.strategy.updates_alpha(self.epoch)
        w_loader = self.strategy.weight_batches(self.search_w, self.model, self.space, self.epoch)
        metrics: dict[str, Any] = dict(
            search_epoch(
                cast(SuperNet, self.fast),  # compiled or not, it forwards the supernet's attributes
                self.architect,
                w_loader,
                self.search_a,
                self.w_optimizer,
                device=self.device,
                grad_clip=s.grad_clip,
                update_alpha=update_alpha,
                eta=float(self.scheduler.get_last_lr()[0]),
                autocast_dtype=self.autocast_dtype,
                parallel=self.parallel,
            )
        )
        check_finite(metrics, epoch=self.epoch + 1, lrs=f"search.w_lr={s.w_lr}, search.alpha_lr={s.alpha_lr}")
        self.scheduler.step()
        self.model.set_path(None)
        recalibrate_bn(self.model, self.search_w, batches=s.precise_bn_batches, device=self.device)
        metrics.update(_scalars(self._evaluate_alpha_half()))
        # videos that failed to decode (native crashes included) and were replaced by another of their class
        metrics.update(self.data.substitution_metrics(self.search_w, self.search_a))
        self.epoch += 1
        if self.done:
            metrics.update(self.strategy.finish(self))
        self.parallel.check_replicas(self.model, epoch=self.epoch)
        if not self.parallel.primary:  # rank 0 derives and reports; the others only had to take part
            return metrics

        genotype = self.genotype()
        skips = genotype.num_skips("normal")
        alphas = {"ops": list(self.space.ops), **{k: v.detach().cpu().tolist() for k, v in self.model.alphas().items()}}
        self.alpha_history.append({"epoch": self.epoch, **alphas})
        cost = self.derived_cost(genotype)
        metrics.update(
            {
                "epoch": self.epoch,
                "lr": self.scheduler.get_last_lr()[0],
                "alpha/entropy": alpha_entropy(self.model),
                "alpha/updated": int(update_alpha),
                "genotype/skips": skips,
                "genotype/param_free": genotype.num_param_free(),
                "genotype/params": cost["params"],
                "genotype/flops": cost["flops"],
                "collapse/flag": int(skips > s.max_skips),
                "time/epoch_s": time.perf_counter() - started,
                "genotype": genotype.to_json(),
                "genotype_hash": genotype.hash,
                "alphas": json.dumps(alphas),
            }
        )
        if self.cfg.measures_latency:  # timed forwards cost seconds: only when an objective asks for them
            metrics.update(self.derived_latency(genotype))
        if metrics["collapse/flag"]:
            log.warning("collapse guard: derived normal cell has %d skip connections (max %d)", skips, s.max_skips)
        return metrics

    def _evaluate_alpha_half(self) -> dict[str, Any]:
        return evaluate(self.fast, self.search_a, device=self.device, num_classes=self.data.num_classes,
                        prefix="val", parallel=self.parallel)

    def learning_rates(self) -> tuple[float, float]:
        """The base (pre-schedule) weight learning rate and the α learning rate the optimizers hold."""
        return (float(self.w_optimizer.param_groups[0]["initial_lr"]),
                float(self.architect.optimizer.param_groups[0]["lr"]))

    def set_learning_rates(self, *, w_lr: float, alpha_lr: float) -> None:
        """PBT exploit/explore: new base learning rates, the cosine schedule continues from this epoch."""
        for group in self.w_optimizer.param_groups:
            group["initial_lr"] = w_lr
        self.scheduler.base_lrs = [w_lr for _ in self.scheduler.base_lrs]
        # The cosine schedule's closed form at this epoch. (Its step() is recursive: it would rescale the lr
        # the optimizer holds, which after a PBT exploit is the donor's.) Later steps continue from here.
        s = self.cfg.search
        lr = s.w_lr_min + (w_lr - s.w_lr_min) * (1 + math.cos(math.pi * self.epoch / s.epochs)) / 2
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        self.scheduler._last_lr = [lr for _ in self.w_optimizer.param_groups]  # what get_last_lr() reports
        for group in self.architect.optimizer.param_groups:
            group["lr"] = alpha_lr

    def should_stop(self, metrics: dict[str, Any]) -> bool:
        return search_should_stop(self.cfg, self.epoch, metrics)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "search",
            "config": self.cfg.model_dump(mode="json"),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "architect": self.architect.state_dict(),
            "alpha_history": self.alpha_history,
            **self.strategy.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.architect.load_state_dict(state["architect"])
        self.alpha_history = list(state["alpha_history"])
        self.strategy.load_state_dict(state)
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])


class TrainSession:
    """Retrain a genotype (or a registered hand-designed network) from scratch; `step()` = one epoch."""

    def __init__(self, cfg: ExperimentConfig, genotype: Genotype | None, parallel: DataParallel | None = None) -> None:
        self.cfg = cfg
        self.genotype = genotype
        self.parallel = parallel or DataParallel()
        self.device = resolve_device(cfg.device)
        # holdout: select architectures on the α half of the train split and never look at the test split.
        holdout = cfg.train.holdout
        self.data = build_data(cfg.data, seed=cfg.seed, train_portion=cfg.search.train_portion if holdout else None,
                               shard=self.parallel.shard, device=self.device)
        self.train_loader, self.eval_loader = search_halves(self.data) if holdout else (self.data.train, self.data.test)
        self.eval_prefix = eval_prefix(cfg)
        torch.manual_seed(cfg.seed)
        self.model = self.parallel.prepare(build_network(cfg, num_classes=self.data.num_classes, genotype=genotype))
        self.model.to(self.device)
        t = cfg.train
        self.optimizer = make_optimizer(t.optimizer, self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                        weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=t.epochs, eta_min=t.lr_min)
        self.cost = network_cost(cfg, self.model)
        self.autocast_dtype = torch.bfloat16 if cfg.autocast == "bf16" and self.device.type == "cuda" else None
        self.fast = fast_path(cfg, self.model, self.device, self.parallel)
        self.epoch = 0
        self.last_eval: dict[str, Any] = {}

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.train.epochs

    def step(self) -> dict[str, Any]:
        started = time.perf_counter()
        _reseed_loader(self.train_loader, epoch_seed(self.cfg.seed, self.epoch, Stream.TRAIN_BATCHES), self.epoch)
        torch.manual_seed(epoch_seed(self.cfg.seed, self.epoch, Stream.TORCH_GLOBAL))
        if hasattr(self.model, "drop_path_prob"):  # DARTS' ramp: 0 in the first epoch, train.drop_path at the end
            ramp = drop_path_at(self.cfg.train.drop_path, self.epoch, self.cfg.train.epochs)
            cast(Any, self.model).drop_path_prob = ramp
        metrics: dict[str, Any] = dict(
            train_epoch(
                self.fast,
                self.train_loader,
                self.optimizer,
                device=self.device,
                grad_clip=self.cfg.train.grad_clip,
                autocast_dtype=self.autocast_dtype,
                parallel=self.parallel,
            )
        )
        check_finite(metrics, epoch=self.epoch + 1, lrs=f"train.lr={self.cfg.train.lr}")
        self.scheduler.step()
        self.epoch += 1
        recalibrate_bn(self.model, self.train_loader, batches=self.cfg.train.precise_bn_batches, device=self.device)
        self.last_eval = self.evaluate()
        self.parallel.check_replicas(self.model, epoch=self.epoch)
        metrics.update(_scalars(self.last_eval))
        metrics.update(self.data.substitution_metrics(self.train_loader))  # the eval split's count is in last_eval
        metrics.update({"epoch": self.epoch, "params": self.cost["params"], "flops": self.cost["flops"]})
        if self.done:  # the final per-video hits: ablations compare arms video by video on the same test set
            metrics[f"{self.eval_prefix}/correct"] = self.last_eval[f"{self.eval_prefix}/correct"]
        metrics["time/epoch_s"] = time.perf_counter() - started
        if self.genotype is not None:
            metrics["genotype_hash"] = self.genotype.hash
        return metrics

    def evaluate(self) -> dict[str, Any]:
        """Test-split (or holdout) evaluation, multi-clip when data.test_clips > 1, with per-class and confusion."""
        _reseed_loader(self.eval_loader, epoch_seed(self.cfg.seed, 0, Stream.EVALUATION), 0)
        result = evaluate(self.fast, self.eval_loader, device=self.device, num_classes=self.data.num_classes,
                          prefix=self.eval_prefix, parallel=self.parallel)
        # replaced test videos change the test set: every evaluation says how many (data/substituted/<split>)
        result.update(self.data.substitution_metrics(self.eval_loader))
        return result

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "train",
            "config": self.cfg.model_dump(mode="json"),
            "genotype": self.genotype.to_json() if self.genotype is not None else None,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "class_names": list(self.data.class_names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])


def eval_prefix(cfg: ExperimentConfig) -> str:
    """Where a retrain is evaluated: "val" (the α half, ``train.holdout``) or "test"."""
    return "val" if cfg.train.holdout else "test"


def search_should_stop(cfg: ExperimentConfig, epoch: int, metrics: dict[str, Any]) -> bool:
    """Whether a search ends after `epoch` epochs, the last of which produced `metrics`: at its last epoch,
    or at a collapse when ``search.stop_on_collapse`` is set."""
    return epoch >= cfg.search.epochs or bool(cfg.search.stop_on_collapse and metrics.get("collapse/flag"))


def check_finite(metrics: dict[str, Any], *, epoch: int, lrs: str) -> None:
    """Stop a run whose training loss became NaN or infinite: it cannot recover, and finishing it would report
    chance accuracy as a result. Checked once per epoch (the epoch's mean), not per step: no extra device sync."""
    bad = {k: v for k, v in metrics.items() if k.endswith("loss") and isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise TrainingDiverged(f"training diverged in epoch {epoch}: " + ", ".join(f"{k} = {v}" for k, v in bad.items())
                               + f" (learning rates {lrs}; try lower ones)")


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Keep numbers; per-class lists and confusion matrices stay in the full evaluation result."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
