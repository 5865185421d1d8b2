"""Fixtures for the data tests: real video files written with PyAV, and broken files made from them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from autovid.data.synthetic import CODECS, write_video

INDEX_BITS = 6  # frame i shows i in binary as 6 black/white vertical bands: survives codecs and resizing


def indexed_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """uint8 [T, H, W, 3]: frame i shows its index as INDEX_BITS vertical bands (white = 1, MSB left)."""
    if num_frames > 2**INDEX_BITS:
        raise ValueError(f"at most {2**INDEX_BITS} indexed frames")
    band = np.minimum(np.arange(width) * INDEX_BITS // width, INDEX_BITS - 1)  # band of each column
    bits = (np.arange(num_frames)[:, None] >> (INDEX_BITS - 1 - band[None, :])) & 1  # (T, W)
    return np.broadcast_to((bits * 255).astype(np.uint8)[:, None, :, None], (num_frames, height, width, 3)).copy()


def decoded_index(frames: np.ndarray) -> np.ndarray:
    """Inverse of :func:`indexed_frames` for decoded (lossy, possibly resized) frames [N, H, W, 3] -> (N,)."""
    width = frames.shape[2]
    centres = ((np.arange(INDEX_BITS) + 0.5) * width / INDEX_BITS).astype(int)
    bits = frames[:, :, centres, :].mean(axis=(1, 3)) > 127  # (N, INDEX_BITS)
    return (bits * (1 << np.arange(INDEX_BITS - 1, -1, -1))).sum(axis=1).astype(np.int64)


def write_indexed_video(path: Path, num_frames: int = 24, *, codec: str = "mpeg4", height: int = 32,
                        width: int = 32, fps: int = 25) -> Path:
    path = path.with_suffix(CODECS[codec][1])
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, indexed_frames(num_frames, height, width), codec=codec, fps=fps)


def make_truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_zero_byte(dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def make_random_bytes(dst: Path, n: int = 4096, seed: int = 0) -> Path:
    dst.write_bytes(np.random.default_rng(seed).bytes(n))
    return dst


def make_zeroed(src: Path, dst: Path) -> Path:
    """A copy with its headers zeroed out (a file with the right extension but no recognisable container)."""
    data = bytearray(src.read_bytes())
    data[: min(len(data), 2048)] = bytes(min(len(data), 2048))
    dst.write_bytes(bytes(data))
    return dst


def make_decoder_crasher(src_avi: Path, dst: Path) -> Path:
    """An AVI whose stream header claims ~3.6e9 frames: decord throws std::bad_alloc and aborts the process."""
    data = bytearray(src_avi.read_bytes())
    strh = data.index(b"strh")
    # AVISTREAMHEADER after the 8-byte chunk header: fccType, fccHandler, dwFlags, wPriority+wLanguage,
    # dwInitialFrames, dwScale, dwRate, dwStart, then dwLength at offset 32.
    offset = strh + 8 + 32
    (length,) = struct.unpack_from("<I", data, offset)
    struct.pack_into("<I", data, offset, length | 0xDA000000)
    dst.write_bytes(bytes(data))
    return dst


def write_ucf_tree(root: Path, *, classes: dict[str, list[tuple[str, int]]], splits: Path | None = None,
                   test_groups: int = 1, crlf: bool = True) -> Path:
    """A small UCF101-layout dataset: ``classes`` maps folder -> [(file stem, frames)], split by group.

    Split files go to ``splits`` (default ``root/ucfTrainTestlist``) with Windows line endings like the
    official archive.
    """
    splits = splits or root / "ucfTrainTestlist"
    splits.mkdir(parents=True, exist_ok=True)
    nl = "\r\n" if crlf else "\n"
    train, test = [], []
    for label, (folder, videos) in enumerate(classes.items(), start=1):
        for stem, frames in videos:
            path = write_indexed_video(root / folder / stem, frames)
            rel = f"{folder}/{path.name}"
            group = int(stem.split("_g")[1][:2])
            (test if group <= test_groups else train).append((rel, label))
    (splits / "classInd.txt").write_text(nl.join(f"{i} {c}" for i, c in enumerate(classes, 1)) + nl)
    (splits / "trainlist01.txt").write_text(nl.join(f"{r} {lab}" for r, lab in train) + nl)
    (splits / "testlist01.txt").write_text(nl.join(r for r, _ in test) + nl)
    return root


class VideoKit:
    """The helpers above bound to a test's ``tmp_path`` (conftest modules cannot be imported by tests)."""

    indexed_frames = staticmethod(indexed_frames)
    decoded_index = staticmethod(decoded_index)
    truncated = staticmethod(make_truncated)
    zero_byte = staticmethod(make_zero_byte)
    random_bytes = staticmethod(make_random_bytes)
    zeroed = staticmethod(make_zeroed)
    crasher = staticmethod(make_decoder_crasher)
    ucf_tree = staticmethod(write_ucf_tree)

    def __init__(self, root: Path) -> None:
        self.root = root

    def video(self, name: str, num_frames: int = 24, **kw) -> Path:
        """A real video ``root/name`` (extension from the codec) whose frame i shows i in binary."""
        return write_indexed_video(self.root / name, num_frames, **kw)


@pytest.fixture
def kit(tmp_path: Path) -> VideoKit:
    return VideoKit(tmp_path)


@pytest.fixture(scope="module")
def module_kit(tmp_path_factory: pytest.TempPathFactory) -> VideoKit:
    """A :class:`VideoKit` whose files are shared by the tests of one module."""
    return VideoKit(tmp_path_factory.mktemp("videos"))
