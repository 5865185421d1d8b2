"""Clip transforms: one random resized crop + flip per clip (train) or a centre crop (test), then normalize."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
STD: tuple[float, float, float] = (0.225, 0.225, 0.225)


class CropBox(NamedTuple):
    """A crop window in pixels."""

    top: int
    left: int
    height: int
    width: int


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, *,
    scale: tuple[float, float] = (0.4, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> CropBox:
    """torchvision's RandomResizedCrop window: a random area fraction and log-uniform aspect ratio.

    Ten tries to fit the window; then the largest centred window within the ratio bounds.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return CropBox(int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def center_crop_box(height: int, width: int, size: int) -> CropBox:
    """A centred ``size`` x ``size`` window (clamped to the frame: a smaller frame is upscaled later)."""
    h, w = min(size, height), min(size, width)
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def to_clip_tensor(
    frames: np.ndarray, box: CropBox, *, size: int, flip: bool = False,
    mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
) -> torch.Tensor:
    """Crop, resize, flip and normalize a clip; the same window for every frame.

        uint8 [K, L, H, W, 3] ─crop─▶ [K*L, 3, h, w] ─bilinear─▶ [K*L, 3, S, S] ─flip?─▶ [K, 3, L, S, S]
                               ─float, normalize─▶ float32 [K, 3, L, S, S]

    Everything before the normalization stays uint8 (torch's uint8 bilinear kernel on channels-last
    memory is several times faster than the float one), so the clip is converted to float once.
    """
    k, l = frames.shape[:2]
    crop = frames[:, :, box.top : box.top + box.height, box.left : box.left + box.width]
    x = torch.from_numpy(np.ascontiguousarray(crop)).view(k * l, box.height, box.width, 3).permute(0, 3, 1, 2)
    if (box.height, box.width) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if flip:
        x = x.flip(-1)
    x = x.reshape(k, l, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()  # uint8 [K, 3, L, S, S]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1, 1)
    return x.float().mul_(scale).sub_(shift)


def rgb_difference(clip: torch.Tensor) -> torch.Tensor:
    """TSN's RGB-difference modality: ``[..., C, L+1, H, W]`` frames -> ``[..., C, L, H, W]`` consecutive differences.

    Applied to normalized frames, so the mean cancels and a static scene is exactly zero: what is left is
    what moved (TSN, Wang et al. 2016, uses stacked RGB differences as a cheap stand-in for optical flow).
    """
    return clip.diff(dim=-3)


@dataclass(frozen=True)
class TrainTransform:
    """Random resized crop + horizontal flip, one draw per clip (all frames share it)."""

    crop_size: int
    scale: tuple[float, float] = (0.4, 1.0)  # area fraction of the frame
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True  # every synthetic class is flip-invariant; turn off for direction-sensitive labels
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """uint8 [K, L, H, W, 3] -> float32 [K, 3, L, crop, crop]."""
        box = random_resized_crop_box(frames.shape[2], frames.shape[3], rng, scale=self.scale, ratio=self.ratio)
        flip = self.hflip and bool(rng.random() < 0.5)
        return to_clip_tensor(frames, box, size=self.crop_size, flip=flip, mean=self.mean, std=self.std)


@dataclass(frozen=True)
class TestTransform:
    """Centre crop (deterministic)."""

    __test__ = False  # not a pytest test class, despite the name
    crop_size: int
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 [K, L, H, W, 3] -> float32 [K, 3, L, crop, crop]."""
        box = center_crop_box(frames.shape[2], frames.shape[3], self.crop_size)
        return to_clip_tensor(frames, box, size=self.crop_size, mean=self.mean, std=self.std)
