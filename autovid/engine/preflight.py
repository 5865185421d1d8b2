"""Check a run before Ray starts: device, search space, model, genotype, one decoded frame, one forward pass.

Whatever a trial would only discover after Ray is up (and report as a traceback per retry) is checked here
in the driver, so bad input answers at once with one line and exit code 2:

    config ─▶ device, a trial's CPUs/GPUs fit this machine (local runs) ─▶ search space
           ─▶ genotype fits it / model registered ─▶ manifest
           ─▶ one frame decoded at data.resize ─▶ the network's forward on a meta-device clip
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pandas as pd
import torch

from autovid.config import ExperimentConfig
from autovid.data.backends import resolve as resolve_decoder
from autovid.data.decoding import DecodeError, DecoderLimitation, DecodingProcess
from autovid.data.manifest import class_names
from autovid.engine.setup import clip_shape, prepare_manifest, resolve_device
from autovid.errors import UserError
from autovid.nas.genotype import Genotype
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import load_search_space

RunKind = Literal["search", "train"]
PROBE_VIDEOS = 5  # usable videos tried for the decode-size check before giving up on finding a good one


def preflight(cfg: ExperimentConfig, *kinds: RunKind, genotype_json: str | None = None, local: bool = True) -> None:
    """Raise a one-line UserError if a run of `cfg` cannot start: its data once, then the network of each of
    `kinds` ("search": the supernet; "train": the retrained network of `genotype_json` or `train.model`).
    `local`: trials run on this machine (a cluster's workers may have the GPU the driver lacks, so the device
    is only checked locally)."""
    from autovid.engine.networks import build_network, build_supernet  # the networks import the engine's heavy parts

    if local:
        resolve_device(cfg.device)
        check_trial_fits(cfg, cpus=float(os.cpu_count() or 1), gpus=torch.cuda.device_count())
    space = load_search_space(cfg.search_space)
    manifest = prepare_manifest(cfg.data)
    num_classes = check_manifest(manifest)
    check_decoding(cfg, manifest)
    for kind in kinds:
        model: torch.nn.Module
        if kind == "search":
            model = build_supernet(cfg, num_classes=num_classes, space=space)
        else:
            genotype = Genotype.from_json(genotype_json) if genotype_json and cfg.train.model is None else None
            if genotype is not None:
                space.check_genotype(genotype)
            model = build_network(cfg, num_classes=num_classes, genotype=genotype, space=space)  # no genotype: refused
        check_forward(model, clip_shape(cfg.data), what=f"the {kind} network")


def check_trial_fits(cfg: ExperimentConfig, *, cpus: float, gpus: int) -> None:
    """A trial that needs more than the machine has would wait forever in Ray's queue: refuse it now."""
    r = cfg.tune.resources
    for kind, need, have in (("CPUs", r.total_cpu, cpus), ("GPUs", r.total_gpu, gpus)):
        if need > have:
            raise UserError(f"tune.resources: one trial needs {need:g} {kind} (workers={r.workers} × "
                            f"{kind[:-1].lower()}={need / r.workers:g}) but this machine has {have:g}; "
                            f"lower them, or run on a cluster (--address)")


def example_genotype(cfg: ExperimentConfig) -> str:
    """A genotype of the configured space (JSON), to check the retrain's network before a search has run."""
    return sample_genotype(load_search_space(cfg.search_space), np.random.default_rng(0)).to_json()


def check_manifest(manifest: pd.DataFrame) -> int:
    """The number of classes of a manifest that can be trained on (usable train and test videos)."""
    usable = manifest[manifest["status"] == "ok"]
    for split in ("train", "test"):
        if not (usable["split"] == split).any():
            raise UserError(f"the manifest has no usable videos in split {split!r}")
    return len(class_names(manifest))


def check_decoding(cfg: ExperimentConfig, manifest: pd.DataFrame) -> None:
    """Check that data.decoder is installed, then decode one frame of one usable video at the configured size
    (decord refuses some output widths)."""
    backend = resolve_decoder(cfg.data.decoder)  # a missing package: one line now, not a replaced video per clip
    if cfg.data.resize is None:
        return  # native size: every usable video was decoded at it when indexed
    height, width = cfg.data.resize
    decoder = DecodingProcess(
        backend=backend
    )  # a file swapped for one that crashes the decoder must not take the driver down
    try:
        for path in manifest.loc[manifest["status"] == "ok", "path"].head(PROBE_VIDEOS):
            try:
                decoder.read_frames(str(path), np.zeros(1, dtype=np.int64), width=width, height=height)
                return
            except DecoderLimitation as exc:
                raise UserError(f"data.resize={list(cfg.data.resize)}: {exc}") from None
            except DecodeError:
                continue  # a bad file: training replaces it; try the next one
    finally:
        decoder.close()


def check_forward(model: torch.nn.Module, shape: tuple[int, ...], *, what: str) -> None:
    """Run `model` on a meta-device clip of `shape`: every layer's shapes are checked, nothing is computed.
    The model is moved to the meta device: pass one built for the check."""
    meta = model.to("meta")
    try:
        with torch.no_grad():
            meta(torch.empty((2, *shape), device="meta"))
    except (RuntimeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:240]
        raise UserError(f"{what} cannot process clips of shape {list(shape)} (K, C, L, H, W): {first}") from None
