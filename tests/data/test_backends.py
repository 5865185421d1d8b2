"""Decoder backends side by side: the same probe verdicts, frames and substitution counts from decord, PyAV and
TorchCodec on real files written by the tests (MPEG-4, H.264 with B-frames, MJPEG; odd sizes and frame rates).

Tolerances (per uint8 pixel channel, against PyAV, which every machine has):
  native size  max |Δ| <= NATIVE_MAX: the backends run FFmpeg's own decoders (measured: identical frames)
  resized      mean |Δ| <= RESIZED_MEAN and every frame's index band pattern intact: decord and PyAV scale with
               swscale's bilinear filter (measured: identical), TorchCodec with its own bilinear resize
               (measured: mean 0.8 on these band patterns, 1.7 on the textured synthetic clips)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autovid.config import DataConfig
from autovid.data.backends import BACKENDS, DECODERS, installed, open_reader, resolve
from autovid.data.dataset import VideoClipDataset
from autovid.data.decoding import DecodingProcess, probe_outcome, read_frames
from autovid.data.manifest import build_manifest, manifest_decoder, probe_files, read_manifest, write_manifest
from autovid.data.sampling import ClipSpec
from autovid.data.synthetic import ensure_synthetic
from autovid.errors import UserError

NATIVE_MAX = 2
RESIZED_MEAN = 2.5


def _usable(backend: str) -> str | None:
    """Why ``backend`` cannot run here (None when it can)."""
    try:
        resolve(backend)
    except UserError as exc:
        return str(exc)
    return None


# Every backend the suite can run. `make install` brings decord (x86-64 Linux), PyAV, TorchCodec and FFmpeg's
# shared libraries; a machine without one of them (decord off x86-64, no FFmpeg libraries for TorchCodec)
# skips that backend's cases with the reason.
BACKEND_PARAMS = [pytest.param(b, marks=pytest.mark.skipif(_usable(b) is not None, reason=str(_usable(b))))
                  for b in BACKENDS]

# (name, codec, frames, width, height, fps): the formats the pipeline meets, at sizes that are no multiple of 16
FILES = [
    ("mpeg4_avi", "mpeg4", 30, 40, 32, 25),
    ("h264_mp4", "h264", 30, 38, 26, 30),  # libx264's defaults: B-frames, so decode order != presentation order
    ("mjpeg_avi", "mjpeg", 20, 66, 18, 12),
    ("mpeg4_odd", "mpeg4", 17, 34, 22, 7),
]


@pytest.fixture(scope="module")
def videos(module_kit) -> dict[str, tuple]:
    return {name: (module_kit.video(name, n, codec=codec, width=w, height=h, fps=fps), n, w, h, fps)
            for name, codec, n, w, h, fps in FILES}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The embedded MPEG-4 benchmark at a tiny size, indexed with PyAV (the reference)."""
    root = ensure_synthetic(tmp_path_factory.mktemp("synth"), classes=2, videos_per_class=4, groups=4, test_groups=1,
                            size=32, frames=12)
    return build_manifest(root, "ucf101", workers=1, decoder="pyav")


@pytest.fixture(scope="module")
def broken(module_kit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken files with the reason every backend gives them."""
    tmp = tmp_path_factory.mktemp("broken")
    good = module_kit.video("good", 24)
    return {
        "missing": tmp / "nope.avi",
        "empty": module_kit.zero_byte(tmp / "zero.avi"),
        "unreadable": module_kit.random_bytes(tmp / "noise.avi"),
        "truncated": module_kit.truncated(good, tmp / "half.avi"),
    }


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_probe_verdicts_and_frames_match_pyav(backend: str, videos: dict, synthetic: pd.DataFrame, broken: dict,
                                               kit) -> None:
    """Each backend in its isolating child processes against PyAV in this process (the reference)."""
    paths = [str(v[0]) for v in videos.values()] + list(synthetic["path"]) + [str(p) for p in broken.values()]
    got = probe_files(paths, decoder=backend, workers=1)
    want = [probe_outcome(p, "pyav") for p in paths]
    assert [o.reason for o in got] == [o.reason for o in want] == [""] * (len(paths) - 4) + [
        "missing", "empty", "unreadable", "unreadable"]
    for mine, ref in zip((o.info for o in got[:-4]), (o.info for o in want[:-4])):
        assert mine is not None and ref is not None
        assert (mine.num_frames, mine.width, mine.height) == (ref.num_frames, ref.width, ref.height)
        assert (mine.fps, mine.duration) == pytest.approx((ref.fps, ref.duration))  # 7.000000000000001 vs 7.0
    for (_, n, w, h, fps), outcome in zip(videos.values(), got):
        assert outcome.info is not None and (outcome.info.num_frames, outcome.info.width, outcome.info.height) == (
            n,
            w,
            h,
        )
        assert outcome.info.fps == pytest.approx(fps)
    isolated = DecodingProcess(backend=backend)
    try:
        for path, n, w, h, _ in videos.values():
            indices = np.array([n - 1, 0, 5, 5, n // 2, n // 2 + 1, 3])  # unsorted, repeated, both ends
            native = isolated.read_frames(path, indices)
            assert native.shape == (7, h, w, 3) and kit.decoded_index(native).tolist() == indices.tolist()
            assert np.abs(native.astype(int) - read_frames(path, indices, backend="pyav")).max() <= NATIVE_MAX
            small = isolated.read_frames(path, indices, width=30, height=18)
            assert small.shape == (7, 18, 30, 3) and kit.decoded_index(small).tolist() == indices.tolist()
            ref = read_frames(path, indices, width=30, height=18, backend="pyav")
            assert np.abs(small.astype(int) - ref).mean() <= RESIZED_MEAN
        for path, n in zip(synthetic["path"].head(4), synthetic["num_frames"].head(4)):
            every = np.arange(int(n))
            diff = isolated.read_frames(path, every).astype(int) - read_frames(path, every, backend="pyav")
            assert np.abs(diff).max() <= NATIVE_MAX
    finally:
        isolated.close()


def test_decords_crashes_are_its_own(module_kit, tmp_path) -> None:
    """A bogus AVI frame count aborts decord (quarantined as crashed); PyAV indexes the packets and reads the real
    frames, like TorchCodec. The reasons mean the same; what a backend can read differs with its FFmpeg."""
    crasher = module_kit.crasher(module_kit.video("src", 24), tmp_path / "crash.avi")
    pyav = probe_outcome(crasher, "pyav")
    assert pyav.info is not None and pyav.info.num_frames == 24
    if installed("decord"):
        (decord,) = probe_files([str(crasher)], decoder="decord", workers=1)
        assert decord.reason == "crashed"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_clips_and_substitution_counts_match(backend: str, synthetic: pd.DataFrame, tmp_path) -> None:
    """The same clip tensors from a dataset of each backend, and a file broken after indexing is counted once
    in ``substituted`` (``data/substituted/<split>``) whichever backend found it."""
    manifest = synthetic.copy()
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\0" * 4096)
    manifest.loc[0, "path"] = str(broken)  # listed as usable, undecodable now
    spec = ClipSpec(num_segments=2, frames_per_segment=2, crop_size=24, resize=(28, 30))
    common = dict(split=None, spec=spec, train=True, seed=3)
    datasets = [VideoClipDataset(manifest, decoder=backend, **common),  # isolated, as in training
                VideoClipDataset(manifest, decoder="pyav", isolate=False, **common)]  # the reference, in this process
    try:
        for i in range(len(manifest)):
            clip, ref = (ds[(i, 0)][0] for ds in datasets)
            assert clip.shape == ref.shape == (2, 3, 2, 24, 24)
            # normalised pixels: RESIZED_MEAN / 255 / std (0.225) per channel
            assert float((clip - ref).abs().mean()) <= RESIZED_MEAN / 255 / 0.225
        assert [ds.substituted for ds in datasets] == [1, 1]
        assert [ds.substituted_paths for ds in datasets] == [[str(broken)], [str(broken)]]
    finally:
        assert datasets[0].decoder is not None
        datasets[0].decoder.close()


def test_the_manifest_records_its_decoder(synthetic: pd.DataFrame, tmp_path) -> None:
    assert manifest_decoder(synthetic) == "pyav"
    path = write_manifest(synthetic, tmp_path / "m.parquet")
    assert manifest_decoder(read_manifest(path)) == "pyav"
    legacy = synthetic.copy()
    legacy.attrs = {}
    assert manifest_decoder(read_manifest(write_manifest(legacy, tmp_path / "old.parquet"))) is None


def test_names_resolve_or_fail_in_one_line() -> None:
    assert resolve("auto") == ("decord" if installed("decord") else "pyav")
    assert set(DECODERS) == {"auto", *BACKENDS} and resolve("pyav") == "pyav"
    with pytest.raises(UserError, match="unknown decoder 'ffmpeg'; valid: auto, decord, pyav, torchcodec"):
        resolve("ffmpeg")
    with pytest.raises(UserError, match="unknown decoder"):
        open_reader("nvdec", "x.avi")
    assert DataConfig().decoder == "auto"
    with pytest.raises(ValueError, match="decoder"):
        DataConfig(decoder="ffmpeg")  # type: ignore[arg-type]
