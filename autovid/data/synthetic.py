"""The embedded motion benchmark: real video files whose classes differ only in motion, in UCF101 layout."""

# What makes "only in motion" true:
#  * one actor (a textured shape) moves on a static background with static clutter; the scene is a torus,
#    so a uniformly placed actor stays uniformly placed however it moves;
#  * the actor's per-frame state (position, angle, log-radius) has the same distribution in every class:
#    growing sweeps exactly the range a static actor is drawn from, pulsing uses a triangle wave, etc.;
#  * a group (``_gNN_``) is a scene (background, clutter, the actor's looks) that performs every class,
#    like the subjects of KTH, so appearance carries no class information even on the training set; the
#    test groups are unseen scenes;
#  * noise, texture, clutter, camera sway and speed are knobs (SynthParams) to make it harder.

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

import numpy as np

from autovid.errors import UserError

log = logging.getLogger(__name__)

Codec = Literal["mpeg4", "h264", "mjpeg"]
# codec name -> (FFmpeg encoder, container extension, pixel format)
CODECS: dict[str, tuple[str, str, str]] = {
    "mpeg4": ("mpeg4", ".avi", "yuv420p"),  # UCF101's own format (Xvid-like MPEG-4 Part 2 in AVI)
    "h264": ("libx264", ".mp4", "yuv420p"),
    "mjpeg": ("mjpeg", ".avi", "yuvj420p"),
}
GENERATOR_VERSION = 4  # bump when the rendering changes: it is part of ensure_synthetic's cache key

# Class order matters: ``classes=N`` takes the first N. The first ten can be told apart from short local
# windows (a few frames), so TSN-style segment models can learn them. The last four need the course of the
# whole clip (speed profile, order of two events): dense input, or a consensus that is not an average.
# Every class is invariant under horizontal flip (directions are vertical or drawn symmetrically), so
# flip augmentation never changes a label.
MOTIONS: tuple[str, ...] = (
    "MoveUp", "MoveDown", "MoveSideways", "Grow", "Shrink", "Spin", "Orbit", "Shake", "Pulse", "Still",
    "SpeedUp", "SlowDown", "JumpThenSpin", "SpinThenJump",
)
_SHAPES = 4  # ellipse, bar, triangle, cross: none is rotation invariant
RADIUS = (0.12, 0.25)  # actor radius range, fraction of the frame size (log-uniform)


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines the benchmark's bytes (the cache key of :func:`ensure_synthetic`)."""

    # the size of the benchmark

    classes: int = 10  # the first N of MOTIONS
    videos_per_class: int = 30
    groups: int = 10  # scenes (background, clutter, actor's looks); every scene performs every class
    test_groups: int = 3  # groups g01..gNN of every class form testlist01 (unseen scenes)
    size: int = 64  # square frames, pixels
    frames: int = 32
    fps: int = 25
    seed: int = 0
    codec: Codec = "mpeg4"
    # difficulty knobs: the defaults are learnable by small networks in a few CPU minutes
    noise: float = 0.03  # per-pixel Gaussian noise, std in [0, 1] intensity units
    texture: float = 0.08  # amplitude of the static background texture
    clutter: int = 2  # static distractor shapes drawn from the actor's distribution (smaller)
    jitter: int = 0  # camera sway amplitude, pixels
    speed: float = 1.0  # scales every motion; lower is harder
    # bright: the actor (and clutter) is brighter than the background in every channel, as a lit figure on a
    # darker scene, so the sign of a frame difference tells the direction of motion; mixed: each channel's
    # sign is random per scene (harder: direction then needs the appearance and the difference together)
    polarity: Literal["bright", "mixed"] = "bright"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SynthParams:
        """Build and validate; an unknown name or a bad value is a one-line :class:`UserError`."""
        valid = set(cls.__dataclass_fields__)
        unknown = set(kwargs) - valid
        if unknown:
            raise UserError(f"unknown synthetic parameter(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(sorted(valid))}")
        params = cls(**kwargs)
        params.validate()
        return params

    def validate(self) -> None:
        if not 2 <= self.classes <= len(MOTIONS):
            raise UserError(f"classes must be in [2, {len(MOTIONS)}], got {self.classes}")
        if self.codec not in CODECS:
            raise UserError(f"unknown codec {self.codec!r}; valid: {', '.join(CODECS)}")
        if self.size < 16 or self.size % 2:
            raise UserError(f"size must be an even number >= 16, got {self.size}")
        if self.frames < 4:
            raise UserError(f"frames must be >= 4, got {self.frames}")
        if not 1 <= self.test_groups < self.groups:
            raise UserError(f"test_groups must be in [1, groups), got {self.test_groups} of {self.groups}")
        if self.polarity not in ("bright", "mixed"):
            raise UserError(f"polarity must be bright or mixed, got {self.polarity!r}")
        if self.videos_per_class < self.groups:
            raise UserError(f"videos_per_class ({self.videos_per_class}) must be >= groups ({self.groups})")


class Appearance(NamedTuple):
    """What a group's clips share: the scene and the actor's looks (drawn the same way for every class)."""

    background: np.ndarray  # float32 [S, S, 3] periodic texture with static clutter
    shape: int  # actor's shape id
    colour: np.ndarray  # float (3,)
    stripe: np.ndarray  # float (3,): frequency (cycles per radius), phase, contrast


class Track(NamedTuple):
    """Per-frame state of one object: centre on the torus, rotation and radius, each (T,)."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    radius: np.ndarray


# ---------------------------------------------------------------------------------------------- rendering


def _box(u: np.ndarray, v: np.ndarray, hu: float, hv: float) -> np.ndarray:
    qu, qv = np.abs(u) - hu, np.abs(v) - hv
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)


def _shape_distance(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the outline in object coordinates (units of radius, negative inside)."""
    if shape == 0:  # ellipse 2:1 (distance approximated by the minor axis scale)
        return (np.hypot(u, v / 0.5) - 1.0) * 0.5
    if shape == 1:  # bar
        return _box(u, v, 1.0, 0.4)
    if shape == 2:  # triangle pointing along +u
        slope = 0.75 / 1.7
        side = (np.abs(v) + slope * u - slope) / np.hypot(1.0, slope)
        return np.maximum(-0.7 - u, side)
    return np.minimum(_box(u, v, 1.0, 0.22), _box(u, v, 0.22, 0.6))  # cross with unequal arms


EDGE = 1.5  # pixels over which an outline fades: anti-aliased, so sub-pixel motion shows


def _paint(canvas: np.ndarray, track: Track, shape: int, colour: np.ndarray, stripe: np.ndarray) -> None:
    """Draw one textured, anti-aliased object into ``canvas`` [T, S, S, 3] in place, wrapping at the edges.

    The scene is a torus: offsets are taken modulo S, so a uniformly placed object stays uniformly
    distributed however it moves, and no class can be told from where things are in one frame.
    """
    s = canvas.shape[1]
    grid = np.arange(s, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - track.x[:, None, None] + s / 2) % s - s / 2  # (T, 1, S)
    dy = (grid[None, :, None] - track.y[:, None, None] + s / 2) % s - s / 2  # (T, S, 1)
    cos, sin = np.cos(track.angle)[:, None, None], np.sin(track.angle)[:, None, None]
    r = track.radius[:, None, None]
    u = (cos * dx + sin * dy) / r  # (T, S, S)
    v = (-sin * dx + cos * dy) / r
    dist = _shape_distance(shape, u, v) * r  # pixels
    mask = dist < EDGE / 2
    alpha = np.clip(0.5 - dist[mask] / EDGE, 0.0, 1.0)[:, None]
    freq, phase, contrast = (np.float32(a) for a in stripe)
    # texture (stripes along the object's axis, so it moves and turns with the object), only where it shows
    shade = 1.0 - contrast * (0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * freq * u[mask] + phase))
    canvas[mask] = (1 - alpha) * canvas[mask] + alpha * shade[:, None] * colour.astype(np.float32)[None, :]


def _appearance(rng: np.random.Generator, p: SynthParams) -> Appearance:
    s = p.size
    grid = (np.arange(s, dtype=np.float32) + 0.5) / s
    low, high = (0.05, 0.4) if p.polarity == "bright" else (0.25, 0.75)
    bg = np.ones((s, s, 3), np.float32) * rng.uniform(low, high, 3).astype(np.float32)
    for _ in range(3):  # low-frequency periodic texture (integer frequencies keep the torus seamless)
        fx, fy = rng.integers(0, 4, 2)
        wave = np.cos(2 * np.pi * (fx * grid[None, :] + fy * grid[:, None]) + rng.uniform(0, 2 * np.pi))
        bg += p.texture * wave[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    base = bg.mean(axis=(0, 1))
    canvas = bg[None].copy()
    for _ in range(p.clutter):  # static distractors, drawn like the actor but smaller
        track = Track(*(np.array([a], np.float32) for a in (
            rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0, 2 * np.pi), rng.uniform(0.06, 0.12) * s)))
        _paint(canvas, track, int(rng.integers(_SHAPES)), _colour(rng, base, p.polarity), _stripe(rng))
    return Appearance(np.clip(canvas[0], 0, 1), int(rng.integers(_SHAPES)), _colour(rng, base, p.polarity),
                      _stripe(rng))


def _colour(rng: np.random.Generator, background: np.ndarray, polarity: str = "mixed") -> np.ndarray:
    """An object colour at least ~0.3 away from the background in every channel (motion stays visible);
    brighter in every channel with ``polarity="bright"`` (the background is then drawn from [0.05, 0.4])."""
    signs = np.ones(3) if polarity == "bright" else rng.choice([-1.0, 1.0], 3)
    step = rng.uniform(0.3, 0.5, 3) * signs
    colour = background + step
    colour = np.where((colour < 0) | (colour > 1), background - step, colour)
    return np.clip(colour, 0.0, 1.0)


def _stripe(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(0.4, 1.2), rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6)])


def _track(motion: str, rng: np.random.Generator, p: SynthParams) -> Track:
    """The actor's state in every frame for one clip of ``motion``. Per-frame marginals match across classes.

    Positions and angles start uniform (so they stay uniform on the torus); log-radius is uniform on
    [log r_lo, log r_hi] for a static object and sweeps exactly that range when growing or pulsing.
    """
    s, n = p.size, p.frames
    t = np.arange(n, dtype=np.float32)
    lo, hi = np.log(RADIUS[0] * s), np.log(RADIUS[1] * s)
    v = rng.uniform(1.0, 2.0) * p.speed * s / 64  # pixels per frame
    x, y = np.full(n, rng.uniform(0, s)), np.full(n, rng.uniform(0, s))
    ang, rad = np.full(n, rng.uniform(0, 2 * np.pi)), np.full(n, np.exp(rng.uniform(lo, hi)))
    sign = rng.choice([-1.0, 1.0])
    heading = rng.uniform(0, 2 * np.pi)
    ramp = (t + 0.5) / n  # uniform grid on (0, 1)
    if motion == "MoveUp":
        y = y - v * t
    elif motion == "MoveDown":
        y = y + v * t
    elif motion == "MoveSideways":
        x = x + sign * v * t
    elif motion in ("Grow", "Shrink"):
        rad = np.exp(lo + (hi - lo) * (ramp if motion == "Grow" else ramp[::-1]))
    elif motion == "Spin":
        ang = ang + sign * rng.uniform(0.12, 0.22) * p.speed * t
    elif motion == "Orbit":
        radius = rng.uniform(0.12, 0.2) * s
        phi = rng.uniform(0, 2 * np.pi) + sign * (v / radius) * t
        x, y = x + radius * np.cos(phi), y + radius * np.sin(phi)
    elif motion == "Shake":
        amp, period = rng.uniform(0.05, 0.08) * s, rng.uniform(4, 6)
        off = amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        x, y = x + off * np.cos(heading), y + off * np.sin(heading)
    elif motion == "Pulse":  # a triangle wave in log-radius keeps its per-frame marginal uniform
        period = rng.uniform(10, 16) / p.speed
        tri = np.abs(((t / period + rng.uniform(0, 1)) % 1.0) * 2 - 1)
        rad = np.exp(lo + (hi - lo) * tri)
    elif motion in ("SpeedUp", "SlowDown"):
        dist = v * n * (ramp**2 if motion == "SpeedUp" else 1 - (1 - ramp) ** 2)
        x, y = x + dist * np.cos(heading), y + dist * np.sin(heading)
    elif motion in ("JumpThenSpin", "SpinThenJump"):
        half = n // 2
        first = int(rng.integers(0, max(half - 8, 1)))  # each event starts in its half and ends inside it
        second = half + int(rng.integers(0, max(half - 8, 1)))
        jump_at, spin_at = (first, second) if motion == "JumpThenSpin" else (second, first)
        hop = np.clip((t - jump_at) / 3, 0, 1) * 0.3 * s  # a quick 3-frame hop
        x, y = x + hop * np.cos(heading), y + hop * np.sin(heading)
        ang = ang + sign * np.clip((t - spin_at) / 8, 0, 1) * np.pi  # half a turn in 8 frames
    elif motion != "Still":
        raise ValueError(f"unknown motion {motion!r}")
    return Track(x.astype(np.float32), y.astype(np.float32), ang.astype(np.float32), rad.astype(np.float32))


def render_video(motion: str, appearance: Appearance, rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    """One clip of ``motion``: uint8 [T, S, S, 3] (RGB).

        background + clutter (static) ─▶ actor (moves) ─▶ camera sway ─▶ noise ─▶ uint8
    """
    canvas = np.broadcast_to(appearance.background, (p.frames, p.size, p.size, 3)).copy()
    _paint(canvas, _track(motion, rng, p), appearance.shape, appearance.colour, appearance.stripe)
    if p.jitter:  # a slow camera sway of up to `jitter` pixels (a smooth random curve, rounded to pixels)
        t = np.arange(p.frames)[:, None]
        period, phase = rng.uniform(0.5, 1.0, 2) * p.frames, rng.uniform(0, 2 * np.pi, 2)
        shifts = np.rint(p.jitter * np.sin(2 * np.pi * t / period + phase)).astype(int)  # (T, 2)
        for i, (sy, sx) in enumerate(shifts):  # the scene is a torus, so a roll is a camera move
            canvas[i] = np.roll(canvas[i], (int(sy), int(sx)), axis=(0, 1))
    canvas += np.float32(p.noise) * rng.standard_normal(canvas.shape, dtype=np.float32)
    return (np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- writing


def write_video(path: str | Path, frames: np.ndarray, *, fps: int = 25, codec: Codec = "mpeg4") -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames (H, W even) with PyAV."""
    import av  # only writing needs PyAV: reading a benchmark that exists (decord) works without it

    encoder, _, pix_fmt = CODECS[codec]
    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        options = {"crf": "18", "preset": "veryfast"} if codec == "h264" else {}
        stream = container.add_stream(encoder, rate=fps, options=options)
        assert isinstance(stream, av.VideoStream)  # a video encoder gives a video stream
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec != "h264":
            stream.bit_rate = max(200_000, 2 * w * h * fps)  # ~2 bits per pixel: artefacts stay below the noise
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return Path(path)


def check_out_dir(out: Path) -> None:
    """Raise :class:`UserError` unless ``out`` is, or can be created as, a writable folder.

    Checked before rendering, so a file in the way is a one-line error at once rather than an OSError
    traceback from the first ``mkdir``.
    """
    for existing in (out, *out.parents):
        if os.path.lexists(existing):  # lexists: a dangling link is in the way, not absent
            if not existing.is_dir():
                where = (
                    "exists and is not a folder" if existing == out else f"is under {existing}, which is not a folder"
                )
                raise UserError(f"output folder {out} {where}")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise UserError(f"output folder {out}: no permission to write in {existing}")
            return


class RenderedClip(NamedTuple):
    """One video of the benchmark before encoding: where it goes, what it shows, and its frames."""

    path: str  # relative, UCF101 layout: <Class>/v_<Class>_gNN_cMM.<ext>
    label: int  # 0-based class index
    group: int  # scene, 1-based (groups 1..test_groups are the test split)
    frames: np.ndarray  # uint8 [T, S, S, 3]


def rendered(p: SynthParams) -> Iterator[RenderedClip]:
    """Every clip of the benchmark ``p``, rendered in a fixed order (deterministic for the parameters)."""
    ext = CODECS[p.codec][1]
    # A group is a scene (background, clutter, the actor's looks) that performs every class, as the
    # subjects of KTH do: appearance then carries no class information, not even on the training set.
    looks = [_appearance(np.random.default_rng([p.seed, g]), p) for g in range(1, p.groups + 1)]
    for label, name in enumerate(MOTIONS[: p.classes]):
        for v in range(p.videos_per_class):
            group, clip = v % p.groups + 1, v // p.groups + 1
            video = render_video(name, looks[group - 1], np.random.default_rng([p.seed, label, group, clip]), p)
            yield RenderedClip(f"{name}/v_{name}_g{group:02d}_c{clip:02d}{ext}", label, group, video)


def clip_digests(**params: Any) -> dict[str, str]:
    """Relative path -> SHA-256 of the rendered frames, for every clip of the benchmark ``params``: what tells
    two configs' benchmarks apart (a claim's test videos must be equal to none of another config's videos)."""
    return {c.path: hashlib.sha256(c.frames.tobytes()).hexdigest() for c in rendered(SynthParams.from_kwargs(**params))}


def synthesize(out_dir: str | Path, **params: Any) -> Path:
    """Write the benchmark in UCF101 layout and return ``out_dir``.

        out_dir/<Class>/v_<Class>_gNN_cMM.avi          (group NN, clip MM; .mp4 for h264)
        out_dir/ucfTrainTestlist/classInd.txt           "1 MoveUp" ...
        out_dir/ucfTrainTestlist/trainlist01.txt        "MoveUp/v_MoveUp_g04_c01.avi 1"
        out_dir/ucfTrainTestlist/testlist01.txt         groups g01..g{test_groups}

    ``params`` are :class:`SynthParams` fields (the one definition of their defaults): classes,
    videos_per_class, groups, test_groups, size, frames, fps, seed, codec and the difficulty knobs.
    Deterministic for a given set of parameters.
    """
    p = SynthParams.from_kwargs(**params)
    out = Path(out_dir)
    check_out_dir(out)
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for clip in rendered(p):
        (out / clip.path).parent.mkdir(parents=True, exist_ok=True)
        write_video(out / clip.path, clip.frames, fps=p.fps, codec=p.codec)
        (test if clip.group <= p.test_groups else train).append((clip.path, clip.label + 1))
    lists = out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(MOTIONS[: p.classes])))
    (lists / "trainlist01.txt").write_text("".join(f"{rel} {lab}\n" for rel, lab in sorted(train)))
    (lists / "testlist01.txt").write_text("".join(f"{rel}\n" for rel, _ in sorted(test)))
    (out / "synthetic.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION, **asdict(p)}, indent=2))
    log.info("synthesized %d videos (%d classes) in %s", len(train) + len(test), p.classes, out)
    return out


def cache_key(**params: Any) -> str:
    """Short stable hash of the full parameter set (defaults filled in) and the generator version."""
    p = SynthParams.from_kwargs(**params)
    blob = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(p)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_synthetic(cache_dir: str | Path, **params: Any) -> Path:
    """The benchmark for ``params`` under ``cache_dir/synthetic-<key>``, generated on first use.

    Generation goes to a private temporary folder that is renamed into place, so an interrupted run
    leaves no half-written dataset and concurrent callers end up sharing one complete copy.
    """
    cache = Path(cache_dir)
    final = cache / f"synthetic-{cache_key(**params)}"
    if (final / "synthetic.json").is_file():
        return final
    check_out_dir(cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        synthesize(tmp, **params)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first (or a stale incomplete folder is in the way)
            if not (final / "synthetic.json").is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
