"""Clip transforms: shapes, normalization, one crop/flip draw per clip, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autovid.data.transforms import (
    MEAN,
    STD,
    CropBox,
    TestTransform,
    TrainTransform,
    center_crop_box,
    random_resized_crop_box,
    to_clip_tensor,
)


def ramp_clip(k: int = 2, l: int = 3, h: int = 24, w: int = 32) -> np.ndarray:
    """uint8 [K, L, H, W, 3]: a horizontal ramp, identical in every frame."""
    row = np.linspace(0, 255, w).astype(np.uint8)
    return np.broadcast_to(row[None, None, None, :, None], (k, l, h, w, 3)).copy()


def test_shapes_and_normalization() -> None:
    clip = np.full((2, 3, 24, 32, 3), 255, np.uint8)
    out = TestTransform(16)(clip)
    assert out.shape == (2, 3, 3, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.allclose(out, torch.full_like(out, (1 - MEAN[0]) / STD[0]))
    zero = TestTransform(16)(np.zeros_like(clip))
    assert torch.allclose(zero, torch.full_like(zero, -MEAN[0] / STD[0]))


def test_layout_keeps_segments_channels_and_frames_apart() -> None:
    clip = np.zeros((2, 3, 8, 8, 3), np.uint8)
    for k in range(2):
        for l in range(3):
            clip[k, l, ..., 0] = 10 * (3 * k + l)  # red channel encodes (segment, frame)
    out = TestTransform(8, mean=(0, 0, 0), std=(1, 1, 1))(clip) * 255
    for k in range(2):
        for l in range(3):
            assert torch.allclose(out[k, 0, l], torch.full((8, 8), 10.0 * (3 * k + l)), atol=1e-3)
            assert torch.all(out[k, 1:, l] == 0)


def test_train_transform_uses_one_draw_for_the_whole_clip_and_is_deterministic() -> None:
    clip = ramp_clip()
    t = TrainTransform(16)
    a = t(clip, np.random.default_rng(3))
    b = t(clip, np.random.default_rng(3))
    assert torch.equal(a, b)
    flat = a.permute(0, 2, 1, 3, 4).reshape(6, 3, 16, 16)
    assert all(torch.equal(flat[0], f) for f in flat)  # same crop and flip in every frame of every segment
    outs = [t(clip, np.random.default_rng(s)) for s in range(20)]
    assert len({tuple(o[0, 0, 0, 0, [0, -1]].tolist()) for o in outs}) > 5  # crops vary across draws
    # flips happen: on a left-to-right ramp a flipped crop decreases along the width
    directions = {bool(o[0, 0, 0, 0, 0] > o[0, 0, 0, 0, -1]) for o in outs}
    assert directions == {True, False}
    assert {bool(o[0, 0, 0, 0, 0] > o[0, 0, 0, 0, -1]) for o in
            (TrainTransform(16, hflip=False)(clip, np.random.default_rng(s)) for s in range(20))} == {False}


def test_crop_boxes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = random_resized_crop_box(24, 32, rng, scale=(0.3, 1.0))
        assert 0 <= box.top and box.top + box.height <= 24 and 0 <= box.left and box.left + box.width <= 32
        assert 0.25 * 24 * 32 <= box.height * box.width <= 24 * 32
    assert center_crop_box(24, 32, 16) == CropBox(4, 8, 16, 16)
    assert center_crop_box(12, 32, 16) == CropBox(0, 8, 12, 16)  # smaller frame: clamp, then upscale
    out = to_clip_tensor(ramp_clip(h=12), center_crop_box(12, 32, 16), size=16)
    assert out.shape == (2, 3, 3, 16, 16)


@pytest.mark.parametrize("size", [8, 16])
def test_centre_crop_takes_the_middle(size: int) -> None:
    clip = ramp_clip(h=size, w=32)
    out = TestTransform(size, mean=(0, 0, 0), std=(1, 1, 1))(clip) * 255
    expected = torch.from_numpy(clip[0, 0, :, 16 - size // 2 : 16 + size // 2, 0].astype(np.float32))
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-3)
