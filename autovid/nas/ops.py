"""Candidate operators of the video search spaces: the OPS registry, in pseudo-3D, full-3D and spatial-only styles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from autovid.errors import UserError
from autovid.nas.batchnorm import batch_norm

Kernel = Literal["p3d", "full3d", "p2d"]
KERNELS: tuple[str, ...] = ("p3d", "full3d", "p2d")

# Parameter-free operators (counted by Genotype.num_param_free, the DARTS+ collapse signal).
PARAM_FREE_OPS: frozenset[str] = frozenset({"zero", "skip", "max_pool_3", "avg_pool_3"})


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise UserError(f"unknown kernel style {kernel!r}; valid: {', '.join(KERNELS)}")


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def conv3d_views(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    groups: int,
) -> torch.Tensor:
    """``F.conv3d`` without bias, running factorized kernels as 2D convolutions on views of the 5D input.

    On CPU, oneDNN's 2D kernels are several times faster than its 3D ones for the thin 1×k×k and k×1×1
    kernels of pseudo-3D operators (and its depthwise k×1×1 3D kernel on NDHWC input is pathologically slow):

    - k×1×1 without spatial stride (1×1×1 included) = conv2d with a k×1 kernel on the [N, C, T, H·W] view;
    - 1×k×k on NDHWC (channels_last_3d) input = conv2d on the [N·T, C, H, W] channels_last view;
    - anything else (k×k×k, 1×k×k on NCDHW input) = conv3d.

    Same result up to float rounding, same FLOP count; the output keeps the input's memory layout.
    """
    kt, kh, kw = weight.shape[2:]
    st, sh, sw = stride
    pt, ph, pw = padding
    dt, dh, dw = dilation
    n, c, t, h, w = x.shape
    if kh == kw == 1 and sh == sw == 1:
        y = F.conv2d(x.flatten(3), weight.flatten(3), None, (st, 1), (pt, 0), (dt, 1), groups)
        return y.view(n, y.shape[1], y.shape[2], h, w)
    if kt == 1 and st == 1 and _is_channels_last(x):
        x2 = x.transpose(1, 2).reshape(n * t, c, h, w)  # a view: NDHWC memory is [N·T, H, W, C]
        w2 = weight.squeeze(2).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x2, w2, None, (sh, sw), (ph, pw), (dh, dw), groups)
        return y.view(n, t, *y.shape[1:]).transpose(1, 2)
    return F.conv3d(x, weight, None, stride, padding, dilation, groups)


class Conv3d(nn.Conv3d):
    """Bias-free nn.Conv3d computed by ``conv3d_views`` (2D kernels on views for factorized shapes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None or isinstance(self.padding, str):
            return super().forward(x)
        if self.padding_mode == "replicate" and self.padding[1:] == (0, 0):
            # a temporal conv that replicates edge frames (the motion-prior init): pad time, then the fast path
            pt = self.padding[0]
            return conv3d_views(F.pad(x, (0, 0, 0, 0, pt, pt), mode="replicate"), self.weight,
                                self.stride, (0, 0, 0), self.dilation, self.groups)  # type: ignore[arg-type]
        if self.padding_mode != "zeros":
            return super().forward(x)
        return conv3d_views(
            x, self.weight, self.stride, self.padding, self.dilation, self.groups  # type: ignore[arg-type]
        )


def conv_stack(
    c_in: int,
    c_out: int,
    k: int,
    *,
    kernel: str,
    stride: int = 1,
    temporal_stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> list[nn.Module]:
    """The convolution(s) of a k-sized spatio-temporal kernel in one of the three styles (bias-free).

    - ``p3d``: a spatial 1×k×k convolution then a temporal k×1×1 one (R(2+1)D / P3D-A factorization, no
      nonlinearity between them); k=1 is a single 1×1×1 convolution.
    - ``full3d``: one k×k×k convolution.
    - ``p2d``: one 1×k×k convolution (no temporal mixing; a temporal stride only subsamples frames).

    Spatial stride ``stride`` and temporal stride ``temporal_stride`` give ``ceil(size / stride)`` outputs.
    """
    _check_kernel(kernel)
    p = dilation * (k - 1) // 2
    s, ts, d = stride, temporal_stride, dilation
    if kernel == "full3d":
        return [Conv3d(c_in, c_out, k, (ts, s, s), p, d, groups=groups, bias=False)]
    if kernel == "p2d" or k == 1:
        return [Conv3d(c_in, c_out, (1, k, k), (ts, s, s), (0, p, p), (1, d, d), groups=groups, bias=False)]
    return [
        Conv3d(c_in, c_out, (1, k, k), (1, s, s), (0, p, p), (1, d, d), groups=groups, bias=False),
        Conv3d(c_out, c_out, (k, 1, 1), (ts, 1, 1), (p, 0, 0), (d, 1, 1), groups=groups, bias=False),
    ]


class PreActOp(nn.Module):
    """An operator that starts with ReLU and ends with BN: ``forward(x) = body(relu(x))``.

    The supernet computes ``relu(state)`` once per cell state and hands it to every edge reading that state
    (``forward_preact``), instead of each of the ~16 ReLU-first operators fed by a state recomputing and
    storing its own copy for backward (exact: ReLU is deterministic and not in place); and it passes the
    op's α weight as ``scale``, folded into the final BN (``batch_norm``).
    """

    def body(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward_preact(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(xr, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class ReLUConvBN(PreActOp):
    """ReLU → conv (k, in the given kernel style) → BN."""

    def __init__(self, c_in: int, c_out: int, k: int, *, kernel: str, stride: int = 1, temporal_stride: int = 1,
                 affine: bool = True) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *conv_stack(c_in, c_out, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride)
        )
        self.bn = nn.BatchNorm3d(c_out, affine=affine)

    def body(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return batch_norm(self.bn, self.convs(xr), scale)


class DilConv(PreActOp):
    """ReLU → depthwise k (dilated, kernel style) → pointwise 1×1×1 → BN."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        *,
        kernel: str,
        stride: int = 1,
        temporal_stride: int = 1,
        dilation: int = 2,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(
            *conv_stack(c_in, c_in, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride, dilation=dilation,
                        groups=c_in)
        )
        self.pointwise = Conv3d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm3d(c_out, affine=affine)

    def body(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return batch_norm(self.bn, self.pointwise(self.depthwise(xr)), scale)


class SepConv(PreActOp):
    """Two stacked ReLU-depthwise-pointwise-BN blocks (DARTS SepConv); only the first one strides."""

    def __init__(self, c_in: int, c_out: int, k: int, *, kernel: str, stride: int = 1, temporal_stride: int = 1,
                 affine: bool = True) -> None:
        super().__init__()
        self.first = DilConv(
            c_in, c_in, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride, dilation=1, affine=affine
        )
        self.second = DilConv(c_in, c_out, k, kernel=kernel, dilation=1, affine=affine)

    def body(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        # In-place ReLU on the BN output is safe: BN's backward needs its input, not its output.
        return self.second.body(F.relu(self.first.body(xr), inplace=True), scale)


class FactorizedReduce(PreActOp):
    """ReLU → two strided 1×1×1 convs, the second on the input shifted by one voxel → concat → BN.

    Halves H and W (and T when ``temporal_stride`` is 2) without discarding every other pixel. The shift
    pads at the far end, so odd sizes give ``ceil(size / 2)`` like every other strided operator.
    """

    def __init__(self, c_in: int, c_out: int, *, temporal_stride: int = 1, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        stride = (temporal_stride, 2, 2)
        self.temporal_stride = temporal_stride
        self.conv_a = Conv3d(c_in, c_out // 2, 1, stride=stride, bias=False)
        self.conv_b = Conv3d(c_in, c_out // 2, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm3d(c_out, affine=affine)

    def body(self, xr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        t = 1 if self.temporal_stride > 1 else 0
        shifted = F.pad(xr, (0, 1, 0, 1, 0, t))[:, :, t:, 1:, 1:]
        return batch_norm(self.bn, torch.cat([self.conv_a(xr), self.conv_b(shifted)], dim=1), scale)


class Zero(nn.Module):
    """The "no edge" operator: zeros of the output shape, no computation (and no gradient) at all."""

    def __init__(self, stride: int = 1, temporal_stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.temporal_stride = temporal_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        s, ts = self.stride, self.temporal_stride
        return x.new_zeros((n, c, -(-t // ts), -(-h // s), -(-w // s)))


def _window_counts(size: int, stride: int, k: int = 3) -> torch.Tensor:
    """In-bounds elements of each k-wide, padding k//2 window along one axis of length ``size``."""
    starts = torch.arange(0, size, stride) - k // 2
    return ((starts + k).clamp(max=size) - starts.clamp(min=0)).to(torch.float32)


class Pool3(nn.Module):
    """3-wide max or average pooling (the average excludes padding): 3×3×3 for p3d/full3d, 1×3×3 for p2d.

    Max pooling is one ``max_pool3d``. Average pooling is computed as a box sum by depthwise convolutions
    with all-ones kernels (spatial 1×3×3 then temporal 3×1×1, through ``conv3d_views``) times the inverse
    in-bounds count; the in-bounds part of a box is a product of intervals, so this equals
    ``avg_pool3d(count_include_pad=False)``. On CPU it is 4-8× faster than PyTorch's avg_pool3d, which also
    rejects clips of fewer than 3 frames even with padding.
    """

    def __init__(self, kind: str, *, kernel: str, stride: int = 1, temporal_stride: int = 1) -> None:
        super().__init__()
        _check_kernel(kernel)
        if kind not in ("max", "avg"):
            raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
        self.kind, self.stride, self.temporal_stride = kind, stride, temporal_stride
        self.temporal = kernel != "p2d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, ts = self.stride, self.temporal_stride
        kt, pt = (3, 1) if self.temporal else (1, 0)
        if self.kind == "max":
            return F.max_pool3d(x, (kt, 3, 3), (ts, s, s), (pt, 1, 1))
        n, c, t, h, w = x.shape
        y = conv3d_views(x, x.new_ones(c, 1, 1, 3, 3), (1 if self.temporal else ts, s, s), (0, 1, 1), (1, 1, 1), c)
        if self.temporal:
            y = conv3d_views(y, x.new_ones(c, 1, 3, 1, 1), (ts, 1, 1), (1, 0, 0), (1, 1, 1), c)
            ct = _window_counts(t, ts)
        else:
            ct = torch.ones(y.shape[2])
        count = ct[:, None, None] * _window_counts(h, s)[:, None] * _window_counts(w, s)[None, :]
        return y.mul_(count.reciprocal().to(y.device, y.dtype))


def _pool(kind: str, C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    return Pool3(kind, kernel=kernel, stride=stride, temporal_stride=temporal_stride)


def _skip(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    _check_kernel(kernel)
    if stride == 1 and temporal_stride == 1:
        return nn.Identity()
    if stride == 1:
        # Temporal-only reduction is not a cell shape this package builds; keep it exact anyway.
        return ReLUConvBN(C, C, 1, kernel=kernel, temporal_stride=temporal_stride, affine=affine)
    return FactorizedReduce(C, C, temporal_stride=temporal_stride, affine=affine)


def _zero(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    _check_kernel(kernel)
    return Zero(stride, temporal_stride)


def _max_pool_3(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    return _pool("max", C, stride, affine, kernel, temporal_stride)


def _avg_pool_3(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    return _pool("avg", C, stride, affine, kernel, temporal_stride)


def _conv(k: int) -> Callable[..., nn.Module]:
    def build(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
        return ReLUConvBN(C, C, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride, affine=affine)

    build.__name__ = f"conv_{k}"
    return build


def _sep_conv(k: int) -> Callable[..., nn.Module]:
    def build(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
        return SepConv(C, C, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride, affine=affine)

    build.__name__ = f"sep_conv_{k}"
    return build


def _dil_conv(k: int) -> Callable[..., nn.Module]:
    def build(C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
        return DilConv(C, C, k, kernel=kernel, stride=stride, temporal_stride=temporal_stride, affine=affine)

    build.__name__ = f"dil_conv_{k}"
    return build


OpBuilder = Callable[..., nn.Module]

# name -> builder(C, stride, affine, kernel, temporal_stride=1) -> nn.Module mapping [N, C, T, H, W] to
# [N, C, ceil(T / temporal_stride), ceil(H / stride), ceil(W / stride)].
OPS: dict[str, OpBuilder] = {
    "zero": _zero,
    "skip": _skip,
    "max_pool_3": _max_pool_3,
    "avg_pool_3": _avg_pool_3,
    "conv_1": _conv(1),
    "conv_3": _conv(3),
    "conv_5": _conv(5),
    "sep_conv_3": _sep_conv(3),
    "sep_conv_5": _sep_conv(5),
    "dil_conv_3": _dil_conv(3),
    "dil_conv_5": _dil_conv(5),
}


# Operators that combine neighbouring frames in the p3d and full3d kernel styles (p2d mixes nothing in time).
_TIME_MIXING = frozenset({"max_pool_3", "avg_pool_3", "conv_3", "conv_5", "sep_conv_3", "sep_conv_5", "dil_conv_3",
                          "dil_conv_5"})


def mixes_time(op: str, kernel: str) -> bool:
    """Whether operator ``op`` in ``kernel`` style combines neighbouring frames (skip, zero and 1×1×1 never do)."""
    _check_kernel(kernel)
    return kernel != "p2d" and check_op(op) in _TIME_MIXING


def list_ops() -> list[str]:
    """Names of every registered operator."""
    return list(OPS)


def check_op(name: str) -> str:
    """Return ``name`` if it is a registered operator, else raise UserError listing the valid names."""
    if name not in OPS:
        raise UserError(f"unknown operator {name!r}; valid: {', '.join(OPS)}")
    return name


def create_op(name: str, C: int, stride: int, affine: bool, kernel: str, temporal_stride: int = 1) -> nn.Module:
    """Build operator ``name`` (UserError listing the valid names if unknown)."""
    return OPS[check_op(name)](C, stride, affine, kernel, temporal_stride=temporal_stride)


def partial_channels(C: int, pc_k: int) -> int:
    """PC-DARTS: the C/pc_k channels of an edge that go through its operators (pc_k = 1: all of them)."""
    if C % pc_k:
        raise ValueError(f"PC-DARTS needs channels divisible by pc_k={pc_k}, got {C}")
    return C // pc_k


def bypass_path(stride: int, temporal_stride: int, pc_k: int) -> nn.Module:
    """PC-DARTS: what the channels skipping the operators go through (max-pooled on reducing edges)."""
    if pc_k > 1 and (stride > 1 or temporal_stride > 1):
        return nn.MaxPool3d((temporal_stride, stride, stride), ceil_mode=True)
    return nn.Identity()


def edge_ops(ops: tuple[str, ...], C: int, stride: int, temporal_stride: int, kernel: str) -> nn.ModuleList:
    """The operators of one edge, zero excluded (its term is w·0), pools followed by a non-affine BN (DARTS)."""
    modules = []
    for name in ops:
        if name == "zero":
            continue
        op = OPS[name](C, stride, False, kernel, temporal_stride=temporal_stride)
        modules.append(nn.Sequential(op, nn.BatchNorm3d(C, affine=False)) if "pool" in name else op)
    return nn.ModuleList(modules)
