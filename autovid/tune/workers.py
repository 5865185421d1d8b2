"""Data-parallel trials: one Tune trial drives N Ray actors, each one rank of a torch.distributed group.

    Tune trial (class Trainable: checkpoints, PBT, ASHA/HyperBand pauses as for one worker)
      └─ ReplicatedSession ──step()──▶ Replica rank 0 … rank N-1   (one placement-group bundle each:
             ▲  rank 0's metrics      │  SearchSession / TrainSession(parallel=DataParallel(rank, N)),
             └──── and state ─────────┘  gloo on CPU, NCCL on GPU, rendezvous on a TCPStore of rank 0)

Why actors under a class Trainable rather than Ray Train's TorchTrainer inside a function trial (Ray 2.60's
Train-in-Tune pattern): there Tune receives metrics and a checkpoint *path*, never a Tune checkpoint, so
PBT's exploit (which clones checkpoints and calls ``reset_config``), HyperBand's pause and resume, and this
toolkit's resume, retrain and export from ``result.checkpoint`` would all stop working for multi-worker
trials. The worker group here is what TorchTrainer builds (an actor per bundle of the trial's placement
group, a process group across them), kept inside the Trainable contract.

Failure: if an actor dies, the step raises at once (the others, blocked in a collective, are killed), the
trial fails, and Tune restarts it from its last checkpoint (``tune.max_failures``) — at any worker count,
since a checkpoint is rank 0's whole session state.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import ray
import torch
from ray import tune
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from autovid.config import ExperimentConfig, validate_config
from autovid.engine.distributed import DataParallel
from autovid.engine.session import SearchSession, TrainSession, eval_prefix, search_should_stop
from autovid.nas.genotype import Genotype

# A collective that waits this long means a peer is gone; the driver notices a dead actor much sooner.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class Replica:
    """One rank: a session in a process group (a Ray actor; its methods mirror the session's)."""

    def __init__(self, kind: str, config: dict[str, Any], genotype: str | None, rank: int, world: int) -> None:
        self.kind, self.genotype = kind, genotype
        self.cfg = validate_config(config, source="trial config")
        self.rank, self.world = rank, world
        self.store: torch.distributed.TCPStore | None = None
        self.session: SearchSession | TrainSession | None = None
        torch.set_num_threads(max(1, int(self.cfg.tune.resources.cpu)))

    def pid(self) -> int:
        return os.getpid()

    def open_store(self) -> tuple[str, int]:
        """Rank 0: the rendezvous store, on a port the OS picks (no race for a free port)."""
        host = ray.util.get_node_ip_address()
        self.store = torch.distributed.TCPStore(host, 0, self.world, is_master=True, timeout=COLLECTIVE_TIMEOUT,
                                                wait_for_workers=False)
        return host, self.store.port

    def start(self, host: str, port: int) -> None:
        """Join the process group and build this rank's session."""
        if self.store is None:
            self.store = torch.distributed.TCPStore(host, port, self.world, is_master=False,
                                                    timeout=COLLECTIVE_TIMEOUT)
        if host.startswith("127.") and "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # a local Ray listens on loopback only: so does gloo
        cuda = torch.cuda.is_available() and self.cfg.device in ("auto", "cuda")
        torch.distributed.init_process_group("nccl" if cuda else "gloo", store=self.store, rank=self.rank,
                                             world_size=self.world, timeout=COLLECTIVE_TIMEOUT)
        parallel = DataParallel(self.rank, self.world)
        if self.kind == "search":
            self.session = SearchSession(self.cfg, parallel)
        else:
            self.session = TrainSession(self.cfg, Genotype.from_json(self.genotype) if self.genotype else None,
                                        parallel)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a session method on this rank."""
        return getattr(self.session, method)(*args, **kwargs)

    def stop(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class ReplicatedSession:
    """The session interface the trainables use (``step``, ``state_dict``, ...), run by ``workers`` ranks."""

    def __init__(self, kind: str, cfg: ExperimentConfig, genotype: str | None = None) -> None:
        self.kind, self.cfg = kind, cfg
        resources = cfg.tune.resources
        self.world = resources.workers
        self.epoch = 0
        self.eval_prefix = eval_prefix(cfg)
        pg = get_current_placement_group()  # the trial's: one bundle per worker (see trial_resources)
        actor = ray.remote(Replica)
        config = cfg.model_dump(mode="json")
        # Any: Ray's ActorHandle does not type its methods' `.remote`
        self.replicas: list[Any] = [
            actor.options(
                num_cpus=resources.cpu, num_gpus=resources.gpu, max_restarts=0,
                scheduling_strategy=None if pg is None else PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank),
            ).remote(kind, config, genotype, rank, self.world)
            for rank in range(self.world)
        ]
        try:
            host, port = ray.get(self.replicas[0].open_store.remote())
            _gather([r.start.remote(host, port) for r in self.replicas])
        except BaseException:
            self.close()
            raise

    @property
    def done(self) -> bool:
        epochs = self.cfg.search.epochs if self.kind == "search" else self.cfg.train.epochs
        return self.epoch >= epochs

    def worker_pids(self) -> list[int]:
        return _gather([r.pid.remote() for r in self.replicas])

    def _everywhere(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a session method on every rank (they meet in collectives); rank 0's answer."""
        try:
            return _gather([r.call.remote(method, *args, **kwargs) for r in self.replicas])[0]
        except BaseException:
            self.close()  # ranks blocked in a collective with a dead peer would wait for the timeout
            raise

    def step(self) -> dict[str, Any]:
        metrics = self._everywhere("step")
        self.epoch = int(metrics["epoch"])
        return metrics

    def should_stop(self, metrics: dict[str, Any]) -> bool:
        return search_should_stop(self.cfg, self.epoch, metrics)

    def state_dict(self) -> dict[str, Any]:
        return ray.get(self.replicas[0].call.remote("state_dict"))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ref = ray.put(state)  # once into the object store, not once per rank
        self._everywhere("load_state_dict", ref)
        self.epoch = int(state["epoch"])

    def learning_rates(self) -> tuple[float, float]:
        return ray.get(self.replicas[0].call.remote("learning_rates"))

    def set_learning_rates(self, *, w_lr: float, alpha_lr: float) -> None:
        self._everywhere("set_learning_rates", w_lr=w_lr, alpha_lr=alpha_lr)

    def close(self) -> None:
        for replica in self.replicas:
            ray.kill(replica, no_restart=True)
        self.replicas = []


def _gather(refs: list[ray.ObjectRef]) -> list[Any]:
    """``ray.get`` of all refs, raising as soon as any one fails (not after the ones before it finish:
    those may be waiting in a collective for the failed one)."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready[0])  # raises the actor's error (or RayActorError for a dead actor) now
    return ray.get(refs)


def trial_resources(cfg: ExperimentConfig) -> dict[str, float] | Any:
    """What Tune reserves per trial: cpu/gpu for one worker, or a placement group with an empty head (the
    trial's driver needs no resources) and one bundle per worker."""
    resources = cfg.tune.resources
    if resources.workers == 1:
        return {"cpu": resources.cpu, "gpu": resources.gpu}
    bundle = {"CPU": resources.cpu, "GPU": resources.gpu}
    return tune.PlacementGroupFactory([{}] + [bundle] * resources.workers, strategy="PACK")
