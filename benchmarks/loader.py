"""Loader throughput: autovid's clip loader vs naive and raw decoding, and a DataLoader workers sweep.

    .venv/bin/python benchmarks/loader.py                        # both sections: ~7.5 minutes on 2 shared CPU cores
    BENCH_SECTIONS=workers .venv/bin/python benchmarks/loader.py # only the workers sweep (~5.5 minutes)
    BENCH_SECTIONS=backends .venv/bin/python benchmarks/loader.py  # only the decoder backends side by side
    BENCH_GPU_JSON=gpu.json .venv/bin/python benchmarks/loader.py  # the sweep next to a measured GPU rate
    .venv/bin/python benchmarks/loader.py --help                 # sizes: --workers, --sweep-batches, ...

Sections (``BENCH_SECTIONS`` or ``--sections``, comma-separated; default ``contenders,workers,backends``):

contenders  the loader against naive and raw decoding, one clip at a time, on two inputs:
  ucf-like   320x240 MPEG-4 AVI, 7 s at 25 fps (UCF101's format); clips of K=3 segments x L=8 frames
             (the issue's setting) and K=4 x L=2 (the paper's), decoded at 171x128, cropped to 112x112
             (train transforms: random resized crop + flip)
  synthetic  the embedded benchmark at its defaults (64x64, 32 frames); K=3 x L=8, crop 56
  For every clip the contenders use the same frame indices:
  autovid    VideoClipDataset.__getitem__: sampling, decord decode of only those frames (in the persistent
             decoding child process, the default), transforms
  in_process the same with isolate=False: decord in the calling process (a decoder crash would kill it)
  naive      PyAV decodes the whole video, then indexes the frames and applies the same transforms
  decord     raw VideoReader(width, height, num_threads=1).get_batch(indices), no transforms (lower bound)
  Reported: clips/s (median over interleaved repeats, one process) and the ratios autovid/naive,
  autovid/decord and autovid/in_process (the cost of isolating the decoder), plus autovid and in_process
  through a DataLoader with 2 workers.

workers     the train loader exactly as a search builds it (``build_loaders``: EpochSampler, persistent
  workers, prefetch 2, worker_init) at the paper's search clip, ``ClipSpec(num_segments=4,
  frames_per_segment=2, crop_size=112)``, batch 32, for W = 0, 1, 2, 4 loader workers (``--workers``), on
  320x240 MPEG-4 AVIs written with PyAV in UCF101 layout (Class/v_Class_gNN_c01.avi + ucfTrainTestlist,
  indexed with ``build_manifest(root, "ucf101")``; the train rows repeated to ``--sweep-batches`` x 32 items):
  base        tune_configs/ucf101.yaml as it is: data.resize [128, 171] (decord scales at decode), isolated
              decoding; files from autovid's ``write_video`` (3.8 Mbit/s, a keyframe every 12 frames)
  native      data.resize null: full 320x240 decode, the random resized crop taken from it
  in_process  base with isolate_decoding=False (no decoding child process per worker)
  ucf_rate    base on the same frames encoded at 0.5 Mbit/s with one keyframe per 300 frames (UCF101's
              average bitrate, Xvid's default keyframe interval): an input sensitivity, not a loader fix
  Per (variant, W), medians of ``--sweep-repeats`` timed epochs (variants interleaved within each W; the
  first batches of each loader, which start its workers and decoding children, are not timed): clips/s the
  loader sustains with a consumer that takes no time (±%: half the range over the epochs), its ratio to
  base at the same W, and the CPU time of
  the whole loader process tree (this process, its workers, their decoding children) per clip, as
  ms/clip and clips/s per core (= clips per CPU-second: what one fully busy core sustains). ``others`` is
  the cores busy with other processes of the machine during the timed epochs (a shared machine): they
  take wall-clock clips/s away, while CPU time per clip hardly depends on them, so the per-core figure is
  the one to size a machine with. A search iterates two such loaders at once (the alpha and the weight
  half, each with data.num_workers workers): the loader cores a GPU needs are its clips/s over clips/s
  per core, whatever the split.

backends    the decoder backends of ``data.decoder`` (decord, PyAV, TorchCodec: each one installed and usable here)
  side by side: ``VideoClipDataset`` with isolated decoding (the default: each backend in its decoding child),
  one clip at a time, on ``--ucf-videos`` 320x240 MPEG-4 AVIs (7 s, 25 fps, UCF101's format), in two settings:
  search     the paper's search clip, 4 segments x 2 frames, decoded at 171x128 (tune_configs/ucf101.yaml),
             cropped to 112
  dense      one dense clip of 3 x 8 frames at the native 320x240, cropped to 112
  Every backend draws the same frame indices (same seed). Backends alternate within each of ``--repeats``
  epochs (load drifts hit all); reported per backend: clips/s (median; ±%: half the range), CPU time of this
  process and its decoding children per clip (median; what one busy core sustains is 1000 / that), and
  both as ratios to decord's. ``--torchcodec-device cuda`` decodes TorchCodec's clips with NVDEC.

GPU consumption (optional): ``BENCH_GPU_JSON`` (or ``--gpu-json``) names a JSON file written by
``benchmarks/search_step.py`` on the GPU; the sweep prints its clips/s next to each loader rate, the
loader/GPU ratio, and how many loader cores the GPU needs (its clips/s / clips/s per core). Without the
file (or without a matching row) the GPU column reads "not measured"; nothing is estimated. Contract:

    {"device": "NVIDIA H200",                       # free text, printed
     "rows": [{"config": "ucf101",                  # the row used: config == --gpu-config (default ucf101),
               "order": "first",                    #   order == "first" and fast == true when those keys
               "fast": true,                        #   are present (the first such row if several)
               "clips_per_s": <float>,              # clips the search consumes per second, both halves: a
                                                    #   first-order step takes B alpha-half + B weight-half clips
               "batch": 32, "segments": 4, "frames": 2, "size": 112}]}   # optional; a mismatch is flagged
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import psutil
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from autovid.data.backends import BACKENDS, resolve
from autovid.data.dataset import VideoClipDataset
from autovid.data.loaders import EpochSampler, build_loaders, worker_init
from autovid.data.manifest import build_manifest
from autovid.data.sampling import ClipSpec, clip_indices
from autovid.data.synthetic import ensure_synthetic, write_video

SECTIONS = ("contenders", "workers", "backends")


def texture_frames(rng: np.random.Generator, n: int, h: int = 240, w: int = 320) -> np.ndarray:
    """uint8 [n, h, w, 3]: a moving texture plus noise (so the encoder has real work, like real footage)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tint = np.array([1.0, 0.8, 0.6], np.float32)
    fx, fy = rng.uniform(0.01, 0.05, 2)
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        base = 0.5 + 0.25 * np.sin(fx * (xx + 2 * t)) * np.cos(fy * (yy - t))
        frame = base[..., None] * tint + rng.normal(0, 0.03, (h, w, 1)).astype(np.float32)
        frames[t] = (np.clip(frame, 0, 1) * 255).astype(np.uint8)
    return frames


def ucf_like_videos(out: Path, count: int, seconds: float = 7.0) -> list[Path]:
    """320x240 MPEG-4 AVIs (autovid's write_video) of :func:`texture_frames`."""
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    return [write_video(out / f"ucf_{v:02d}.avi", texture_frames(rng, int(25 * seconds))) for v in range(count)]


def clip_of(ds: VideoClipDataset, index: int, epoch: int) -> tuple[np.ndarray, np.random.Generator]:
    """The frame indices the dataset itself samples for (index, epoch), and the generator after sampling."""
    rec = ds.records[index]
    rng = np.random.default_rng([ds.seed, epoch, index])
    idx = clip_indices(rec.num_frames, ds.spec.num_segments, ds.spec.frames_per_segment, mode="segments", train=True,
                       rng=rng, stride=ds.spec.stride)
    return idx, rng


def naive_item(ds: VideoClipDataset, index: int, epoch: int) -> torch.Tensor:
    """Decode every frame with PyAV, index the sampled ones, resize like decord would, same transforms."""
    idx, rng = clip_of(ds, index, epoch)
    with av.open(ds.records[index].path) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    picked = frames[np.minimum(idx.reshape(-1), len(frames) - 1)]
    if ds.spec.resize is not None:
        x = torch.from_numpy(picked).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=ds.spec.resize, mode="bilinear", align_corners=False)
        picked = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return ds.transform(picked.reshape(*idx.shape, *picked.shape[1:]), rng)


def decord_item(ds: VideoClipDataset, index: int, epoch: int) -> np.ndarray:
    """The same indices straight from decord: open, get_batch, to numpy."""
    idx, _ = clip_of(ds, index, epoch)
    h, w = ds.spec.resize if ds.spec.resize is not None else (-1, -1)
    reader = decord.VideoReader(ds.records[index].path, width=w, height=h, num_threads=1)
    return reader.get_batch(np.unique(idx).tolist()).asnumpy()


def interleaved_rates(fns: dict[str, Callable[[int, int], object]], n: int, repeats: int) -> dict[str, float]:
    """Median clips/s of each contender; contenders alternate within every repeat so load drifts hit all."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for epoch in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for i in range(n):
                fn(i, epoch)
            rates[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def loader_rate(ds: VideoClipDataset, workers: int, repeats: int) -> float:
    loader = DataLoader(ds, batch_size=2, sampler=EpochSampler(range(len(ds)), shuffle=True), num_workers=workers,
                        worker_init_fn=worker_init, persistent_workers=workers > 0)
    next(iter(loader))  # start workers outside the timing
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(y) for _, y in loader)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(name: str, manifest: pd.DataFrame, *, k: int, l: int, crop: int, resize: tuple[int, int] | None,
            repeats: int) -> dict:
    args = dict(split=None, spec=ClipSpec(num_segments=k, frames_per_segment=l, crop_size=crop, resize=resize),
                train=True, seed=0)
    ds = VideoClipDataset(manifest, **args)
    inproc = VideoClipDataset(manifest, isolate=False, **args)
    n = len(ds)
    ds[(0, 0)], inproc[(0, 0)], naive_item(ds, 0, 0), decord_item(ds, 0, 0)  # warm-up: child, imports, page cache
    rates = interleaved_rates({
        "autovid": lambda i, e: ds[(i, e)],
        "in_process": lambda i, e: inproc[(i, e)],
        "naive_pyav": lambda i, e: naive_item(ds, i, e),
        "raw_decord": lambda i, e: decord_item(ds, i, e),
    }, n, repeats)
    ours, local, naive, raw = rates["autovid"], rates["in_process"], rates["naive_pyav"], rates["raw_decord"]
    dl2, dl2_local = loader_rate(ds, 2, repeats), loader_rate(inproc, 2, repeats)
    return {"input": name, "K x L": f"{k} x {l}", "videos": n, "autovid": ours, "in_process": local,
            "naive_pyav": naive, "raw_decord": raw, "DataLoader": dl2, "DL_in_process": dl2_local,
            "vs_naive": ours / naive, "vs_decord": ours / raw, "vs_in_process": ours / local,
            "DL_vs_in_process": dl2 / dl2_local}


# ------------------------------------------------------------------------------------------ workers sweep

SWEEP_SPEC = dict(num_segments=4, frames_per_segment=2, crop_size=112)  # the paper's search clip (ucf101.yaml)
UCF101_RESIZE = (128, 171)  # tune_configs/ucf101.yaml's data.resize (h, w)


def write_mpeg4(path: Path, frames: np.ndarray, *, bit_rate: int, gop: int, fps: int = 25) -> Path:
    """MPEG-4 Part 2 in AVI like write_video, with the bitrate and keyframe interval chosen."""
    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate, stream.gop_size = bit_rate, gop
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


# file set -> encoder; the same frames go through each
ENCODINGS: dict[str, Callable[[Path, np.ndarray], Path]] = {
    "hi_rate": lambda path, frames: write_video(path, frames),  # autovid's writer: ~3.8 Mbit/s, GOP 12
    "ucf_rate": lambda path, frames: write_mpeg4(path, frames, bit_rate=500_000, gop=300),
}


def ucf101_folders(out: Path, *, classes: int, groups: int, seconds: float = 7.0) -> dict[str, Path]:
    """One UCF101-layout root per file set of :data:`ENCODINGS`, the same 320x240 frames in each.

        <root>/Texture<c>/v_Texture<c>_g<NN>_c01.avi, <root>/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt
    Group 1 is the test split (build_loaders wants one), the other groups the train split.
    """
    rng = np.random.default_rng(1)
    roots = {name: out / name for name in ENCODINGS}
    names = [f"Texture{c}" for c in range(classes)]
    train, test = [], []
    for label, name in enumerate(names):
        for group in range(1, groups + 1):
            rel = f"{name}/v_{name}_g{group:02d}_c01.avi"
            frames = texture_frames(rng, int(25 * seconds))
            for enc, root in roots.items():
                (root / name).mkdir(parents=True, exist_ok=True)
                ENCODINGS[enc](root / rel, frames)
            (test if group == 1 else train).append((rel, label + 1))
    for root in roots.values():
        lists = root / "ucfTrainTestlist"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
        (lists / "trainlist01.txt").write_text("".join(f"{rel} {lab}\n" for rel, lab in train))
        (lists / "testlist01.txt").write_text("".join(f"{rel}\n" for rel, _ in test))
    return roots


def repeat_train_rows(manifest: pd.DataFrame, items: int) -> pd.DataFrame:
    """The manifest with its train rows repeated to ``items`` rows (an epoch of that many clips), test rows kept."""
    train = manifest[manifest["split"] == "train"]
    reps = math.ceil(items / len(train))
    return pd.concat([pd.concat([train] * reps).head(items), manifest[manifest["split"] != "train"]],
                     ignore_index=True)


@dataclass(frozen=True)
class Variant:
    name: str
    files: str  # a key of ENCODINGS
    resize: tuple[int, int] | None
    isolate: bool


VARIANTS = (
    Variant("base", "hi_rate", UCF101_RESIZE, True),
    Variant("native", "hi_rate", None, True),
    Variant("in_process", "hi_rate", UCF101_RESIZE, False),
    Variant("ucf_rate", "ucf_rate", UCF101_RESIZE, True),
)


class TreeCPU:
    """CPU seconds (user + system) of this process and all its descendants, per process, so that a
    process that ends between two readings keeps its last reading instead of dropping out of the sum."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.procs: dict[int, psutil.Process] = {}

    def read(self) -> dict[int, float]:
        for proc in (self.me, *self.me.children(recursive=True)):
            self.procs.setdefault(proc.pid, proc)
        out = {}
        for pid, proc in self.procs.items():
            try:
                t = proc.cpu_times()
                out[pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    @staticmethod
    def delta(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(after.get(pid, before.get(pid, 0.0)) - before.get(pid, 0.0) for pid in before.keys() | after.keys())


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy so far (all cores)."""
    t = psutil.cpu_times()
    not_busy = ("idle", "iowait", "guest", "guest_nice")  # Linux counts guest time inside user/nice already
    return sum(t) - sum(getattr(t, name, 0.0) for name in not_busy)


def timed_epoch(loader: DataLoader, tree: TreeCPU) -> dict[str, float]:
    """One epoch of a (warm) loader: clips/s, loader-tree CPU seconds per clip, cores busy elsewhere."""
    batches = iter(loader)  # persistent workers: drains what a previous partial pass left, then starts the epoch
    cpu0, busy0, start = tree.read(), machine_busy(), time.perf_counter()
    clips = sum(len(y) for _, y in batches)
    wall = time.perf_counter() - start
    cpu = tree.delta(cpu0, tree.read())
    busy = machine_busy() - busy0
    return {"clips_per_s": clips / wall, "cpu_per_clip": cpu / clips, "others": max(0.0, busy - cpu) / wall}


def warm_up(loader: DataLoader, workers: int) -> None:
    """Start the workers and their decoding children: one batch per worker (round-robin), outside the timing."""
    for i, _ in enumerate(loader):
        if i + 1 >= max(1, workers):
            break


def release(loader: DataLoader) -> None:
    """End a loader's workers and this process's decoding child before the next group starts."""
    dataset = loader.dataset
    assert isinstance(dataset, VideoClipDataset)
    if dataset.decoder is not None:
        dataset.decoder.close()
    del loader


def gpu_rate(path: str | None, config: str, batch_size: int) -> tuple[float | None, str]:
    """(clips/s, where it comes from) from search_step.py's JSON (contract in the docstring), or (None, why not)."""
    if not path:
        return None, "not measured (no BENCH_GPU_JSON)"
    try:
        data = json.loads(Path(path).read_text())
        rows = [r for r in data["rows"] if isinstance(r, dict) and r.get("config") == config
                and r.get("order", "first") == "first" and r.get("fast", True) is True]
        if not rows:
            return None, f"not measured (no {config!r} first-order fast row in {path})"
        row = rows[0]
        rate = float(row["clips_per_s"])
        if not math.isfinite(rate) or rate <= 0:
            return None, f"not measured (clips_per_s = {row['clips_per_s']!r} in {path})"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"not measured (cannot read {path}: {type(exc).__name__}: {exc})"
    want = {"batch": batch_size, "segments": SWEEP_SPEC["num_segments"], "frames": SWEEP_SPEC["frames_per_segment"],
            "size": SWEEP_SPEC["crop_size"]}
    off = {k: row[k] for k, v in want.items() if k in row and row[k] != v}
    note = f"; WARNING: measured at {off}, the sweep is at {want}" if off else ""
    return rate, f"{rate:.1f} clips/s on {data.get('device', '?')} (row {config}/first/fast of {path}){note}"


def workers_sweep(tmp: Path, *, workers: list[int], batches: int, batch_size: int, repeats: int,
                  gpu: float | None) -> pd.DataFrame:
    start = time.perf_counter()
    roots = ucf101_folders(tmp / "ucf101_layout", classes=2, groups=6)
    manifests = {name: repeat_train_rows(build_manifest(root, "ucf101"), batches * batch_size)
                 for name, root in roots.items()}
    distinct = manifests["hi_rate"].loc[manifests["hi_rate"]["split"] == "train", "path"].nunique()
    sizes = {name: sum(f.stat().st_size for f in root.rglob("*.avi")) / len(list(root.rglob("*.avi")))
             for name, root in roots.items()}
    print(f"\nworkers sweep: {distinct} distinct 320x240 MPEG-4 train videos (7 s, 25 fps) per file set, written and "
          f"indexed in {time.perf_counter() - start:.1f} s; mean file size "
          + ", ".join(f"{n} {b / 2**20:.2f} MiB ({8 * b / 7 / 1e6:.2f} Mbit/s)" for n, b in sizes.items())
          + f"; epoch = {batches} batches x {batch_size} clips", flush=True)
    tree = TreeCPU()
    rows = []
    for w in workers:
        loaders = {}
        for v in VARIANTS:
            spec = ClipSpec(resize=v.resize, **SWEEP_SPEC)  # type: ignore[arg-type]
            with warnings.catch_warnings():  # W above the core count is deliberate here
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                bundle = build_loaders(manifests[v.files], spec=spec, batch_size=batch_size, seed=0,
                                       num_workers=w, train_portion=None, isolate_decoding=v.isolate)
                loaders[v.name] = bundle.train
                warm_up(bundle.train, w)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in loaders}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            for _ in range(repeats):
                for name, loader in loaders.items():
                    runs[name].append(timed_epoch(loader, tree))
        for name, results in runs.items():
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            rates = [r["clips_per_s"] for r in results]
            spread = 100 * (max(rates) - min(rates)) / 2 / med["clips_per_s"]
            rows.append({"variant": name, "W": w, **med, "±%": spread})
        print(f"  W={w}: " + ", ".join(f"{r['variant']} {r['clips_per_s']:.1f}" for r in rows[-len(loaders):])
              + f" clips/s (load average {os.getloadavg()[0]:.2f})", flush=True)
        for loader in loaders.values():
            release(loader)
        loaders.clear()
        gc.collect()
    table = pd.DataFrame(rows)
    base = table[table["variant"] == "base"].set_index("W")["clips_per_s"]
    table["vs_base"] = table["clips_per_s"] / table["W"].map(base)
    table["cpu_ms/clip"] = 1000 * table["cpu_per_clip"]
    table["clips/s/core"] = 1 / table["cpu_per_clip"]
    table["GPU clips/s"] = f"{gpu:.1f}" if gpu is not None else "not measured"
    table["loader/GPU"] = table["clips_per_s"] / gpu if gpu is not None else float("nan")
    return table.drop(columns="cpu_per_clip")


def report_sweep(table: pd.DataFrame, *, gpu: float | None, gpu_source: str, repeats: int, batch_size: int) -> None:
    shown = table.set_index(["variant", "W"])[["clips_per_s", "±%", "vs_base", "cpu_ms/clip", "clips/s/core",
                                               "others", "GPU clips/s", "loader/GPU"]]
    if gpu is None:
        shown = shown.drop(columns="loader/GPU")
    k, l, crop = SWEEP_SPEC["num_segments"], SWEEP_SPEC["frames_per_segment"], SWEEP_SPEC["crop_size"]
    print(f"\nworkers sweep: DataLoader clips/s at {k} x {l} x {crop}x{crop}, batch {batch_size} (median of {repeats} "
          f"epochs); {psutil.cpu_count()} CPUs")
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 160):
        print(shown.to_string())
    print("±% = half the range of the epochs' clips/s; vs_base = clips/s / base's at the same W; cpu_ms/clip and "
          "clips/s/core:\nCPU time of this process, its workers and their decoding children per clip; others = cores "
          "busy with other\nprocesses (and steal) meanwhile: the machine's other load, which clips/s shares and "
          "CPU time per clip does not")
    print(f"GPU consumption: {gpu_source}")
    print("clips/s per core with workers (W >= 1): best cell (contention only ever adds CPU time), median over W:")
    per_core = table[table["W"] >= 1].groupby("variant", sort=False)["clips/s/core"]
    for (name, best), median in zip(per_core.max().items(), per_core.median()):
        need = f" -> {gpu / best:.1f}-{gpu / median:.1f} loader cores for {gpu:.1f} clips/s" if gpu is not None else ""
        print(f"  {name:<11} {best:6.1f} ({median:.1f}) clips/s per core{need}")
    if gpu is None:
        print("  loader cores a GPU needs = its clips/s (search_step.py, ucf101 row) / clips/s per core above")
    best = table.loc[table.groupby("variant", sort=False)["clips_per_s"].idxmax()]
    for _, r in best.iterrows():
        print(f"  {r['variant']:<11} best at W={r['W']}: {r['clips_per_s']:.1f} clips/s")


def contenders(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    synth_root = ensure_synthetic(args.cache_dir)
    t_synth = time.perf_counter() - start
    start = time.perf_counter()
    synth = build_manifest(synth_root, "ucf101")
    t_index = time.perf_counter() - start
    print(f"synthetic benchmark: {len(synth)} videos ready in {t_synth:.1f} s (cached after the first run); "
          f"indexed in {t_index:.2f} s", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ucf_like_videos(Path(tmp) / "ucf_like", args.ucf_videos)  # one class folder
        ucf_manifest = build_manifest(Path(tmp), "folder")
        for k, l in ((3, 8), (4, 2)):  # the setting, then the paper's
            rows.append(measure("ucf-like 320x240 -> 171x128 -> 112", ucf_manifest, k=k, l=l, crop=112,
                                resize=(128, 171), repeats=args.repeats))
    rows.append(measure("synthetic 64x64 -> 56", synth.head(args.synthetic_videos), k=3, l=8, crop=56, resize=None,
                        repeats=args.repeats))

    table = pd.DataFrame(rows).set_index(["input", "K x L"])
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 160):
        print(f"\nclips/s (median of {args.repeats}, one process; DataLoader / DL_in_process: 2 workers, batch 2)")
        print(table.to_string())
    print("\nvs_naive = autovid / naive PyAV (target >= 10x); vs_decord = autovid / raw decord (target >= 0.90)")
    print("vs_in_process, DL_vs_in_process = isolated decoding / in-process decoding (1.0 = isolation is free)",
          flush=True)


def usable_backends() -> list[str]:
    """The backends that can decode here; the others are named with the reason."""
    usable = []
    for name in BACKENDS:
        try:
            usable.append(resolve(name))
        except Exception as exc:  # noqa: BLE001 - a missing package or library: reported, not benchmarked
            print(f"  {name}: not measured ({exc})")
    return usable


BACKEND_SETTINGS = {  # name -> (ClipSpec arguments, what it is)
    "search": (dict(num_segments=4, frames_per_segment=2, crop_size=112, resize=UCF101_RESIZE), "4 x 2 at 171x128"),
    "dense": (dict(num_segments=3, frames_per_segment=8, crop_size=112, mode="dense"), "3 x 8 dense at 320x240"),
}


def backends(args: argparse.Namespace) -> None:
    print("\ndecoder backends:", flush=True)
    names = usable_backends()
    tree = TreeCPU()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ucf_like_videos(Path(tmp) / "ucf_like", args.ucf_videos)
        manifest = build_manifest(Path(tmp), "folder", decoder="pyav")
        for setting, (spec_args, what) in BACKEND_SETTINGS.items():
            spec = ClipSpec(**spec_args)  # type: ignore[arg-type]
            datasets = {name: VideoClipDataset(manifest, split=None, spec=spec, train=True, seed=0, decoder=name,
                                               decode_device=args.torchcodec_device if name == "torchcodec" else "cpu")
                        for name in names}
            for ds in datasets.values():
                ds[(0, 0)]  # warm-up: the decoding child, its imports, the page cache
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for epoch in range(1, args.repeats + 1):
                for name, ds in datasets.items():
                    cpu0, start = tree.read(), time.perf_counter()
                    for i in range(len(ds)):
                        ds[(i, epoch)]
                    wall, cpu = time.perf_counter() - start, tree.delta(cpu0, tree.read())
                    runs[name].append((len(ds) / wall, 1000 * cpu / len(ds)))
            for name, ds in datasets.items():
                rates = [r for r, _ in runs[name]]
                rate, cpu_ms = statistics.median(rates), statistics.median(c for _, c in runs[name])
                device = args.torchcodec_device if name == "torchcodec" else "cpu"
                rows.append({"setting": f"{setting} ({what})", "backend": f"{name} ({device})", "clips_per_s": rate,
                             "±%": 100 * (max(rates) - min(rates)) / 2 / rate, "cpu_ms/clip": cpu_ms,
                             "clips/s/core": 1000 / cpu_ms, "failures": ds.failures})
                assert ds.decoder is not None
                ds.decoder.close()
    table = pd.DataFrame(rows)
    for column, ratio in (("clips_per_s", "rate_vs_decord"), ("cpu_ms/clip", "cpu_vs_decord")):
        ref = table[table["backend"].str.startswith("decord")].set_index("setting")[column]
        table[ratio] = table[column] / table["setting"].map(ref)
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 160):
        print(f"\ndecoder backends: one process, isolated decoding, {args.ucf_videos} videos x {args.repeats} epochs "
              "(medians; ±% = half the range)")
        print(table.set_index(["setting", "backend"]).to_string())
    print("cpu_ms/clip: CPU time of this process and its decoding children per clip; clips/s/core = 1000 / cpu_ms; "
          "failures = clips whose video had to be replaced (0: every backend decoded every clip)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=os.environ.get("BENCH_SECTIONS", ",".join(SECTIONS)),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: $BENCH_SECTIONS or all)")
    parser.add_argument("--repeats", type=int, default=5, help="contenders: interleaved repeats")
    parser.add_argument("--ucf-videos", type=int, default=8)
    parser.add_argument("--synthetic-videos", type=int, default=60)
    parser.add_argument("--cache-dir", type=Path, default=Path(".autovid_cache"))
    parser.add_argument("--workers", default="0,1,2,4", help="workers sweep: DataLoader worker counts")
    parser.add_argument("--sweep-batches", type=int, default=8,
                        help="workers sweep: batches per timed epoch (a multiple of every W: no idle tail)")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="workers sweep: timed epochs per cell")
    parser.add_argument("--batch-size", type=int, default=32, help="workers sweep (tune_configs/ucf101.yaml: 32)")
    parser.add_argument("--gpu-json", default=os.environ.get("BENCH_GPU_JSON"),
                        help="search_step.py's JSON with the GPU's clips/s (default: $BENCH_GPU_JSON)")
    parser.add_argument("--gpu-config", default="ucf101", help="the row of --gpu-json to read")
    parser.add_argument("--torchcodec-device", default="cpu", help="backends: where TorchCodec decodes (cpu, cuda)")
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, decord {decord.__version__}, {psutil.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; sections: {', '.join(sections)}", flush=True)

    if "contenders" in sections:
        contenders(args)
    if "backends" in sections:
        backends(args)
    if "workers" in sections:
        gpu, gpu_source = gpu_rate(args.gpu_json, args.gpu_config, args.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            table = workers_sweep(Path(tmp), workers=[int(w) for w in args.workers.split(",")],
                                  batches=args.sweep_batches, batch_size=args.batch_size, repeats=args.sweep_repeats,
                                  gpu=gpu)
        report_sweep(table, gpu=gpu, gpu_source=gpu_source, repeats=args.sweep_repeats, batch_size=args.batch_size)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
