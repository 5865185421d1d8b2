"""Operators: shapes in every kernel style, the fast kernels against PyTorch's reference ones, the zero op."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autovid.errors import UserError
from autovid.nas.ops import KERNELS, OPS, Conv3d, FactorizedReduce, Pool3, batch_norm, create_op, list_ops

CL = torch.channels_last_3d


def _x(shape, *, cl=False, dtype=torch.float64, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x.contiguous(memory_format=CL) if cl else x


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("stride,ts", [(1, 1), (2, 1), (2, 2)])
def test_every_op_shape_is_ceil_of_stride(kernel, stride, ts):
    x = _x((2, 4, 3, 7, 6), dtype=torch.float32)
    for name in list_ops():
        op = OPS[name](4, stride, False, kernel, temporal_stride=ts)
        y = op(x)
        assert y.shape == (2, 4, math.ceil(3 / ts), math.ceil(7 / stride), math.ceil(6 / stride)), name


def test_zero_op_does_no_work():
    op = OPS["zero"](4, 2, True, "p3d", temporal_stride=2)
    x = _x((2, 4, 4, 8, 8), dtype=torch.float32).requires_grad_(True)
    y = op(x)
    assert not list(op.parameters())
    assert y.shape == (2, 4, 2, 4, 4) and not y.any()
    assert y.grad_fn is None  # no graph: nothing was computed from x


def test_p2d_ops_never_mix_time():
    for name in list_ops():
        for m in OPS[name](4, 1, True, "p2d").modules():
            if isinstance(m, nn.Conv3d):
                assert m.kernel_size[0] == 1, name
    x = _x((1, 4, 3, 8, 8), dtype=torch.float32)
    x2 = x.clone()
    x2[:, :, 1:] = torch.randn(1, 4, 2, 8, 8)  # change every frame but the first
    for name in ("conv_3", "sep_conv_3", "dil_conv_3", "max_pool_3", "avg_pool_3"):
        op = OPS[name](4, 1, True, "p2d").eval()
        assert torch.allclose(op(x)[:, :, 0], op(x2)[:, :, 0]), name


def test_p3d_conv_is_spatial_then_temporal():
    convs = [m for m in OPS["conv_3"](4, 2, True, "p3d", temporal_stride=2).modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs] == [(1, 3, 3), (3, 1, 1)]
    assert [c.stride for c in convs] == [(1, 2, 2), (2, 1, 1)]
    full = [m for m in OPS["conv_3"](4, 1, True, "full3d").modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in full] == [(3, 3, 3)]


def test_unknown_op_lists_valid_names():
    with pytest.raises(UserError, match="valid: .*sep_conv_3"):
        create_op("sep_conv_7", 4, 1, True, "p3d")
    with pytest.raises(UserError, match="kernel"):
        create_op("conv_3", 4, 1, True, "p4d")


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,groups",
    [
        ((1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 1),
        ((1, 3, 3), (1, 2, 2), (0, 2, 2), (1, 2, 2), 4),
        ((3, 1, 1), (1, 1, 1), (1, 0, 0), (1, 1, 1), 1),
        ((3, 1, 1), (2, 1, 1), (2, 0, 0), (2, 1, 1), 4),
        ((1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), 1),
        ((1, 1, 1), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
        ((3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1), 2),
    ],
)
def test_view_convolutions_match_conv3d(cl, kernel, stride, padding, dilation, groups):
    conv = Conv3d(4, 8, kernel, stride, padding, dilation, groups=groups, bias=False).double()
    x = _x((2, 4, 3, 7, 6), cl=cl).requires_grad_(True)
    y = conv(x)
    ref = F.conv3d(x, conv.weight, None, stride, padding, dilation, groups)
    assert torch.allclose(y, ref, atol=1e-10)
    if cl:  # float32 (oneDNN) keeps NDHWC; float64 runs PyTorch's reference kernels
        assert copy.deepcopy(conv).float()(x.detach().float()).is_contiguous(memory_format=CL)
    g = torch.randn_like(ref)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(
        torch.autograd.grad(y, (x, conv.weight), g), torch.autograd.grad(ref, (x, conv.weight), g)))


def _avg_pool_reference(x, kt, stride, ts):
    """Box mean over in-bounds voxels, from explicit sums (valid for clips shorter than the kernel too)."""
    c = x.shape[1]
    pt = kt // 2
    ones = torch.ones(c, 1, kt, 3, 3, dtype=x.dtype)
    total = F.conv3d(x, ones, None, (ts, stride, stride), (pt, 1, 1), groups=c)
    count = F.conv3d(torch.ones_like(x[:, :1]), ones[:1], None, (ts, stride, stride), (pt, 1, 1))
    return total / count


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("frames", [1, 2, 3, 5])
@pytest.mark.parametrize("stride,ts", [(1, 1), (2, 1), (2, 2)])
def test_pools_match_reference(cl, frames, stride, ts):
    x = _x((2, 3, frames, 7, 8), cl=cl)
    for kernel, kt in (("p3d", 3), ("full3d", 3), ("p2d", 1)):
        pad_t = kt // 2
        mx = Pool3("max", kernel=kernel, stride=stride, temporal_stride=ts)(x)
        assert torch.equal(mx, F.max_pool3d(x, (kt, 3, 3), (ts, stride, stride), (pad_t, 1, 1)))
        avg = Pool3("avg", kernel=kernel, stride=stride, temporal_stride=ts)(x)
        assert torch.allclose(avg, _avg_pool_reference(x, kt, stride, ts), atol=1e-12)
        if frames >= kt:
            ref = F.avg_pool3d(x, (kt, 3, 3), (ts, stride, stride), (pad_t, 1, 1), count_include_pad=False)
            assert torch.allclose(avg, ref, atol=1e-12)


@pytest.mark.parametrize("cl", [False, True])
def test_batch_norm_scale_fold_matches_product(cl):
    """Regression: PyTorch's CPU BN backward on channels-last input gets a stride-0 weight wrong."""
    bn_a, bn_b = nn.BatchNorm3d(4, affine=False).double(), nn.BatchNorm3d(4, affine=False).double()
    x = _x((4, 4, 2, 5, 5), cl=cl).requires_grad_(True)
    s = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    g = _x((4, 4, 2, 5, 5), cl=cl, seed=1)
    y_a, y_b = batch_norm(bn_a, x, s), bn_b(x) * s
    assert torch.allclose(y_a, y_b, atol=1e-12)
    for a, b in zip(torch.autograd.grad(y_a, (x, s), g), torch.autograd.grad(y_b, (x, s), g)):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(bn_a.running_mean, bn_b.running_mean) and torch.equal(
        bn_a.num_batches_tracked, bn_b.num_batches_tracked
    )
    bn_a.eval(), bn_b.eval()
    assert torch.allclose(batch_norm(bn_a, x, s), bn_b(x) * s, atol=1e-12)


def test_factorized_reduce_handles_odd_sizes_and_time():
    fr = FactorizedReduce(4, 6, temporal_stride=2)
    assert fr(torch.randn(2, 4, 1, 7, 5)).shape == (2, 6, 1, 4, 3)
    assert fr(torch.randn(2, 4, 4, 8, 8)).shape == (2, 6, 2, 4, 4)
    with pytest.raises(ValueError):
        FactorizedReduce(4, 5)
