"""C3D (Tran et al., ICCV 2015): eight 3x3x3 convolutions, five max-pools, three fully connected layers."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from autovid.models.registry import register_model, scale_channels

__all__ = ["C3D", "c3d", "create_c3d"]


def _pool_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a ceil-mode, unpadded max-pool (PyTorch's rule, as in the original Caffe C3D)."""
    out = math.ceil((size - kernel) / stride) + 1
    if (out - 1) * stride >= size:  # the last window must start inside the input
        out -= 1
    return max(out, 1)


class C3D(nn.Module):
    """C3D clip network: ``[N, 3, L, H, W] -> [N, num_classes]``.

    ```
    conv1 ─pool(1,2,2)─ conv2 ─pool─ conv3a,b ─pool─ conv4a,b ─pool─ conv5a,b ─pool─ flatten
          ─ fc6 ─ relu ─ dropout ─ fc7 ─ relu ─ dropout ─ fc8
    ```
    fc6's input size depends on the clip size, so the network is built for one ``clip_shape``
    ``(L, H, W)`` (16x112x112 in the paper: pool5 gives 512x1x4x4 = 8192 features) and a clip of
    another shape is rejected with a message naming the expected one.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, *, clip_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.clip_shape = clip_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.clip_shape:
            raise ValueError(
                f"this C3D was built for clips of L x H x W = {self.clip_shape}, got {tuple(x.shape[-3:])}; "
                "build it with matching frames=/input_size="
            )
        x = self.features(x)  # (N, C5, L', H', W')
        return self.classifier(x.flatten(1))  # (N, num_classes)

    def extra_repr(self) -> str:
        return f"clip_shape={self.clip_shape}"


def create_c3d(
    *,
    # Input: fc6 is sized from these.
    frames: int = 16,
    input_size: int | tuple[int, int] = 112,
    # Convolutional trunk: output channels per stage and 3x3x3 convolutions per stage.
    stage_channels: Sequence[int] = (64, 128, 256, 512, 512),
    convs_per_stage: Sequence[int] = (1, 1, 2, 2, 2),
    # Head.
    fc_features: int = 4096,
    dropout: float = 0.5,
    num_classes: int,
    # Scaling and initialisation.
    width: float = 1.0,
    generator: torch.Generator | None = None,
) -> C3D:
    """Build a C3D for clips of ``frames x input_size``; every channel and fc width is scaled by ``width``.

    The first pool is spatial only (1x2x2), the others 2x2x2, all ceil-mode as in Caffe.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if min(frames, h, w) < 1:
        raise ValueError(f"frames and input_size must be positive, got frames={frames}, input_size={input_size}")
    if len(stage_channels) != len(convs_per_stage):
        raise ValueError("stage_channels and convs_per_stage must have the same length")

    layers: list[nn.Module] = []
    c_in, size = 3, [frames, h, w]
    for i, (c, n) in enumerate(zip(stage_channels, convs_per_stage)):
        c_out = scale_channels(c, width)
        for _ in range(n):
            layers += [nn.Conv3d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        kernel = (1, 2, 2) if i == 0 else (2, 2, 2)
        layers.append(nn.MaxPool3d(kernel, stride=kernel, ceil_mode=True))
        size = [_pool_out(s, k, k) for s, k in zip(size, kernel)]

    fc = scale_channels(fc_features, width)
    classifier = nn.Sequential(
        nn.Linear(c_in * size[0] * size[1] * size[2], fc),  # fc6: 8192 -> 4096 at 16x112x112
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc, fc),  # fc7
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc, num_classes),  # fc8
    )
    model = C3D(nn.Sequential(*layers), classifier, clip_shape=(frames, h, w))
    _init_weights(model, generator)
    return model


def _init_weights(model: nn.Module, generator: torch.Generator | None) -> None:
    # No batch norm in C3D, so He init keeps activations in range when training from scratch.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            nn.init.zeros_(m.bias)
    nn.init.normal_(linears[-1].weight, std=0.01, generator=generator)


@register_model
def c3d(
    *,
    num_classes: int,
    width: float = 1.0,
    frames: int = 16,
    input_size: int | tuple[int, int] = 112,
    dropout: float = 0.5,
    generator: torch.Generator | None = None,
) -> C3D:
    """C3D as published (16x112x112 clips, ~78 M parameters for 101 classes at width 1)."""
    return create_c3d(
        frames=frames, input_size=input_size, dropout=dropout, num_classes=num_classes, width=width, generator=generator
    )
