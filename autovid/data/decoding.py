"""Frame decoding and metadata probing with a chosen backend (:mod:`autovid.data.backends`), isolated in a child."""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, NamedTuple, TextIO

import numpy as np

from autovid.data.backends import DecoderLimitation, Reader, check_size, open_reader

__all__ = ["DecoderLimitation", "DecodingProcess", "ProbeError", "ReaderCache", "VideoInfo", "probe", "read_frames"]


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


class ReaderCache:
    """A small LRU of open readers of one backend keyed by (path, width, height): one per worker process.

    ``capacity=0`` (the dataset's default) opens a fresh reader per call. That is faster for TSN
    sampling with decord: decord 0.6 takes ~1.7x longer for ``get_batch`` on a reader that already decoded
    elsewhere in the file than on a fresh one (30 vs 52 ms per 4x2 clip of a 7 s 320x240 MPEG-4 AVI,
    while opening costs 3-4 ms). A capacity pays off only where opening dominates (huge containers).
    Readers hold native decoder state, so the cache pickles as empty, and a cache used in a forked
    child (a DataLoader worker) first abandons the readers it inherited: freeing decord's there hangs in
    its destructor.
    """

    def __init__(self, capacity: int = 0, backend: str = "auto", device: str = "cpu") -> None:
        self.capacity, self.backend, self.device = capacity, backend, device
        self._readers: OrderedDict[tuple[str, int, int], Reader] = OrderedDict()
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            for reader in self._readers.values():
                reader.abandon()  # not ours to free
            self._readers.clear()
            self._pid = os.getpid()

    def _open(self, path: str | Path, width: int | None, height: int | None) -> Reader:
        return open_reader(self.backend, path, width=width, height=height, device=self.device)

    def get(self, path: str | Path, *, width: int | None, height: int | None) -> Reader:
        """The cached reader for ``path`` at this size, opening it (and evicting the oldest) on a miss."""
        self._after_fork()
        if self.capacity <= 0:
            return self._open(path, width, height)
        key = (str(path), *(check_size(width, height) or (-1, -1)))
        reader = self._readers.get(key)
        if reader is None:
            reader = self._open(path, width, height)
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
        return {"capacity": self.capacity, "backend": self.backend, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]  # a fresh, empty cache in the new process


def read_frames(
    path: str | Path,
    indices: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    cache: ReaderCache | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Decode only the frames at ``indices`` (any shape, repeats allowed), resized at decode.

        indices (N,) ──unique+sort──▶ reader.get_batch ──▶ uint8 [U, H, W, 3] ──gather──▶ [N, H, W, 3]

    Repeated indices (short videos, overlapping multi-clip draws) are decoded once; sorted order
    lets the decoder seek forward only. ``backend`` (a resolved name) is used when no ``cache`` is given;
    a cache brings its own.

    Returns:
        uint8 array [indices.size, height, width, 3] (native size when width/height are None).
    """
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    unique, inverse = np.unique(flat, return_inverse=True)
    if cache is not None:
        reader = cache.get(path, width=width, height=height)
    else:
        reader = open_reader(backend, path, width=width, height=height)
    n = reader.num_frames
    if unique.size and (unique[0] < 0 or unique[-1] >= n):
        raise IndexError(f"frame index out of range [0, {n}) in {path}")
    frames = reader.get_batch(unique.tolist())
    return frames if unique.size == flat.size and np.array_equal(unique, flat) else frames[inverse]


def probe(path: str | Path, backend: str = "auto") -> VideoInfo:
    """Open a file and decode its first and last frame; raise :class:`ProbeError` when unusable.

    The reasons mean the same for every backend: ``missing``/``empty`` before opening, ``unreadable`` when the
    backend cannot open the file as a video, ``no_frames`` when it finds no frame in it, ``decode_error`` when
    the first or last frame does not decode. Run it in a child process: decord aborts the whole process on
    some corrupt files (an AVI header claiming billions of frames makes it throw ``std::bad_alloc`` from C++).
    """
    p = Path(path)
    if not p.exists():
        raise ProbeError("missing", f"no such file: {p}")
    if p.stat().st_size == 0:
        raise ProbeError("empty", "zero-byte file")
    try:
        reader = open_reader(backend, p)
    except Exception as exc:  # each backend raises its own types on anything it cannot parse
        raise ProbeError("unreadable", _one_line(exc)) from None
    num_frames = reader.num_frames
    if num_frames <= 0:
        raise ProbeError("no_frames", "the video stream has no frames")
    try:
        first = reader.frame(0)
        reader.frame(num_frames - 1)
    except Exception as exc:
        raise ProbeError("decode_error", _one_line(exc)) from None
    fps = reader.fps
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


def probe_outcome(path: str | Path, backend: str = "auto") -> ProbeOutcome:
    """:func:`probe` that reports instead of raising (a Python-level failure quarantines only its file)."""
    try:
        return ProbeOutcome(probe(path, backend))
    except ProbeError as exc:
        return ProbeOutcome(None, exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - any other failure is a property of the file
        return ProbeOutcome(None, "unreadable", _one_line(exc))


def serve_probes(requests: TextIO | None = None, replies: TextIO | None = None, *, backend: str = "auto") -> None:
    """The probing child's loop: one JSON path per input line in, one JSON outcome per line out.

    Run by :func:`autovid.data.manifest.probe_files` as ``python -c`` in a subprocess, so that a file
    on which the decoder aborts or segfaults takes down only that process, and the parent knows which file
    it was: the one whose reply never came.
    """
    requests, replies = requests or sys.stdin, replies or sys.stdout
    for line in requests:
        replies.write(probe_outcome(json.loads(line), backend).to_json() + "\n")
        replies.flush()


# ---------------------------------------------------------------------------------------- isolated decoding

DECODE_TIMEOUT = 120.0  # seconds one clip may take, child start-up included, before the file counts as hung
_HEADER = struct.Struct("<I")  # byte length of the JSON header that starts every reply
_CHILD_DECODE = ("import sys; from autovid.data.decoding import serve_decodes; "
                 "serve_decodes(int(sys.argv[1]), backend=sys.argv[2], device=sys.argv[3])")
_PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size: a 24-frame 128x171 clip (1.6 MB) in 2 reads, not 25


class DecodeError(RuntimeError):
    """The decoding process could not decode a clip (the file's fault; its message says why)."""


class DecoderCrashed(DecodeError):
    """The decoding process died (abort, segfault, killed) or hung on a file."""


class DecodingProcessError(RuntimeError):
    """The decoding process exited on its own (it could not start or serve): not the file's fault."""


def serve_decodes(capacity: int = 0, requests: IO[bytes] | None = None, replies: IO[bytes] | None = None, *,
                  backend: str = "auto", device: str = "cpu") -> None:
    """The decoding child's loop, run by :class:`DecodingProcess`: one request in, one reply out, until EOF.

    Request: a JSON line ``{"path", "indices" (sorted, unique), "width", "height"}``. Reply: a 4-byte
    little-endian length, a JSON header ``{"shape": [U, H, W, 3]}`` followed by the uint8 frames, or
    ``{"error": <kind>, "message": ...}`` for a Python-level failure (``kind`` "limitation" for a
    :class:`DecoderLimitation`). A native crash ends the process: the parent sees EOF instead of a reply.
    """
    if replies is None:
        # Replies get a private copy of stdout and fd 1 becomes stderr: anything native code prints must
        # not land in the middle of a frame payload.
        replies = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        # Ctrl-C reaches the whole process group: the parent decides what to do, the child ends at EOF.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            import resource

            # a decoder crash is expected and handled: no core file per crashed child in the run folder
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, ValueError, OSError):
            pass
    requests = requests or sys.stdin.buffer
    cache = ReaderCache(capacity, backend, device)
    for line in requests:
        request = json.loads(line)
        path = request["path"]
        frames = None
        try:
            frames = read_frames(path, np.asarray(request["indices"], dtype=np.int64), width=request["width"],
                                 height=request["height"], cache=cache)
            header: dict[str, Any] = {"shape": list(frames.shape)}
        except DecoderLimitation as exc:
            header = {"error": "limitation", "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which replaces the video
            cache.discard(path)
            header = {"error": type(exc).__name__, "message": _one_line(exc)}
        data = json.dumps(header).encode()
        replies.write(_HEADER.pack(len(data)) + data)
        if frames is not None:
            replies.write(np.ascontiguousarray(frames).data.cast("B"))
        replies.flush()


def _close_pipes(proc: subprocess.Popen) -> None:
    """Close our ends of a child's pipes (it sees EOF on its input)."""
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """A child's pipe, which `Popen(stdin=PIPE, stdout=PIPE)` always opens."""
    assert stream is not None
    return stream


class DecodingProcess:
    """Decodes clips in a persistent child process, so that a file on which the decoder aborts or segfaults
    (decord's ``std::bad_alloc`` on a bogus AVI header) costs one restarted child instead of the training run.

        read_frames(path, indices) ─▶ JSON request ─▶ child: serve_decodes ─▶ header + uint8 frames ─▶ array
                                                        │ dies / hangs past ``timeout``
                                                        ▼
                                     DecoderCrashed(path); the next call starts a fresh child

    One child per decoding process (the main process, or each DataLoader worker), started on first use;
    calls from several threads take turns. Python-level decode errors come back as :class:`DecodeError`
    (:class:`DecoderLimitation` as itself) and keep the child; a child that exits with a status instead of a
    signal raises :class:`DecodingProcessError` (a broken install, not a broken file). Like
    :class:`ReaderCache`, an instance pickles as a fresh one and, used in a forked child, abandons the
    decoding process it inherited (it belongs to the parent). ``backend`` (see :mod:`autovid.data.backends`) and
    ``device`` (TorchCodec decodes on CUDA when given one) are the child's.
    """

    def __init__(self, capacity: int = 0, *, timeout: float = DECODE_TIMEOUT, backend: str = "auto",
                 device: str = "cpu") -> None:
        self.capacity = capacity
        self.timeout = timeout
        self.backend, self.device = backend, device
        self.starts = 0  # children started by this process (1 + one per crash)
        self._proc: subprocess.Popen | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            if self._proc is not None:
                _close_pipes(self._proc)  # our copies of the parent's pipes only; its child lives on
            # a new lock too: the parent's may have been held by one of its threads at the fork
            self._proc, self._pid, self.starts, self._lock = None, os.getpid(), 0, threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running decoding child's process id (None before the first decode, or after a crash)."""
        self._after_fork()
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _child(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # importable without an install, too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_DECODE, str(self.capacity), self.backend, self.device], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0, env=env,
        )
        try:
            import fcntl

            fcntl.fcntl(_pipe(self._proc.stdout).fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
        except (ImportError, OSError):
            pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default 64 KiB pipe just takes more reads
        self.starts += 1
        return self._proc

    def read_frames(self, path: str | Path, indices: np.ndarray, *, width: int | None = None,
                    height: int | None = None) -> np.ndarray:
        """:func:`read_frames` in the child; raises :class:`DecoderCrashed` when the child dies or hangs."""
        check_size(width, height)  # a bad size is the caller's error: raise it here, not as a bad file
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        unique, inverse = np.unique(flat, return_inverse=True)
        request = json.dumps({"path": str(path), "indices": unique.tolist(), "width": width, "height": height})
        self._after_fork()
        with self._lock:
            frames = self._request(request.encode(), str(path))
        return frames if unique.size == flat.size and np.array_equal(unique, flat) else frames[inverse]

    def _request(self, request: bytes, path: str) -> np.ndarray:
        proc = self._child()
        deadline = time.monotonic() + self.timeout
        try:
            _pipe(proc.stdin).write(request + b"\n")
            (size,) = _HEADER.unpack(self._read(proc, _HEADER.size, deadline))
            header = json.loads(self._read(proc, size, deadline))
            if "error" in header:
                cls = DecoderLimitation if header["error"] == "limitation" else DecodeError
                raise cls(header["message"])
            frames = np.empty(header["shape"], dtype=np.uint8)
            self._read(proc, frames.nbytes, deadline, into=frames.data.cast("B"))
        except (DecodeError, DecoderLimitation):
            raise
        except (_ChildGone, BrokenPipeError, OSError):
            code = self._reap(proc)
            if code >= 0:  # no signal: the child failed by itself (its traceback is on stderr)
                raise DecodingProcessError(f"the decoding process exited with code {code}; see its error "
                                           f"output above") from None
            if code == -signal.SIGKILL:
                detail = f"the decoding process was killed (or hung for more than {self.timeout:g} s)"
            else:
                try:
                    name = signal.Signals(-code).name
                except ValueError:  # a real-time or platform-specific signal without a name
                    name = f"signal {-code}"
                detail = f"the decoder crashed ({name})"
            raise DecoderCrashed(f"{detail} while decoding {path}") from None
        except BaseException:
            self.close()  # interrupted mid-reply (Ctrl-C): the pipe is out of step, start over next time
            raise
        return frames

    def _read(self, proc: subprocess.Popen, n: int, deadline: float, into: memoryview | None = None) -> bytes:
        """Exactly ``n`` bytes of reply (into ``into`` when given); :class:`_ChildGone` on EOF or timeout."""
        buf = into if into is not None else memoryview(bytearray(n))
        fd, got = _pipe(proc.stdout).fileno(), 0
        while got < n:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise _ChildGone
            count = os.readv(fd, [buf[got:]])
            if count == 0:
                raise _ChildGone
            got += count
        return bytes(buf) if into is None else b""

    def _reap(self, proc: subprocess.Popen) -> int:
        """The dead (or dying) child's return code, after which the next call starts a fresh one."""
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed its pipe but lives on: not usable either
            proc.kill()
            code = proc.wait()
        self.close()
        return code

    def close(self) -> None:
        """End this process's child (it also ends by itself when its parent goes: its stdin closes).

        Not for use while another thread decodes with this instance.
        """
        self._after_fork()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _close_pipes(proc)
        if proc.poll() is None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            finally:  # also when the wait is interrupted (Ctrl-C, a SIGTERM's SystemExit): no child left behind
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()

    def __del__(self) -> None:
        # Runs when the last reference goes, often at interpreter or Ray actor shutdown: module globals may be
        # gone already, and the actor's SIGTERM handler raises SystemExit wherever its main thread is. So this
        # never waits on the child (it holds nothing worth a clean exit: it is killed, then reaped at once) and
        # nothing escapes it: an exception out of __del__ is only printed ("Exception ignored in ...").
        try:
            self._after_fork()  # in a forked copy the child is the parent's: not ours to end
            proc, self._proc = self._proc, None
            if proc is not None:
                _close_pipes(proc)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
        except BaseException:  # see above: a SystemExit raised in here would not have ended the process either
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "timeout": self.timeout, "backend": self.backend, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]  # no child carried over


class _ChildGone(Exception):
    """The decoding child closed its end (it died) or did not answer in time (it was killed)."""
