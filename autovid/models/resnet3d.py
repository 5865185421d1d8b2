"""Video ResNets from one builder: R3D-18 (3x3x3 convolutions) and R(2+1)D-18 (1x3x3, 3x1x1), Tran et al. 2018."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import nn

from autovid.models.registry import register_model, scale_channels

__all__ = [
    "BasicBlock3d",
    "Conv2Plus1d",
    "Conv3x3x3",
    "ResNet3d",
    "create_resnet3d",
    "get_conv_style",
    "r2plus1d_18",
    "r3d_18",
]

ConvStyle = Literal["3d", "2plus1d"]


class Conv3x3x3(nn.Conv3d):
    """A full 3x3x3 convolution (R3D); stride applies to time and space alike."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, mid: int | None = None) -> None:
        # `mid` is accepted (and unused) so both conv styles share one constructor signature.
        super().__init__(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)

    @staticmethod
    def mid_channels(c_in: int, c_out: int) -> int | None:
        return None


class Conv2Plus1d(nn.Sequential):
    """A 3x3x3 convolution factored into spatial 1x3x3 -> BN -> ReLU -> temporal 3x1x1 (R(2+1)D)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, mid: int | None = None) -> None:
        mid = mid or self.mid_channels(c_in, c_out)
        super().__init__(
            nn.Conv3d(c_in, mid, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, c_out, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )

    @staticmethod
    def mid_channels(c_in: int, c_out: int) -> int:
        # M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out)) keeps the parameter count of the
        # 3x3x3 convolution it replaces (Tran et al. 2018, Sec. 3.5).
        return (c_in * c_out * 3 * 3 * 3) // (c_in * 3 * 3 + 3 * c_out)


def _stem_3d(c_out: int, width: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, c_out, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def _stem_2plus1d(c_out: int, width: float) -> nn.Sequential:
    mid = scale_channels(45, width)  # 45 as in the reference implementation (torchvision R2Plus1dStem)
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, c_out, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


_CONV_STYLES = {
    "3d": (_stem_3d, Conv3x3x3),
    "2plus1d": (_stem_2plus1d, Conv2Plus1d),
}


def get_conv_style(name: str) -> tuple[Callable[[int, float], nn.Module], type[nn.Module]]:
    """``(stem builder, conv class)`` for a convolution style name ("3d" or "2plus1d")."""
    try:
        return _CONV_STYLES[name]
    except KeyError:
        raise ValueError(f"unknown conv style {name!r}; valid: {', '.join(_CONV_STYLES)}") from None


class BasicBlock3d(nn.Module):
    """``x -> conv-BN-ReLU -> conv-BN -> + shortcut(x) -> ReLU``; shortcut: a strided 1x1x1 conv-BN on a new shape."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, conv: type[nn.Module]) -> None:
        super().__init__()
        # Both convolutions use the first one's mid width, as in the reference R(2+1)D.
        mid = conv.mid_channels(c_in, c_out)
        self.conv1 = nn.Sequential(
            conv(c_in, c_out, stride=stride, mid=mid), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(conv(c_out, c_out, mid=mid), nn.BatchNorm3d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv3d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet3d(nn.Module):
    """Video ResNet clip network: ``[N, 3, L, H, W] -> [N, num_classes]``.

    ```
    stem (stride 1,2,2) ─ stage1 ─ stage2 (/2) ─ stage3 (/2) ─ stage4 (/2) ─ global avg pool ─ dropout ─ fc
    ```
    Stages 2-4 halve time and space; any clip size works (global pooling before the classifier).
    """

    def __init__(self, stem: nn.Module, stages: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, C4, L/8, H/16, W/16)
        return self.head(x)  # (N, num_classes)


def create_resnet3d(
    *,
    # Convolution style: "3d" (R3D) or "2plus1d" (R(2+1)D).
    conv: ConvStyle = "3d",
    # Depth and width: basic blocks per stage and output channels per stage.
    depths: Sequence[int] = (2, 2, 2, 2),
    stage_channels: Sequence[int] = (64, 128, 256, 512),
    stem_channels: int = 64,
    # Head.
    dropout: float = 0.0,
    num_classes: int,
    # Scaling and initialisation.
    width: float = 1.0,
    zero_init_residual: bool = False,
    generator: torch.Generator | None = None,
) -> ResNet3d:
    """Build a video ResNet of basic blocks; every channel count is scaled by ``width``."""
    if len(depths) != len(stage_channels):
        raise ValueError("depths and stage_channels must have the same length")
    stem_fn, conv_cls = get_conv_style(conv)
    c_in = scale_channels(stem_channels, width)
    stem = stem_fn(c_in, width)
    stages = []
    for i, (depth, c) in enumerate(zip(depths, stage_channels)):
        c_out = scale_channels(c, width)
        blocks = []
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(BasicBlock3d(c_in, c_out, stride=stride, conv=conv_cls))
            c_in = c_out
        stages.append(nn.Sequential(*blocks))
    head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(c_in, num_classes))
    model = ResNet3d(stem, nn.Sequential(*stages), head)
    _init_weights(model, generator, zero_init_residual=zero_init_residual)
    return model


def _init_weights(model: ResNet3d, generator: torch.Generator | None, *, zero_init_residual: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01, generator=generator)
            nn.init.zeros_(m.bias)
    if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017)
        for m in model.modules():
            if isinstance(m, BasicBlock3d):
                nn.init.zeros_(m.conv2[1].weight)


@register_model
def r3d_18(
    *, num_classes: int, width: float = 1.0, dropout: float = 0.0, generator: torch.Generator | None = None
) -> ResNet3d:
    """R3D-18: 18-layer video ResNet of 3x3x3 convolutions (~33.2 M parameters for 101 classes at width 1)."""
    return create_resnet3d(
        conv="3d", depths=(2, 2, 2, 2), num_classes=num_classes, width=width, dropout=dropout, generator=generator
    )


@register_model
def r2plus1d_18(
    *, num_classes: int, width: float = 1.0, dropout: float = 0.0, generator: torch.Generator | None = None
) -> ResNet3d:
    """R(2+1)D-18: R3D-18 with every 3x3x3 convolution factored into 1x3x3 + 3x1x1 (~31.3 M parameters)."""
    return create_resnet3d(
        conv="2plus1d", depths=(2, 2, 2, 2), num_classes=num_classes, width=width, dropout=dropout, generator=generator
    )
