"""Temporal sampling (TSN segments and dense clips): pure numpy functions from a frame count to frame indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SamplingMode = Literal["segments", "dense"]
Modality = Literal["rgb", "rgb_diff"]


@dataclass(frozen=True)
class ClipSpec:
    """How one clip is cut from a video and shaped for the networks: built once from the data config
    (``DataConfig.clip_spec``) and handed to the dataset, the loaders, the networks' cost and export."""

    num_segments: int = 4  # K temporal segments (TSN)
    frames_per_segment: int = 2  # L frames per segment
    stride: int = 1  # frame step inside a segment
    mode: SamplingMode = "segments"  # dense: one clip of K*L frames
    modality: Modality = "rgb"  # rgb_diff: L+1 frames decoded per segment, their L differences fed
    resize: tuple[int, int] | None = None  # (h, w) at decode; None keeps the file's size
    crop_size: int = 56  # side of the square crop the network sees

    def __post_init__(self) -> None:
        if self.mode not in ("segments", "dense"):
            raise ValueError(f"unknown sampling mode {self.mode!r}; valid: segments, dense")
        if self.modality not in ("rgb", "rgb_diff"):
            raise ValueError(f"unknown modality {self.modality!r}; valid: rgb, rgb_diff")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """One clip as the networks see it, ``(K, C, L, H, W)`` (dense mode folds K*L into one segment)."""
        if self.mode == "dense":
            return (1, 3, self.num_segments * self.frames_per_segment, self.crop_size, self.crop_size)
        return (self.num_segments, 3, self.frames_per_segment, self.crop_size, self.crop_size)

    @property
    def sampled(self) -> tuple[int, int]:
        """(segments, frames per segment) to decode: RGB difference needs one more frame per segment."""
        k, _, l, _, _ = self.shape
        return k, l + int(self.modality == "rgb_diff")


def _span(frames: int, stride: int) -> int:
    """Number of source frames covered by ``frames`` frames taken ``stride`` apart."""
    return (frames - 1) * stride + 1


def _check(num_frames: int, count: int, frames: int, stride: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if count < 1 or frames < 1 or stride < 1:
        raise ValueError(f"segments, frames per segment and stride must be >= 1, got {count}, {frames}, {stride}")


def _expand(starts: np.ndarray, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """(K,) start frames -> (K, L) indices; past the end the last frame is repeated (as in TSN)."""
    idx = starts[:, None] + stride * np.arange(frames, dtype=np.int64)[None, :]
    return np.minimum(idx, num_frames - 1).astype(np.int64)


def segment_indices(
    num_frames: int,
    num_segments: int,
    frames_per_segment: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    stride: int = 1,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """TSN sampling: K equal segments, a snippet of L frames (``stride`` apart) from each.

        video  |----seg 0----|----seg 1----|----seg 2----|      tick = (num_frames - span + 1) / K
        train     ^ random      ^ random      ^ random          span = (L - 1) * stride + 1
        test        ^ centre        ^ centre        ^ centre    start_k = int(tick / 2 + tick * k)

    Train draws one start uniformly inside each segment (TSN's ``_sample_indices``; when the video has
    fewer than K possible starts, K sorted random starts; when it is shorter than one snippet, start 0).
    Test takes the centre of each segment (TSN's ``_get_test_indices``); for multi-clip testing, clip
    ``m`` of ``num_clips`` takes the point ``(m + 0.5) / num_clips`` of each segment instead, so the
    single-clip case is the centre. Videos shorter than ``span`` repeat their last frame.

    Returns:
        int64 array (num_segments, frames_per_segment), every value in ``[0, num_frames)``.
    """
    _check(num_frames, num_segments, frames_per_segment, stride)
    span = _span(frames_per_segment, stride)
    n_starts = max(num_frames - span + 1, 1)  # valid start positions
    k = np.arange(num_segments, dtype=np.float64)
    if train:
        if rng is None:
            raise ValueError("train sampling needs an rng (np.random.Generator)")
        average = n_starts // num_segments
        if average > 0:
            starts = np.arange(num_segments, dtype=np.int64) * average + rng.integers(0, average, num_segments)
        elif n_starts > 1:
            starts = np.sort(rng.integers(0, n_starts, num_segments))
        else:
            starts = np.zeros(num_segments, dtype=np.int64)
    else:
        if not 0 <= clip < num_clips:
            raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
        tick = n_starts / num_segments
        starts = (tick * (clip + 0.5) / num_clips + tick * k).astype(np.int64)
    return _expand(starts.astype(np.int64), frames_per_segment, stride, num_frames)


def dense_indices(
    num_frames: int,
    num_frames_total: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    stride: int = 1,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """One clip of ``num_frames_total`` consecutive frames (``stride`` apart): the "full video" input.

        video  |------[=========== T frames ===========]------|
        train         ^ random start
        test   start = int((num_frames - span + 1) * (clip + 0.5) / num_clips)   (the centre for one clip)

    Returns:
        int64 array (1, num_frames_total); short videos repeat their last frame.
    """
    _check(num_frames, 1, num_frames_total, stride)
    n_starts = max(num_frames - _span(num_frames_total, stride) + 1, 1)
    if train:
        if rng is None:
            raise ValueError("train sampling needs an rng (np.random.Generator)")
        start = int(rng.integers(0, n_starts))
    else:
        if not 0 <= clip < num_clips:
            raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
        start = int(n_starts * (clip + 0.5) / num_clips)
    return _expand(np.array([start], dtype=np.int64), num_frames_total, stride, num_frames)


def clip_indices(
    num_frames: int,
    num_segments: int,
    frames_per_segment: int,
    *,
    mode: SamplingMode,
    train: bool,
    rng: np.random.Generator | None = None,
    stride: int = 1,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Dispatch on ``mode``: "segments" -> (K, L) from :func:`segment_indices`, "dense" -> (1, K*L)."""
    if mode == "segments":
        return segment_indices(
            num_frames, num_segments, frames_per_segment,
            train=train, rng=rng, stride=stride, clip=clip, num_clips=num_clips,
        )
    if mode == "dense":
        return dense_indices(
            num_frames, num_segments * frames_per_segment,
            train=train, rng=rng, stride=stride, clip=clip, num_clips=num_clips,
        )
    raise ValueError(f"unknown sampling mode {mode!r}; valid: segments, dense")
