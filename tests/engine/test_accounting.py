"""Tests for parameter and FLOP accounting against analytic counts."""

from __future__ import annotations

import torch
from torch import nn

from autovid.engine.accounting import count_flops, count_parameters, describe


def test_conv3d_flops_match_analytic_count() -> None:
    b, cin, cout, k = 2, 3, 8, 3
    t, h, w = 4, 16, 16
    conv = nn.Conv3d(cin, cout, k, stride=(1, 2, 2), padding=(0, 1, 1))
    t_out, h_out, w_out = t - k + 1, (h + 2 - k) // 2 + 1, (w + 2 - k) // 2 + 1
    expected = 2 * b * cout * cin * k**3 * t_out * h_out * w_out  # a multiply-add counts 2
    assert count_flops(conv, (b, cin, t, h, w)) == expected


def test_pseudo3d_pair_flops() -> None:
    # spatial 1x3x3 then temporal 3x1x1, both 'same' padded: the sum of the two analytic counts
    c, t, h, w = 4, 4, 8, 8
    net = nn.Sequential(
        nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1), bias=False),
        nn.Conv3d(c, c, (3, 1, 1), padding=(1, 0, 0), bias=False),
    )
    per_layer = 2 * c * c * 9 * t * h * w, 2 * c * c * 3 * t * h * w
    assert count_flops(net, (1, c, t, h, w)) == sum(per_layer)


def test_linear_flops() -> None:
    assert count_flops(nn.Linear(10, 7), (5, 10)) == 2 * 5 * 10 * 7


def test_parameter_count() -> None:
    net = nn.Sequential(nn.Conv3d(3, 8, 3), nn.BatchNorm3d(8), nn.Linear(8, 5))
    conv, bn, fc = 8 * 3 * 27 + 8, 2 * 8, 8 * 5 + 5
    assert count_parameters(net) == conv + bn + fc
    net[1].requires_grad_(False)
    assert count_parameters(net) == conv + fc
    assert count_parameters(net, trainable_only=False) == conv + bn + fc
    shared = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(shared, shared)) == 20  # a shared parameter counts once


def test_count_flops_restores_modes_and_state() -> None:
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.Dropout(0.5))
    net.train()
    net[2].eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    describe(net, (1, 3, 2, 8, 8))
    assert net.training and net[0].training and net[1].training and not net[2].training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key  # eval-mode forward: BN statistics untouched


def test_describe() -> None:
    net = nn.Linear(6, 2)
    assert describe(net, (3, 6)) == {"params": 14, "flops": 2 * 3 * 6 * 2}
    assert count_flops(net, (3, 6), device=None) == 2 * 3 * 6 * 2
