"""Model registry (``register_model`` / ``list_models`` / ``create_model``) and the clip-batch wrapper of all models."""

from __future__ import annotations

import inspect
from typing import Callable, Literal

import torch
from torch import nn

from autovid.errors import UserError
from autovid.nas.cells import CONSENSUS, tsn_consensus

__all__ = [
    "MODELS",
    "SegmentConsensus",
    "create_model",
    "list_models",
    "model_kwargs",
    "register_model",
    "scale_channels",
]

ModelFn = Callable[..., nn.Module]

# name -> entry function. An entry function takes keyword-only arguments, always
# `num_classes`, `width` and `generator`, and returns a *clip* network
# [N, C, L, H, W] -> [N, num_classes]; `create_model` adds the segment consensus.
MODELS: dict[str, ModelFn] = {}

# Arguments every entry function takes and `create_model` passes itself.
_COMMON_ARGS = ("num_classes", "width", "generator")


def register_model(fn: ModelFn) -> ModelFn:
    """Register ``fn`` under its ``__name__`` (timm style); its arguments must be keyword-only."""
    name = fn.__name__
    if name in MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    params = inspect.signature(fn).parameters
    missing = [a for a in _COMMON_ARGS if a not in params]
    positional = [p.name for p in params.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if missing or positional:
        raise TypeError(
            f"model entry {name!r} must take keyword-only arguments including {_COMMON_ARGS}; "
            f"missing {missing}, not keyword-only {positional}"
        )
    MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(MODELS)


def model_kwargs(name: str) -> dict[str, object]:
    """Model-specific keyword arguments ``create_model(name, ...)`` accepts, with their defaults.

    Lets a caller pass e.g. ``frames``/``input_size`` only to the models that need them (C3D).
    """
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in _COMMON_ARGS
    }


def create_model(
    name: str,
    *,
    num_classes: int,
    width: float = 1.0,
    consensus: Literal["avg", "max"] = "avg",
    generator: torch.Generator | None = None,
    **kw: object,
) -> SegmentConsensus:
    """Build registered model ``name`` as a segment network ``[B, K, C, L, H, W] -> [B, num_classes]``.

    ``width`` multiplies every channel count (at least 4 channels are kept); ``generator`` seeds the
    weight initialisation. ``kw`` are the model's own arguments (see ``model_kwargs(name)``); an
    unknown one is an error rather than silently ignored.
    """
    fn = _lookup(name)
    accepted = model_kwargs(name)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise UserError(
            f"model {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or '(no extra arguments)'}"
        )
    if consensus not in CONSENSUS:
        raise UserError(f"unknown consensus {consensus!r}; valid: {', '.join(CONSENSUS)}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not width > 0:
        raise UserError(f"width must be > 0, got {width!r}")
    net = fn(num_classes=num_classes, width=float(width), generator=generator, **kw)
    return SegmentConsensus(net, consensus=consensus)


def _lookup(name: str) -> ModelFn:
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(list_models())}") from None


def scale_channels(channels: int, width: float, *, min_channels: int = 4) -> int:
    """``channels * width`` rounded, never below ``min_channels`` (so tiny widths still build)."""
    return max(min_channels, int(round(channels * width)))


class SegmentConsensus(nn.Module):
    """Runs a clip network on every temporal segment and pools the logits (TSN consensus).

    ```
    x [B, K, C, L, H, W] ─fold K─▶ [B*K, C, L, H, W] ─net─▶ [B*K, N] ─unfold─▶ [B, K, N] ─avg|max over K─▶ [B, N]
    ```
    Dense sampling is simply K = 1 with L = all frames.
    """

    def __init__(self, net: nn.Module, *, consensus: Literal["avg", "max"] = "avg") -> None:
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"unknown consensus {consensus!r}; valid: {', '.join(CONSENSUS)}")
        self.net = net
        self.consensus = consensus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 6:
            raise ValueError(f"expected a clip batch [B, K, C, L, H, W], got shape {tuple(x.shape)}")
        b, k = x.shape[:2]
        logits = self.net(x.flatten(0, 1))  # (B*K, N)
        return tsn_consensus(logits.view(b, k, logits.shape[-1]), self.consensus)

    def extra_repr(self) -> str:
        return f"consensus={self.consensus!r}"
