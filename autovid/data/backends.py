"""Video decoder backends (decord, PyAV, TorchCodec) behind one reader interface; the only importers of each.

    open_reader(backend, path, width, height) ─▶ Reader: num_frames, fps, get_batch(sorted unique indices)
                                                          ─▶ uint8 [U, H, W, 3] RGB, resized at decode

What every backend means by the same words (so a manifest, a quarantine reason or a frame index does not
depend on which backend read the file):

- ``num_frames``: the frames of the first video stream, in presentation order. decord and TorchCodec
  (``seek_mode="exact"``) index every packet of the file when they open it; the PyAV reader does the same
  (one demux pass, no decoding), so frame ``i`` is the i-th presentation timestamp for all three.
- ``fps``: the stream's average frame rate.
- resizing happens at decode, to exactly ``width`` x ``height`` (both or neither): decord and PyAV through
  FFmpeg's swscale (bilinear: the two give identical frames), TorchCodec through its ``Resize`` decoder
  transform (bilinear too, through its own FFmpeg path).
  Frames therefore differ slightly between backends after a resize (the parity tests state by how much);
  at the native size they come from the same FFmpeg decoders.

Each backend's package is imported only when that backend is used: decord has wheels for x86-64 Linux only
and TorchCodec is an optional extra, so neither may be required to import autovid.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import platform
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autovid.errors import UserError

BACKENDS: tuple[str, ...] = ("decord", "pyav", "torchcodec")
DECODERS: tuple[str, ...] = ("auto", *BACKENDS)  # the values of data.decoder
DECODER_BACKEND_PARAM = "data.decoder_backend"  # the MLflow param beside data.decoder: the backend `auto` meant
_MODULES = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec"}
_INSTALL = {
    "decord": "decord publishes wheels for x86-64 Linux only (pip install decord there); use data.decoder=pyav",
    "pyav": "pip install av",
    "torchcodec": (
        "pip install 'autovid[torchcodec]', and FFmpeg's shared libraries (4 to 8) where the system lacks them"
    ),
}


class DecoderLimitation(ValueError):
    """The backend cannot decode at the requested frame size (its bug, independent of the file)."""


class Reader(Protocol):
    """An open video: its frame count and rate, and the frames at sorted unique indices."""

    num_frames: int
    fps: float

    def get_batch(self, indices: list[int]) -> np.ndarray:
        """uint8 [len(indices), H, W, 3] RGB frames at ``indices`` (sorted, unique, in range)."""
        ...

    def frame(self, index: int) -> np.ndarray:
        """One uint8 [H, W, 3] frame: what probing decodes."""
        ...

    def abandon(self) -> None:
        """Forget native state inherited through fork() without freeing it (it belongs to the parent)."""
        ...


def decord_wheel_platform() -> bool:
    """Whether decord's only wheel (manylinux x86-64) fits this machine: the platform marker in pyproject.toml."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def installed(backend: str) -> bool:
    """Whether ``backend``'s package can be imported here (without importing it)."""
    return importlib.util.find_spec(_MODULES[backend]) is not None


def resolve(name: str) -> str:
    """The backend ``data.decoder=name`` means on this machine: ``auto`` is decord where it is installed, else PyAV.

    Raises :class:`UserError` for an unknown name or a backend whose package is not installed.
    """
    if name not in DECODERS:
        raise UserError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    if name == "auto":
        return "decord" if installed("decord") else "pyav"
    if not installed(name):
        raise UserError(f"data.decoder={name}: its package is not installed ({_INSTALL[name]})")
    if name == "torchcodec":
        problem = _torchcodec_problem()
        if problem is not None:
            raise UserError(f"data.decoder=torchcodec: {problem}")
    return name


@functools.cache
def _torchcodec_problem() -> str | None:
    """Why TorchCodec cannot decode video here (its FFmpeg libraries do not load), or None.

    Checked once per process before any file is opened: otherwise every video would be quarantined as
    unreadable, a broken installation reported as a broken dataset.
    """
    try:
        import torchcodec  # older releases (0.13) load FFmpeg here, and fail without it

        if getattr(torchcodec, "ffmpeg_major_version", None) is None:  # later releases load it on first use
            from torchcodec import _internally_replaced_utils as utils

            utils.load_core_libraries()  # type: ignore[attr-defined]  # absent from the installed 0.13, present later
    except Exception as exc:  # noqa: BLE001 - OSError, RuntimeError or ImportError depending on the release
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"TorchCodec cannot load FFmpeg's shared libraries ({first[:160]}); install FFmpeg 4 to 8 with the "
                "system's package manager (`make install` does, as root with apt-get)")
    return None


def check_size(width: int | None, height: int | None) -> tuple[int, int] | None:
    """(width, height) to resize to, or None for the native size; one side alone is an error."""
    # a single side would be ignored by some backends and distort in others: both or neither
    if (width is None) != (height is None):
        raise ValueError("pass both width and height, or neither")
    if width is None or height is None:
        return None
    return (int(width), int(height))


def open_reader(backend: str, path: str | Path, *, width: int | None = None, height: int | None = None,
                device: str = "cpu") -> Reader:
    """A single-threaded reader of ``path`` with ``backend`` (a name of :data:`DECODERS`, see :func:`resolve`) that
    resizes
    at decode to ``width`` x ``height``. ``device`` matters to TorchCodec only: ``cuda`` decodes on the GPU."""
    size = check_size(width, height)
    if backend not in BACKENDS:
        backend = resolve(backend)  # `auto`, or a one-line error for an unknown name
    if backend == "decord":
        return _DecordReader(str(path), size)
    if backend == "pyav":
        return _PyAVReader(str(path), size)
    assert backend == "torchcodec"
    return _TorchCodecReader(str(path), size, device)


# ------------------------------------------------------------------------------------------------ decord


class _DecordReader:
    def __init__(self, path: str, size: tuple[int, int] | None) -> None:
        import decord

        self._decord = decord
        w, h = size or (-1, -1)
        self._path, self._size = path, size
        self._reader = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps() or 0.0)

    def get_batch(self, indices: list[int]) -> np.ndarray:
        try:
            return self._reader.get_batch(indices).asnumpy()
        except self._decord.DECORDError as exc:
            if "size must exactly match" in str(exc):
                # decord 0.6 fails on a few output widths (2, 4, 6, 8, 12, 16, 24, 48, 72 on the PyPI build),
                # for every file: a configuration problem, not a broken video.
                what = f"{self._size[0]} pixels wide" if self._size else f"at the native size of {self._path}"
                raise DecoderLimitation(f"decord cannot produce frames {what}; choose another width") from None
            raise

    def frame(self, index: int) -> np.ndarray:
        # decord's single-frame path: unlike get_batch it works at the native widths get_batch refuses (16, 24, ...),
        # so probing keeps such files usable and training reports the limitation (DecoderLimitation) instead
        return self._reader[index].asnumpy()

    def abandon(self) -> None:
        self._reader._handle = None  # decord's __del__ then skips the native free (it hangs in a forked child)


# ------------------------------------------------------------------------------------------------ PyAV


class _PyAVReader:
    """PyAV's demuxer and decoders: one demux pass indexes the packets' timestamps (like decord and TorchCodec's
    exact mode), then each batch seeks to the keyframe before a wanted frame only when decoding forward to it
    would pass a keyframe anyway."""

    def __init__(self, path: str, size: tuple[int, int] | None) -> None:
        import av

        self._size = size
        self._container: Any = av.open(path)
        try:
            if not self._container.streams.video:
                raise ValueError("no video stream")
            stream = self._container.streams.video[0]
            stream.codec_context.thread_count = 1  # one core per decoding process, like the other backends
            stamps, keys = [], []
            for packet in self._container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if packet.size and stamp is not None:  # size 0: the demuxer's end-of-stream packet
                    stamps.append(int(stamp))
                    if packet.is_keyframe:
                        keys.append(int(stamp))
            self._stamps = sorted(stamps)
            self._index = {stamp: i for i, stamp in enumerate(self._stamps)}
            self._keys = sorted(keys)
            self._stream = stream
            rate = stream.average_rate or stream.guessed_rate
            self.num_frames = len(self._stamps)
            self.fps = float(rate) if rate else 0.0
            self._frames: Any = None  # the decoding iterator, positioned after self._last
            self._last = -1
        except BaseException:
            self._container.close()
            raise

    def _seek(self, index: int) -> None:
        self._container.seek(self._stamps[index], stream=self._stream, backward=True, any_frame=False)
        self._frames, self._last = self._container.decode(self._stream), -1

    def get_batch(self, indices: list[int]) -> np.ndarray:
        out: list[np.ndarray] = []
        for target in indices:
            stamp = self._stamps[target]
            # decode forward unless the target lies behind us or a keyframe lies between us and the target
            behind = self._frames is None or target <= self._last
            if behind or bisect.bisect_right(self._keys, stamp) > bisect.bisect_right(
                self._keys, self._stamps[self._last]
            ):
                self._seek(target)
            out.append(self._decode_until(target))
        return np.stack(out)

    def _decode_until(self, target: int) -> np.ndarray:
        for frame in self._frames:
            stamp = frame.pts if frame.pts is not None else frame.dts
            index = self._index.get(stamp, -1) if stamp is not None else self._last + 1
            if index < 0:
                continue  # a timestamp the index does not know (not a frame of the indexed stream)
            self._last = index
            if index == target:
                return self._rgb(frame)
            if index > target:  # a seek landed after the target: the file's index lies
                break
        self._frames = None
        raise ValueError(f"frame {target} could not be decoded (the stream ended or skipped it)")

    def _rgb(self, frame: Any) -> np.ndarray:
        if self._size is None:
            return frame.to_ndarray(format="rgb24")
        w, h = self._size
        return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="BILINEAR")  # exactly decord's frames

    def frame(self, index: int) -> np.ndarray:
        return self.get_batch([index])[0]

    def abandon(self) -> None:
        self._frames = None  # FFmpeg state freed by the garbage collector is only memory: nothing to skip

    def __del__(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - a reader being collected has nobody to report to
                pass


# ------------------------------------------------------------------------------------------------ TorchCodec


class _TorchCodecReader:
    """TorchCodec's VideoDecoder in exact seek mode (it indexes every packet at open), frames as NHWC uint8; on a
    CUDA device it decodes with NVDEC and the frames are copied back for the pipe to the training process."""

    def __init__(self, path: str, size: tuple[int, int] | None, device: str) -> None:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        transforms = [Resize((size[1], size[0]))] if size is not None else None
        self._decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, device=device,
                                     seek_mode="exact", transforms=transforms)
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)

    def get_batch(self, indices: list[int]) -> np.ndarray:
        return self._decoder.get_frames_at(indices).data.cpu().numpy()

    def frame(self, index: int) -> np.ndarray:
        return self.get_batch([index])[0]

    def abandon(self) -> None:
        pass  # nothing native that a forked child must not free
