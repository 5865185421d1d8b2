"""Loader throughput: autovid's clip loader vs a naive full-decode PyAV loader vs raw decord get_batch.

    python benchmarks/loader.py            # ~1-2 minutes on 2 CPU cores

Two inputs, measured in the same run:
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
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from autovid.data.dataset import VideoClipDataset
from autovid.data.loaders import EpochSampler, worker_init
from autovid.data.manifest import build_manifest
from autovid.data.sampling import ClipSpec, clip_indices
from autovid.data.synthetic import ensure_synthetic, write_video


def ucf_like_videos(out: Path, count: int, seconds: float = 7.0) -> list[Path]:
    """320x240 MPEG-4 AVIs with moving texture and noise (so the encoder has real work, like real footage)."""
    rng = np.random.default_rng(0)
    n, h, w = int(25 * seconds), 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tint = np.array([1.0, 0.8, 0.6], np.float32)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(count):
        fx, fy = rng.uniform(0.01, 0.05, 2)
        frames = np.empty((n, h, w, 3), np.uint8)
        for t in range(n):
            base = 0.5 + 0.25 * np.sin(fx * (xx + 2 * t)) * np.cos(fy * (yy - t))
            frame = base[..., None] * tint + rng.normal(0, 0.03, (h, w, 1)).astype(np.float32)
            frames[t] = (np.clip(frame, 0, 1) * 255).astype(np.uint8)
        paths.append(write_video(out / f"ucf_{v:02d}.avi", frames))
    return paths


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ucf-videos", type=int, default=8)
    parser.add_argument("--synthetic-videos", type=int, default=60)
    parser.add_argument("--cache-dir", type=Path, default=Path(".autovid_cache"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    synth_root = ensure_synthetic(args.cache_dir)
    t_synth = time.perf_counter() - start
    start = time.perf_counter()
    synth = build_manifest(synth_root, "ucf101")
    t_index = time.perf_counter() - start
    print(f"synthetic benchmark: {len(synth)} videos ready in {t_synth:.1f} s (cached after the first run); "
          f"indexed in {t_index:.2f} s")

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
    print("vs_in_process, DL_vs_in_process = isolated decoding / in-process decoding (1.0 = isolation is free)")


if __name__ == "__main__":
    main()
