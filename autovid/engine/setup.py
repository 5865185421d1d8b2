"""From a validated config to the things a run needs: device, manifest, loaders, search space."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autovid.config import DataConfig
from autovid.data.loaders import LoaderBundle, build_loaders
from autovid.data.manifest import build_manifest, read_manifest, summarize_manifest, write_manifest
from autovid.data.synthetic import cache_key as synthetic_key
from autovid.data.synthetic import ensure_synthetic
from autovid.errors import UserError
from autovid.rng import Stream
from autovid.rng import generator as rng_stream

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA on a machine without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available (use device=auto or device=cpu)")
    return torch.device(name)


def _cache_key(payload: dict) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def manifest_file(data: DataConfig) -> Path:
    """The Parquet file `prepare_manifest` reads: `data.manifest`, or the cached index of the data's videos."""
    if data.manifest is not None:
        return Path(data.manifest).resolve()
    cache = Path(data.cache_dir).resolve()
    if data.dataset == "synthetic":
        # the folder ensure_synthetic generates into, named by its parameters (not generated here)
        root, fmt = cache / "synthetic" / f"synthetic-{synthetic_key(**data.synthetic.model_dump())}", "ucf101"
    else:
        assert data.root is not None  # checked by DataConfig
        root, fmt = Path(data.root).resolve(), data.dataset
    key = _cache_key({"root": str(root), "format": fmt, "split": data.split})
    return cache / "manifests" / f"{fmt}-{key}.parquet"


def prepare_manifest(data: DataConfig) -> pd.DataFrame:
    """The manifest for a data config: a given Parquet file, or indexed once and cached beside the videos.

    Synthetic data is generated on first use; real datasets are indexed (probing every file once) and the
    manifest cached under `data.cache_dir`, so later runs and Ray workers never probe again.
    """
    if data.manifest is not None:
        if not data.manifest.is_file():
            raise UserError(f"data.manifest: file not found: {data.manifest}")
        return read_manifest(data.manifest)
    cache = Path(data.cache_dir).resolve()
    if data.dataset == "synthetic":
        root = ensure_synthetic(cache / "synthetic", **data.synthetic.model_dump())
    else:
        assert data.root is not None  # checked by DataConfig
        root = Path(data.root).resolve()
    fmt = "ucf101" if data.dataset == "synthetic" else data.dataset
    manifest_path = manifest_file(data)
    if manifest_path.is_file():
        return read_manifest(manifest_path)
    log.info("indexing %s (%s, split %d)", root, fmt, data.split)
    frame = build_manifest(root, fmt, split=data.split, progress=False, decoder=data.decoder)
    summary = summarize_manifest(frame)
    if summary["ok"] == 0:  # never cache a manifest that nothing can train on
        reasons = ", ".join(f"{n} {r}" for r, n in summary["quarantined"].items())
        raise UserError(f"no usable video under {root}: every file was quarantined ({reasons})")
    if summary["quarantined"]:
        log.warning("%d videos quarantined: %s", sum(summary["quarantined"].values()), summary["quarantined"])
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(frame, manifest_path)
    return frame


def build_data(data: DataConfig, *, seed: int, train_portion: float | None,
               shard: tuple[int, int] = (0, 1), shuffle_labels: bool = False,
               device: torch.device | None = None) -> LoaderBundle:
    """Loaders for a run: the DARTS weight/α halves (when train_portion is set), the full train split, test;
    with ``shard=(rank, world)`` rank's part of every global batch (``data.batch_size``).

    ``shuffle_labels`` (``search.shuffle_labels``, the search's null control): the train split's labels are
    permuted across its videos (:func:`shuffle_train_labels`) before the weight/α split, so both halves and
    the full train loader carry them; the test split keeps its true labels.

    ``device``: the run's device; with ``data.decoder=torchcodec`` a CUDA device decodes there too (NVDEC)."""
    manifest = prepare_manifest(data)
    if shuffle_labels:
        manifest = shuffle_train_labels(manifest, seed)
    return build_loaders(
        manifest,
        spec=data.clip_spec,
        crop_scale=data.crop_scale,
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        seed=seed,
        train_portion=train_portion,
        test_clips=data.test_clips,
        shard=shard,
        decoder=data.decoder,
        decode_device=decode_device(data.decoder, device),
    )


def decode_device(decoder: str, device: torch.device | None) -> str:
    """Where clips are decoded: on the run's CUDA device for TorchCodec (NVDEC), on the CPU otherwise."""
    if decoder == "torchcodec" and device is not None and device.type == "cuda":
        return str(device)
    return "cpu"


def shuffle_train_labels(manifest: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A copy of ``manifest`` whose usable (``status == "ok"``) train-split rows carry a permutation of their
    own labels, drawn from stream :attr:`Stream.SHUFFLED_LABELS` of ``seed`` (same seed, same permutation).

    Labels move across videos (each video takes another video's label), which destroys the link between a
    video and its class while keeping every class's count; a relabelling of the classes would keep it.
    ``class_name`` moves with ``label``, so the class-name list (label order) is unchanged. Other splits and
    quarantined rows are untouched.
    """
    rows = np.flatnonzero(((manifest["status"] == "ok") & (manifest["split"] == "train")).to_numpy())
    order = rows[rng_stream(seed, Stream.SHUFFLED_LABELS).permutation(len(rows))]
    source = np.arange(len(manifest))  # the row each row takes its label from
    source[rows] = order
    shuffled = manifest.copy()
    for column in ("label", "class_name"):
        shuffled[column] = manifest[column].iloc[source].set_axis(manifest.index)
    moved = int((shuffled["label"].to_numpy()[rows] != manifest["label"].to_numpy()[rows]).sum())
    log.info("search.shuffle_labels: the labels of %d train videos permuted (%d changed): a null-control search",
             len(rows), moved)
    return shuffled


def clip_shape(data: DataConfig) -> tuple[int, int, int, int, int]:
    """Shape of one clip `(K, C, L, H, W)` as the networks see it (dense mode folds K*L into one segment)."""
    return data.clip_spec.shape
