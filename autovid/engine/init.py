"""Motion-prior initialisation: the network's first time-mixing convolution starts as a temporal difference."""

from __future__ import annotations

import torch
from torch import nn


def first_temporal_conv(model: nn.Module) -> nn.Conv3d | None:
    """The first Conv3d (in registration order: the stem) whose kernel spans more than one frame, if any.

    Spatial-only networks (the p2d control) have none: they stay blind to frame order whatever the init.
    """
    return next((m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1), None)


@torch.no_grad()
def temporal_difference_init(model: nn.Module) -> bool:
    """Re-initialise the first time-mixing convolution as (random spatial filter) ⊗ (temporal difference).

    With ``d`` = +1 at the centre tap ``c``, −1 at ``c − 1`` and 0 elsewhere: a temporal k×1×1 convolution
    (the second half of a P3D stem) becomes ``δ[o, i] · d[t] + 0.1 · W``, the frame difference of each
    channel; a full k×k×k kernel becomes ``W[o, i, c, y, x] · d[t]``, a random spatial filter of the frame
    difference. Either way the stem starts out like TSN's RGB-difference input, so motion reaches the layers
    above from step one. Static appearance is not lost: gradient descent can move the kernel back towards a sum.
    Why: on motion-only data, a randomly initialised network fed raw RGB sees the static scene dominate its
    features and does not find the motion signal within a short budget (see docs/results.md, "Raw RGB: what it took").
    Deterministic (no random draw). Returns whether a convolution was found (False for spatial-only nets).
    """
    conv = first_temporal_conv(model)
    if conv is None:
        return False
    _difference(conv)
    return True


@torch.no_grad()
def temporal_difference_init_all(module: nn.Module) -> int:
    """The same motion prior on every time-mixing convolution inside ``module`` (e.g. every candidate
    operator of the first searched cell, when the stem is spatial-only); returns how many were initialised.

    Depthwise temporal convolutions (separable and dilated operators) become the per-channel difference.
    """
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1]
    for conv in convs:
        _difference(conv)
    return len(convs)


def _difference(conv: nn.Conv3d) -> None:
    kt = conv.kernel_size[0]
    centre = kt // 2
    profile = torch.zeros(kt, dtype=conv.weight.dtype, device=conv.weight.device)
    profile[centre], profile[centre - 1] = 1.0, -1.0
    w = conv.weight
    pure_temporal = w.shape[3:] == (1, 1) and conv.in_channels == conv.out_channels
    if pure_temporal and conv.groups == 1:
        # the temporal half of a factorized (P3D) conv: channel c becomes the frame difference of channel c
        difference = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)[:, :, None] * profile
        w.mul_(RESIDUAL).add_(difference.view_as(w))
    elif pure_temporal and conv.groups == conv.in_channels:  # depthwise [C, 1, kt, 1, 1]: per channel
        w.mul_(RESIDUAL).add_(profile.view(1, 1, kt, 1, 1))
    else:  # a full 3D kernel: its random centre slice, applied to the frame difference
        w.copy_(w[:, :, centre : centre + 1] * profile.view(1, 1, kt, 1, 1) * kt**0.5)
    # Replicate the edge frames instead of padding with zeros: a zero frame before the first one would make
    # its "difference" the whole static frame, which then dominates the layer's statistics.
    conv.padding_mode = "replicate"


RESIDUAL = 0.1  # the share of the random init kept on top of the difference, so that symmetry is broken
