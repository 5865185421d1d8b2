"""Temporal sampling: TSN segment and dense indices on ordinary and edge-case videos."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autovid.data.sampling import clip_indices, dense_indices, segment_indices


def tsn_test_offsets(num_frames: int, k: int, span: int) -> list[int]:
    """The TSN reference (yjxiong/tsn-pytorch, TSNDataSet._get_test_indices)."""
    tick = (num_frames - span + 1) / float(k)
    return [int(tick / 2.0 + tick * x) for x in range(k)]


CASES = list(itertools.product([1, 2, 5, 7, 24, 100, 301], [1, 3, 8], [1, 2, 8], [1, 2, 3]))


@pytest.mark.parametrize("train", [True, False])
def test_shape_dtype_and_range_on_all_cases(train: bool) -> None:
    rng = np.random.default_rng(0)
    for n, k, l, stride in CASES:
        idx = segment_indices(n, k, l, train=train, rng=rng, stride=stride)
        assert idx.shape == (k, l) and idx.dtype == np.int64
        assert idx.min() >= 0 and idx.max() < n, (n, k, l, stride)
        # within a snippet frames advance by the stride until they are clamped to the last frame
        steps = np.diff(idx, axis=1)
        assert np.all((steps == stride) | ((steps >= 0) & (idx[:, 1:] == n - 1)))


def test_test_mode_matches_tsn_reference() -> None:
    for n, k, l, stride in CASES:
        span = (l - 1) * stride + 1
        if n < span:
            continue
        idx = segment_indices(n, k, l, train=False, stride=stride)
        assert idx[:, 0].tolist() == tsn_test_offsets(n, k, span)


def test_train_starts_stay_inside_their_segment() -> None:
    rng = np.random.default_rng(1)
    n, k, l = 100, 4, 3
    avg = (n - l + 1) // k
    starts = np.stack([segment_indices(n, k, l, train=True, rng=rng)[:, 0] for _ in range(500)])
    for seg in range(k):
        assert starts[:, seg].min() >= seg * avg and starts[:, seg].max() < (seg + 1) * avg
    assert len(np.unique(starts[:, 0])) == avg  # every start in the segment gets drawn


def test_train_is_deterministic_for_a_generator_and_varies_across_draws() -> None:
    a = segment_indices(300, 3, 8, train=True, rng=np.random.default_rng(7))
    b = segment_indices(300, 3, 8, train=True, rng=np.random.default_rng(7))
    c = segment_indices(300, 3, 8, train=True, rng=np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_short_video_repeats_the_last_frame() -> None:
    # 5 frames, 2 segments x 4 frames: snippets start at 0 and run off the end
    idx = segment_indices(5, 2, 4, train=False)
    assert idx.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    idx = segment_indices(3, 2, 4, train=False)
    assert idx.tolist() == [[0, 1, 2, 2], [0, 1, 2, 2]]
    one = segment_indices(1, 3, 2, train=True, rng=np.random.default_rng(0))
    assert np.all(one == 0)


def test_fewer_frames_than_segments_draws_sorted_starts() -> None:
    idx = segment_indices(4, 8, 1, train=True, rng=np.random.default_rng(0))
    assert idx.shape == (8, 1) and np.all(np.diff(idx[:, 0]) >= 0) and idx.max() < 4


def test_single_segment_single_frame_and_stride() -> None:
    assert segment_indices(10, 1, 1, train=False).tolist() == [[5]]
    assert segment_indices(10, 1, 10, train=False).tolist() == [list(range(10))]
    assert segment_indices(20, 2, 3, train=False, stride=4).tolist() == [[3, 7, 11], [9, 13, 17]]


def test_multi_clip_test_offsets_spread_within_segments() -> None:
    n, k, l = 100, 2, 1
    clips = [segment_indices(n, k, l, train=False, clip=m, num_clips=4)[:, 0].tolist() for m in range(4)]
    assert clips == [[6, 56], [18, 68], [31, 81], [43, 93]]
    assert segment_indices(n, k, l, train=False, clip=0, num_clips=1).tolist() == \
        segment_indices(n, k, l, train=False).tolist()
    with pytest.raises(ValueError):
        segment_indices(n, k, l, train=False, clip=4, num_clips=4)


def test_dense_mode() -> None:
    assert dense_indices(100, 8, train=False).tolist() == [list(range(46, 54))]
    assert dense_indices(100, 4, train=False, stride=10).tolist() == [[35, 45, 55, 65]]
    assert dense_indices(3, 5, train=False).tolist() == [[0, 1, 2, 2, 2]]
    rng = np.random.default_rng(0)
    starts = {int(dense_indices(12, 4, train=True, rng=rng)[0, 0]) for _ in range(300)}
    assert starts == set(range(9))
    assert clip_indices(100, 3, 4, mode="dense", train=False).shape == (1, 12)
    assert clip_indices(100, 3, 4, mode="segments", train=False).shape == (3, 4)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="rng"):
        segment_indices(10, 2, 2, train=True)
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 2, 2, train=False)
    with pytest.raises(ValueError):
        segment_indices(10, 0, 2, train=False)
    with pytest.raises(ValueError, match="mode"):
        clip_indices(10, 2, 2, mode="full", train=False)  # type: ignore[arg-type]
