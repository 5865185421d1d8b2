"""Data parallelism for the sessions over torch.distributed: N ranks compute what one process computes.

Each rank holds the whole network and 1/N of every global batch (``data.batch_size`` is the global batch).
What makes N ranks equal to one process on the same global batch:

    loss      Σ_local CE / n_global         (n_global all-reduced, so uneven or empty shards weigh right)
    gradients all-reduced (sum) after every backward / autograd.grad: the weight step, and every gradient
              of the bilevel α step (first order; second order: ∇w L_train, ∇(α,w') L_val, the finite
              difference) — so α receives the gradient of the global batch on every rank
    BatchNorm GlobalBatchNorm (autovid.nas.batchnorm): statistics of the global batch
    metrics   sums all-reduced; per-video hits gathered in loader order

Nothing here knows about Ray: the Tune side (autovid.tune.workers) starts the processes and the process
group, a session takes a ``DataParallel`` describing its rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from autovid.nas.batchnorm import synchronise_batchnorm

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class ReplicaMismatch(RuntimeError):
    """The replicas of a data-parallel run no longer hold the same α or weights (never a silent drift)."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the data-parallel ranks of one run (``world == 1``: a plain run)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def primary(self) -> bool:
        """Rank 0: derives the genotype, writes checkpoints, reports."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def prepare(self, model: ModuleT) -> ModuleT:
        """Global-batch BatchNorm for every rank (a no-op for one process)."""
        if self.enabled:
            synchronise_batchnorm(model)  # in place
        return model

    def loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(the loss to differentiate, the detached sum of per-clip losses on this rank).

        One process: the mean cross-entropy. N ranks: the local sum over the global batch size, so that the
        all-reduced (summed) gradients are the gradient of the global batch's mean.
        """
        if not self.enabled:
            loss = F.cross_entropy(logits, target)
            return loss, loss.detach().double() * target.shape[0]
        total = F.cross_entropy(logits, target, reduction="sum")
        return total / self.global_count(target.shape[0], logits.device), total.detach()

    def global_count(self, local: int, device: torch.device) -> Tensor:
        """The number of clips in the global batch (all ranks' local counts summed)."""
        count = torch.tensor(float(local), device=device)
        if self.enabled:
            dist.all_reduce(count)
        return count.clamp_min(1.0)

    def reduce_gradients(self, grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
        """Sum gradients over the ranks in one collective (a missing gradient counts as zeros)."""
        filled = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like, strict=True)]
        if not self.enabled or not filled:
            return filled
        flat = _flatten_dense_tensors(filled)
        dist.all_reduce(flat)
        return list(_unflatten_dense_tensors(flat, filled))

    def reduce_grads_(self, params: Iterable[Tensor]) -> None:
        """Sum ``.grad`` of ``params`` over the ranks, in place (after a plain ``backward``)."""
        if not self.enabled:
            return
        params = list(params)
        for p, g in zip(params, self.reduce_gradients([p.grad for p in params], params), strict=True):
            p.grad = g

    def sum_(self, *tensors: Tensor) -> None:
        """All-reduce (sum) metric accumulators in place."""
        if self.enabled:
            for t in tensors:
                dist.all_reduce(t)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (picklable Python objects)."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def check_replicas(self, model: nn.Module, *, epoch: int) -> None:
        """Raise ``ReplicaMismatch`` unless every rank holds bit-identical parameters (α included).

        Cheap: a per-tensor sum and sum of squares, all-gathered once per epoch. Identical inputs through
        identical ops give identical bits, so any difference is a bug (or a broken collective), not noise.
        """
        if not self.enabled:
            return
        named = sorted(model.named_parameters())
        with torch.no_grad():
            fingerprint = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                                       for _, p in named]).cpu()
        gathered = self.gather(fingerprint)
        names = [name for name, _ in named]
        for rank, other in enumerate(gathered[1:], start=1):
            delta = (other - gathered[0]).abs().amax(dim=1)
            if bool((delta > 0).any()):
                worst = int(delta.argmax())
                raise ReplicaMismatch(
                    f"data-parallel replicas diverged after epoch {epoch}: rank {rank} differs from rank 0 in "
                    f"{names[worst]} (|Δ| of its sum = {float(delta[worst]):.3g}); α and weights must stay identical")
