"""VideoClipDataset on real files: the frames it decodes, shapes per mode, seeding, and failure replacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from autovid.data.dataset import VideoClipDataset
from autovid.data.decoding import DecoderLimitation
from autovid.data.loaders import EpochSampler, worker_init
from autovid.data.manifest import build_manifest
from autovid.data.sampling import segment_indices
from autovid.data.synthetic import write_video
from autovid.data.transforms import MEAN, STD
from tests.tiny import with_clip_spec

FRAMES = {"run": [24, 30, 18, 40], "sit": [24, 12, 33, 20]}  # frames per video, per class


@pytest.fixture(scope="module")
def manifest(module_kit) -> pd.DataFrame:
    for cls, counts in FRAMES.items():
        for g, n in enumerate(counts, start=1):
            module_kit.video(f"clips/{cls}/v_{cls}_g{g:02d}_c01", n)
    return build_manifest(module_kit.root / "clips", "folder", workers=2)


def frame_ids(kit, clip: torch.Tensor) -> np.ndarray:
    """Decode the frame index shown in each frame of a test-transformed clip [..., C, L, H, W] -> [..., L]."""
    pixels = (clip * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)) * 255
    lead = pixels.shape[:-4]
    frames = pixels.movedim(-4, -1).reshape(-1, *pixels.shape[-2:], 3).round().clamp(0, 255).byte().numpy()
    return kit.decoded_index(frames).reshape(*lead, pixels.shape[-3])


def make(manifest: pd.DataFrame, **kw) -> VideoClipDataset:
    args = dict(split=None, num_segments=3, frames_per_segment=2, crop_size=32, train=False, seed=0)
    return VideoClipDataset(manifest, **with_clip_spec(**{**args, **kw}))


def test_test_mode_decodes_the_tsn_centre_frames(manifest, kit) -> None:
    ds = make(manifest)
    assert len(ds) == 8 and ds.clip_shape == (3, 3, 2, 32, 32)
    for i, rec in enumerate(ds.records):
        clip, label = ds[i]
        assert clip.shape == (3, 3, 2, 32, 32) and clip.dtype == torch.float32 and label == rec.label
        assert np.array_equal(frame_ids(kit, clip), segment_indices(rec.num_frames, 3, 2, train=False))


def test_dense_and_multi_clip_shapes_and_frames(manifest, kit) -> None:
    dense = make(manifest, mode="dense", num_segments=2, frames_per_segment=4)
    clip, _ = dense[0]
    assert clip.shape == (1, 3, 8, 32, 32)
    assert frame_ids(kit, clip).tolist() == [list(range(8, 16))]  # centre of 24 frames
    multi = make(manifest, num_clips=3, resize=(28, 28), crop_size=28)
    clip, _ = multi[0]
    assert clip.shape == multi.clip_shape == (3, 3, 3, 2, 28, 28)
    n = multi.records[0].num_frames
    expected = np.stack([segment_indices(n, 3, 2, train=False, clip=m, num_clips=3) for m in range(3)])
    assert np.array_equal(frame_ids(kit, clip), expected)


def test_train_items_depend_on_seed_epoch_and_index_only(manifest, kit) -> None:
    a = make(manifest, train=True, seed=5, scale=(1.0, 1.0), hflip=False)
    b = make(manifest, train=True, seed=5, scale=(1.0, 1.0), hflip=False)
    assert torch.equal(a[(3, 7)][0], b[(3, 7)][0])
    ids = {tuple(frame_ids(kit, a[(3, e)][0]).ravel()) for e in range(6)}
    assert len(ids) > 1  # a new epoch draws new frames
    n = a.records[3].num_frames
    for e in range(6):
        got = frame_ids(kit, a[(3, e)][0])
        rng = np.random.default_rng([5, e, 3])
        assert np.array_equal(got, segment_indices(n, 3, 2, train=True, rng=rng))
    a.set_epoch(4)
    assert a.epoch == 4 and torch.equal(a[3][0], b[(3, 4)][0])
    full = make(manifest, train=True, seed=5)
    assert full[(0, 0)][0].shape == (3, 3, 2, 32, 32)


def test_batches_do_not_depend_on_worker_count(manifest) -> None:
    ds = make(manifest, train=True, seed=1, crop_size=24)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(ds, batch_size=3, sampler=EpochSampler(range(len(ds)), shuffle=True, seed=9),
                            num_workers=workers, worker_init_fn=worker_init if workers else None)
        return [x for _ in range(2) for x, _ in loader]  # two epochs

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 6 and all(torch.equal(s, p) for s, p in zip(serial, parallel))
    assert not torch.equal(serial[0], serial[3])  # epoch 2 reshuffles


def test_a_file_failing_at_train_time_is_replaced_by_its_class(manifest, tmp_path: Path, kit) -> None:
    df = manifest.copy()
    victim = Path(df.loc[0, "path"])
    copy = tmp_path / victim.name
    copy.write_bytes(victim.read_bytes())
    df.loc[0, "path"] = str(copy)
    ds = make(df, train=True)
    copy.write_bytes(np.random.default_rng(0).bytes(2000))  # broken after indexing
    label = int(df.loc[0, "label"])
    clip, got = ds[(0, 0)]
    assert got == label and clip.shape == (3, 3, 2, 32, 32) and ds.failures == 1
    # workers count too: the counter lives in shared memory
    loader = DataLoader(ds, batch_size=4, sampler=EpochSampler([0, 0, 1, 0], shuffle=False), num_workers=2,
                        worker_init_fn=worker_init)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == [label, label, int(df.loc[1, "label"]), label] and ds.failures == 4


def test_a_class_with_no_decodable_video_raises(tmp_path: Path, kit) -> None:
    kit.video("solo/only/v_only_g01_c01", 8)
    df = build_manifest(tmp_path / "solo", "folder", workers=1)
    ds = make(df)
    Path(df.loc[0, "path"]).write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="failed to decode"):
        ds[0]


def test_a_size_decord_cannot_produce_is_an_error_not_a_bad_file(manifest) -> None:
    ds = make(manifest, resize=(24, 24), crop_size=24)  # decord 0.6 cannot output 24-pixel-wide frames
    try:
        ds[0]
    except DecoderLimitation as err:
        assert "24 pixels wide" in str(err) and ds.failures == 0
    else:
        pytest.skip("this decord build decodes 24-pixel-wide frames")


@pytest.mark.parametrize("train", [False, True])
def test_rgb_diff_is_the_difference_of_one_more_decoded_frame(manifest, train) -> None:
    """TSN RGB difference: same shape as RGB, equal to the differences of L+1 frames drawn with the same rng."""
    diff = make(manifest, modality="rgb_diff", train=train, stride=2)
    plain = make(manifest, frames_per_segment=3, train=train, stride=2)
    assert diff.clip_shape == (3, 3, 2, 32, 32)
    for i in range(len(diff)):
        d, _ = diff[(i, 1)]
        p, _ = plain[(i, 1)]
        assert d.shape == (3, 3, 2, 32, 32)
        torch.testing.assert_close(d, p[:, :, 1:] - p[:, :, :-1])


def test_rgb_diff_dense_and_multi_clip(manifest, kit) -> None:
    dense = make(manifest, modality="rgb_diff", mode="dense", num_segments=2, frames_per_segment=4)
    clip, _ = dense[0]
    assert clip.shape == dense.clip_shape == (1, 3, 8, 32, 32)
    frames = make(manifest, mode="dense", num_segments=1, frames_per_segment=9)[0][0]
    torch.testing.assert_close(clip, frames.diff(dim=2))
    multi = make(manifest, modality="rgb_diff", num_clips=2)
    assert multi[0][0].shape == multi.clip_shape == (2, 3, 3, 2, 32, 32)


def test_rgb_diff_of_a_static_video_is_zero(kit) -> None:
    ramp = np.linspace(0, 255, 32, dtype=np.float32)
    image = np.full((32, 32, 3), 128, np.float32)
    image[..., 0], image[..., 1] = ramp[None, :], ramp[:, None]  # smooth gradients: no codec ringing
    path = kit.root / "still" / "static" / "v_static_g01_c01.avi"
    path.parent.mkdir(parents=True)
    write_video(path, np.repeat(image.astype(np.uint8)[None], 20, axis=0))
    frame = build_manifest(path.parent.parent, "folder", workers=1)
    clip, _ = make(frame, modality="rgb_diff", train=True)[0]
    assert clip.abs().max() < 0.05  # codec noise only; the normalized frames themselves span several units


def test_unknown_modality_is_rejected(manifest) -> None:
    with pytest.raises(ValueError, match="unknown modality 'flow'"):
        make(manifest, modality="flow")
