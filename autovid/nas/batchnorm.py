"""BatchNorm for the networks: α folded into BN's affine weight, and statistics that span data-parallel ranks.

With N data-parallel workers each sees 1/N of the global batch. Plain BatchNorm would normalise with the
statistics of its own shard, so N workers would train a different function than one worker on the same
global batch. ``GlobalBatchNorm`` (a ``BatchNorm3d`` with the same parameters and buffers, so state dicts
move freely between worker counts) all-reduces the per-channel sums across ranks, differentiably, in one
collective per forward (and one in its backward):

    d = x - running_mean ──▶ local (Σd, Σd², count) ──all_reduce──▶ mean, var of the global batch

PyTorch's own SyncBatchNorm would do this on GPUs only; this one runs on gloo (CPU) and NCCL alike, which
is what lets the equivalence of N workers and one worker be tested on a CPU machine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _momentum(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """The running-average factor of this forward, counting the batch (as ``nn.BatchNorm3d.forward`` does)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average (precise BN: torch.optim.swa_utils.update_bn)
            momentum = 1.0 / float(bn.num_batches_tracked)
    return momentum


def batch_norm(bn: nn.BatchNorm3d, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``bn(x) · scale`` with the scale folded into BN's affine weight, in one fused BN kernel.

    The supernet multiplies each op output by its α weight. As BN's weight γ, that product costs nothing: the
    BN backward kernel already computes ``Σ g·x̂`` per channel (the gradient of γ, summed here into the
    gradient of the scale) and scales ``∂x`` by γ, so neither ``α·y`` nor ``α·∂y`` is ever materialized.
    Same semantics as ``nn.BatchNorm3d.forward`` (running statistics, momentum, eval mode); a
    ``GlobalBatchNorm`` in training mode normalises with the statistics of all ranks.
    """
    if scale is None:
        return bn(x)
    # .contiguous(): with a stride-0 (expanded) weight, PyTorch's CPU BN backward on channels-last input
    # returns a wrong input gradient (torch 2.13); a materialized C-vector is handled correctly.
    weight = scale.expand(x.shape[1]).contiguous() if bn.weight is None else bn.weight * scale
    bias = None if bn.bias is None else bn.bias * scale
    return _normalize(bn, x, weight, bias)


def _normalize(bn: nn.BatchNorm3d, x: torch.Tensor, weight: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor:
    momentum = _momentum(bn)
    if isinstance(bn, GlobalBatchNorm) and bn.training and _distributed():
        return _global_batch_norm(bn, x, weight, bias, momentum)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None, weight, bias,
                        batch_stats, momentum, bn.eps)


def _global_batch_norm(bn: nn.BatchNorm3d, x: torch.Tensor, weight: torch.Tensor | None,
                       bias: torch.Tensor | None, momentum: float) -> torch.Tensor:
    """Training-mode BN over the union of every rank's batch (an empty local batch takes part too)."""
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = (1, channels) + (1,) * (x.dim() - 2)
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 at least
    # One collective for both moments: sums of (x - shift) and its square, where the shift (the running
    # mean, identical on every rank) keeps E[d²] - E[d]² free of cancellation once it tracks the mean.
    running_mean = bn.running_mean if bn.track_running_stats else None
    shift = running_mean.detach().to(xf.dtype).clone() if running_mean is not None else xf.new_zeros(channels)
    d = xf - shift.view(shape)
    count = xf.new_tensor([x.numel() // max(channels, 1)])
    totals = _AllReduceSum.apply(torch.cat([d.sum(dims), (d * d).sum(dims), count]))
    n = totals[-1].clamp_min(1.0)
    m1 = totals[:channels] / n
    var = (totals[channels : 2 * channels] / n - m1 * m1).clamp_min(0.0)
    mean = shift + m1
    y = (d - m1.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            bn.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            bn.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
    return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: the gradient of every rank's loss reaches every rank's input.
    (torch.distributed.nn.functional.all_reduce does the same and is deprecated since torch 2.x.)"""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` whose training statistics are those of the global batch across data-parallel
    ranks (when a process group of more than one rank is initialised; otherwise exactly BatchNorm3d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalize(self, x, self.weight, self.bias)


def synchronise_batchnorm(model: nn.Module) -> nn.Module:
    """Turn every ``BatchNorm3d`` of ``model`` into a ``GlobalBatchNorm``, in place (same parameters,
    buffers and state-dict keys, so a checkpoint written at N workers loads at M)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm3d:
            module.__class__ = GlobalBatchNorm
    return model
