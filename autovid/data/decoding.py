"""Frame decoding and metadata probing with decord: the only module that imports decord."""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import decord
import numpy as np


class VideoInfo(NamedTuple):
    """Stream metadata found by :func:`probe`."""

    num_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds, num_frames / fps


class ProbeError(Exception):
    """A file that is not a usable video; ``reason`` is a short machine-readable tag for the manifest."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DecoderLimitation(ValueError):
    """decord cannot decode at the requested frame size (its bug, independent of the file)."""


def _size(width: int | None, height: int | None) -> tuple[int, int]:
    # decord resizes at decode only when given both sides; one alone is ignored or distorts, so
    # either both are set or neither (-1 = native size).
    if (width is None) != (height is None):
        raise ValueError("pass both width and height, or neither")
    return (-1, -1) if width is None else (int(width), int(height))


def open_reader(path: str | Path, *, width: int | None = None, height: int | None = None) -> decord.VideoReader:
    """A single-threaded decord reader that resizes at decode to ``width`` x ``height`` (both or neither)."""
    w, h = _size(width, height)
    return decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=1)


class ReaderCache:
    """A small LRU of open readers keyed by (path, width, height): one per worker process.

    ``capacity=0`` (the dataset's default) opens a fresh reader per call. That is faster for TSN
    sampling: decord 0.6 takes ~1.7x longer for ``get_batch`` on a reader that already decoded
    elsewhere in the file than on a fresh one (30 vs 52 ms per 4x2 clip of a 7 s 320x240 MPEG-4 AVI,
    while opening costs 3-4 ms). A capacity pays off only where opening dominates (huge containers).
    Readers hold native decoder state, so the cache pickles as empty, and a cache used in a forked
    child (a DataLoader worker) first abandons the readers it inherited: freeing them there hangs in
    decord's destructor.
    """

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self._readers: OrderedDict[tuple[str, int, int], decord.VideoReader] = OrderedDict()
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            for reader in self._readers.values():
                reader._handle = None  # not ours to free: decord's __del__ then skips the native call
            self._readers.clear()
            self._pid = os.getpid()

    def get(self, path: str | Path, *, width: int | None, height: int | None) -> decord.VideoReader:
        """The cached reader for ``path`` at this size, opening it (and evicting the oldest) on a miss."""
        self._after_fork()
        if self.capacity <= 0:
            return open_reader(path, width=width, height=height)
        key = (str(path), *_size(width, height))
        reader = self._readers.get(key)
        if reader is None:
            reader = open_reader(path, width=width, height=height)
            self._readers[key] = reader
            while len(self._readers) > self.capacity:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(key)
        return reader

    def discard(self, path: str | Path) -> None:
        """Drop every reader of ``path`` (after a decode error its state is suspect)."""
        self._after_fork()
        for key in [k for k in self._readers if k[0] == str(path)]:
            del self._readers[key]

    def clear(self) -> None:
        self._after_fork()
        self._readers.clear()

    def __len__(self) -> int:
        return len(self._readers)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"])


def read_frames(
    path: str | Path,
    indices: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    cache: ReaderCache | None = None,
) -> np.ndarray:
    """Decode only the frames at ``indices`` (any shape, repeats allowed), resized at decode.

        indices (N,) ──unique+sort──▶ decord get_batch ──▶ uint8 [U, H, W, 3] ──gather──▶ [N, H, W, 3]

    Repeated indices (short videos, overlapping multi-clip draws) are decoded once; sorted order
    lets decord seek forward only.

    Returns:
        uint8 array [indices.size, height, width, 3] (native size when width/height are None).
    """
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    unique, inverse = np.unique(flat, return_inverse=True)
    reader = cache.get(path, width=width, height=height) if cache is not None else open_reader(
        path, width=width, height=height
    )
    n = len(reader)
    if unique.size and (unique[0] < 0 or unique[-1] >= n):
        raise IndexError(f"frame index out of range [0, {n}) in {path}")
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except decord.DECORDError as exc:
        if "size must exactly match" in str(exc):
            # decord 0.6 fails on a few output widths (2, 4, 6, 8, 12, 16, 24, 48, 72 on the PyPI build),
            # for every file: a configuration problem, not a broken video.
            what = f"{width} pixels wide" if width is not None else f"at the native size of {path}"
            raise DecoderLimitation(f"decord cannot produce frames {what}; choose another width") from None
        raise
    return frames if unique.size == flat.size and np.array_equal(unique, flat) else frames[inverse]


def probe(path: str | Path) -> VideoInfo:
    """Open a file and decode its first and last frame; raise :class:`ProbeError` when unusable.

    Run it in a child process: decord aborts the whole process on some corrupt files (for instance an
    AVI header claiming billions of frames makes it throw ``std::bad_alloc`` from C++).
    """
    p = Path(path)
    if not p.exists():
        raise ProbeError("missing", f"no such file: {p}")
    if p.stat().st_size == 0:
        raise ProbeError("empty", "zero-byte file")
    try:
        reader = open_reader(p)
    except Exception as exc:  # decord raises RuntimeError / DECORDError on anything it cannot parse
        raise ProbeError("unreadable", _one_line(exc)) from None
    num_frames = len(reader)
    if num_frames <= 0:
        raise ProbeError("no_frames", "the video stream has no frames")
    try:
        first = reader[0].asnumpy()
        reader[num_frames - 1].asnumpy()
    except Exception as exc:
        raise ProbeError("decode_error", _one_line(exc)) from None
    fps = float(reader.get_avg_fps() or 0.0)
    height, width = int(first.shape[0]), int(first.shape[1])
    duration = num_frames / fps if fps > 0 else 0.0
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height, duration=duration)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


class ProbeOutcome(NamedTuple):
    """What probing one file found: ``info`` when usable, else the quarantine ``reason`` and ``detail``."""

    info: VideoInfo | None
    reason: str = ""
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps({"info": self.info._asdict() if self.info else None, "reason": self.reason,
                           "detail": self.detail})

    @classmethod
    def from_json(cls, text: str) -> ProbeOutcome:
        d = json.loads(text)
        return cls(VideoInfo(**d["info"]) if d["info"] else None, d["reason"], d["detail"])


def probe_outcome(path: str | Path) -> ProbeOutcome:
    """:func:`probe` that reports instead of raising (a Python-level failure quarantines only its file)."""
    try:
        return ProbeOutcome(probe(path))
    except ProbeError as exc:
        return ProbeOutcome(None, exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - any other failure is a property of the file
        return ProbeOutcome(None, "unreadable", _one_line(exc))


def serve_probes(requests: TextIO | None = None, replies: TextIO | None = None) -> None:
    """The probing child's loop: one JSON path per input line in, one JSON outcome per line out.

    Run by :func:`autovid.data.manifest.probe_files` as ``python -c`` in a subprocess, so that a file
    on which decord aborts or segfaults takes down only that process, and the parent knows which file
    it was: the one whose reply never came.
    """
    requests, replies = requests or sys.stdin, replies or sys.stdout
    for line in requests:
        replies.write(probe_outcome(json.loads(line)).to_json() + "\n")
        replies.flush()
