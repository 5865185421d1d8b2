"""Epoch loops — DARTS search, plain training, evaluation — returning metric dicts (never talking to Tune/MLflow).

Batches are ``(x, y)`` with ``x`` a clip batch ``[B, K, C, L, H, W]`` (the model folds K itself) or, for
multi-clip testing, ``[B, M, K, C, L, H, W]``: the M clips of a video go through the model as extra batch
entries and their logits are averaged per video::

    x [B, M, K, C, L, H, W] ──flatten──▶ [B·M, K, C, L, H, W] ──model──▶ [B·M, N] ──view, mean over M──▶ [B, N]

Accuracies are fractions in [0, 1]. Running sums stay on the device so that a step never waits for the
GPU; they are read once per epoch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn
from tqdm.auto import tqdm

from autovid.engine.distributed import DataParallel

if TYPE_CHECKING:  # only for annotations: keeps importing the engine cheap
    from autovid.nas.architect import Architect
    from autovid.nas.supernet import SuperNet

logger = logging.getLogger(__name__)

__all__ = ["alpha_entropy", "evaluate", "recalibrate_bn", "search_epoch", "train_epoch"]

Batch = tuple[Tensor, Tensor]
SINGLE = DataParallel()  # one process: no collective anywhere
_POSTFIX_EVERY = 20  # steps between progress-bar loss updates (each one is a device sync)


def search_epoch(
    model: SuperNet,
    architect: Architect | None,
    w_loader: Iterable[Batch],
    a_loader: Iterable[Batch] | None,
    w_optimizer: torch.optim.Optimizer,
    *,
    device: str | torch.device,
    grad_clip: float | None,
    update_alpha: bool,
    eta: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    parallel: DataParallel = SINGLE,
) -> dict[str, float]:
    """One DARTS search epoch over the weight half; returns ``train/loss``, ``train/acc``, ``train/clips_per_s``.

    Per step: (if ``update_alpha``) ``architect.step`` on the next α-half batch — ``a_loader`` is restarted
    when it runs out, and not read at all during warm-up — then one SGD step of the weights on the weight-half
    batch, gradients clipped to ``grad_clip`` (``None``/0: no clipping). The weight backward touches only
    ``model.weight_parameters()``; ``w_optimizer`` must not hold α. ``eta`` is the learning rate the
    second-order step unrolls with (default: ``w_optimizer``'s current one). With ``update_alpha`` the dict
    also has ``train/alpha_loss`` (mean α-half loss before each α step). ``clips_per_s`` counts weight-half
    clips per second of the whole epoch (α steps included). ``autocast_dtype`` applies to the weight step only.
    With ``parallel`` (N ranks, each iterating its shard of every global batch) the weight gradients are
    all-reduced before clipping and the metrics cover the global batches.
    """
    device = torch.device(device)
    weights = list(model.weight_parameters())
    _check_no_alpha(model, w_optimizer)
    if update_alpha and (architect is None or a_loader is None):
        raise ValueError("update_alpha=True needs an architect and an a_loader")
    if eta is None:
        eta = float(w_optimizer.param_groups[0]["lr"])

    model.train()
    a_batches = _cycle(a_loader) if update_alpha and a_loader is not None else None
    meter = _Meter(device)
    alpha_loss = torch.zeros((), device=device)
    start = time.perf_counter()
    bar = tqdm(w_loader, desc="search", leave=False, disable=not progress)
    for step, (x_w, y_w) in enumerate(bar):
        x_w, y_w = _to(x_w, device), _to(y_w, device)
        if a_batches is not None and architect is not None:  # both or neither (checked above)
            x_a, y_a = next(a_batches)
            alpha_loss += architect.step(x_w, y_w, _to(x_a, device), _to(y_a, device), eta=eta, w_optimizer=w_optimizer)

        w_optimizer.zero_grad(set_to_none=True)
        with _autocast(device, autocast_dtype):
            logits = model(x_w)
        loss, loss_sum = parallel.loss(logits.float(), y_w)
        loss.backward(inputs=weights)  # α gets no gradient from the weight half
        parallel.reduce_grads_(weights)
        _clip(weights, grad_clip)
        w_optimizer.step()
        meter.add(loss_sum, logits, y_w)
        if progress and step % _POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")

    parallel.sum_(alpha_loss)  # each rank's α loss is its share of the global batch's mean
    out = meter.result("train", _elapsed(start, device), parallel)
    if a_batches is not None:
        out["train/alpha_loss"] = float(alpha_loss) / max(meter.steps, 1)
    logger.debug("search epoch: %d steps, %s", meter.steps, out)
    return out


def train_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    device: str | torch.device,
    grad_clip: float | None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    parallel: DataParallel = SINGLE,
) -> dict[str, float]:
    """One epoch of plain supervised training; returns ``train/loss``, ``train/acc``, ``train/clips_per_s``.

    Gradients of the optimizer's parameters are clipped to ``grad_clip`` (``None``/0: off). ``autocast_dtype``
    (``torch.bfloat16`` on CUDA; bf16 needs no loss scaling) runs the forward under autocast. With
    ``parallel`` the gradients are all-reduced before clipping (see ``search_epoch``).
    """
    device = torch.device(device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    meter = _Meter(device)
    start = time.perf_counter()
    bar = tqdm(loader, desc="train", leave=False, disable=not progress)
    for step, (x, y) in enumerate(bar):
        x, y = _to(x, device), _to(y, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, autocast_dtype):
            logits = model(x)
        loss, loss_sum = parallel.loss(logits.float(), y)
        loss.backward()
        parallel.reduce_grads_(params)
        _clip(params, grad_clip)
        optimizer.step()
        meter.add(loss_sum, logits, y)
        if progress and step % _POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return meter.result("train", _elapsed(start, device), parallel)


def recalibrate_bn(model: nn.Module, loader: Iterable[Batch], *, batches: int, device: str | torch.device) -> None:
    """Precise BN: recompute every BatchNorm's running statistics at the current weights from ``batches`` batches.

    Why: with the usual momentum of 0.1 the running variance still carries its initial value of 1 after tens
    of steps, while the true variance may be far smaller (RGB-difference inputs, narrow search cells); an
    eval-mode network then squashes its activations and predicts one class. Short runs (the quickstart, ASHA
    rungs, standalone random-search budgets) and single paths of a weight-sharing supernet, whose statistics
    differ from the supernet's, all need it. The statistics become a plain average over ``batches`` train-mode
    forward passes (torch.optim.swa_utils.update_bn); ``batches=0`` keeps the running averages as they are.
    """
    if batches > 0:
        update_bn((x for x, _ in itertools.islice(loader, batches)), model, device=torch.device(device))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: str | torch.device,
    num_classes: int,
    prefix: str = "val",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    parallel: DataParallel = SINGLE,
) -> dict[str, Any]:
    """Loss, top-1, top-5, per-class accuracy and confusion matrix over ``loader`` (model in eval mode).

    Keys: ``{prefix}/loss``, ``{prefix}/acc`` (top-1), ``{prefix}/top5`` (top-min(5, N)) as floats;
    ``{prefix}/per_class_acc`` (list of N floats, NaN for a class with no sample), ``{prefix}/confusion``
    (N×N list of int lists, row = true class, column = predicted) and ``{prefix}/correct`` (one "0"/"1" per
    sample, in loader order). 7-D batches are multi-clip (see module doc).
    The model's train/eval mode is restored afterwards. With ``parallel`` each rank evaluates its shard of
    every batch and all ranks return the figures of the whole loader (hits in the one-process order).
    """
    device = torch.device(device)
    n_cls = int(num_classes)
    k = min(5, n_cls)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    confusion = torch.zeros(n_cls * n_cls, device=device, dtype=torch.long)
    hits: list[Tensor] = []
    try:
        for x, y in tqdm(loader, desc=prefix, leave=False, disable=not progress):
            x, y = _to(x, device), _to(y, device)
            with _autocast(device, autocast_dtype):
                if x.dim() == 7:  # [B, M, K, C, L, H, W]: M clips per video
                    b, m = x.shape[:2]
                    logits = model(x.flatten(0, 1)).view(b, m, -1).float().mean(dim=1)
                else:
                    logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            predicted = logits.argmax(dim=1)
            confusion += torch.bincount(y * n_cls + predicted, minlength=n_cls * n_cls)
            hits.append(predicted == y)
            top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
    finally:
        model.train(was_training)
    hit_string = _gather_hits(hits, parallel)
    seen = len(hit_string)
    parallel.sum_(loss_sum, top5, confusion)
    if seen == 0:
        raise ValueError(f"evaluate: the {prefix} loader yielded no batch")

    cm = confusion.view(n_cls, n_cls).cpu()
    support = cm.sum(dim=1)
    diag = cm.diagonal()
    per_class = [float(d) / float(s) if s > 0 else math.nan for d, s in zip(diag.tolist(), support.tolist())]
    return {
        f"{prefix}/loss": float(loss_sum) / seen,
        f"{prefix}/acc": float(diag.sum()) / seen,
        f"{prefix}/top5": float(top5) / seen,
        f"{prefix}/per_class_acc": per_class,
        f"{prefix}/confusion": cm.tolist(),
        # per-sample top-1 hits in loader order ("1" = right): paired comparisons of arms on the same videos
        f"{prefix}/correct": hit_string,
    }


def _gather_hits(hits: list[Tensor], parallel: DataParallel) -> str:
    """Per-sample hits as a "0"/"1" string in loader order: with N ranks, batch by batch, rank by rank
    (each rank holds a contiguous part of every global batch)."""
    local = ["".join("1" if h else "0" for h in batch.tolist()) for batch in hits]
    if not parallel.enabled:
        return "".join(local)
    per_rank = parallel.gather(local)
    return "".join(part for batch in zip(*per_rank, strict=True) for part in batch)


@torch.no_grad()
def alpha_entropy(model: SuperNet) -> float:
    """Mean entropy (nats) of the operator distributions softmax(α), one per edge (NaN when there is none).

    Uses ``model.alphas()`` (softmax weights per cell type, [edges, ops]) when the model has it — so PC-DARTS
    edge weights β are left out — else softmax over the last dimension of every ``arch_parameters()`` tensor.
    A uniform row gives ln(#ops), a one-hot row 0: a falling value shows α committing to operators.
    """
    if hasattr(model, "alphas"):
        probs = [p.detach().float() for p in model.alphas().values()]
    else:
        probs = [a.detach().float().softmax(dim=-1) for a in model.arch_parameters()]
    rows = [torch.special.entr(p).sum(dim=-1).flatten() for p in probs]
    if not rows:
        return math.nan
    return float(torch.cat(rows).mean())


# ---------------------------------------------------------------------------- helpers


class _Meter:
    """Sample-weighted loss and top-1 sums kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.samples = 0
        self.steps = 0

    def add(self, loss_sum: Tensor, logits: Tensor, y: Tensor) -> None:
        """One batch: the sum of its per-clip losses, its logits and labels."""
        self.loss += loss_sum.detach().double()
        self.correct += (logits.detach().argmax(dim=1) == y).sum()
        self.samples += y.shape[0]
        self.steps += 1

    def result(self, split: str, seconds: float, parallel: DataParallel = SINGLE) -> dict[str, float]:
        if parallel.enabled:  # the global batches' figures on every rank
            samples = torch.tensor(float(self.samples), device=self.loss.device, dtype=torch.float64)
            parallel.sum_(self.loss, self.correct, samples)
            self.samples = int(samples)
        if self.samples == 0:
            raise ValueError(f"the {split} loader yielded no batch")
        return {
            f"{split}/loss": float(self.loss) / self.samples,
            f"{split}/acc": float(self.correct) / self.samples,
            f"{split}/clips_per_s": self.samples / max(seconds, 1e-9),
        }


def _to(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, non_blocking=True)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _clip(params: Sequence[Tensor], grad_clip: float | None) -> None:
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _cycle(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Batches of ``loader`` without end, restarting it (a new epoch of its sampler) when exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the α loader yielded no batch")


def _check_no_alpha(model: SuperNet, optimizer: torch.optim.Optimizer) -> None:
    alpha_ids = {id(a) for a in model.arch_parameters()}
    if any(id(p) in alpha_ids for group in optimizer.param_groups for p in group["params"]):
        raise ValueError("the weight optimizer holds architecture parameters; build it on model.weight_parameters()")
