"""Re-evaluate a trained network from its checkpoint (multi-clip testing), outside any Tune run; rebuild it and
describe its input for export (`trained_network`, `network_metadata`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

import autovid
from autovid.config import ExperimentConfig, validate_config
from autovid.data.backends import resolve as resolve_decoder
from autovid.data.transforms import MEAN, STD
from autovid.engine.checkpoint import load_state
from autovid.engine.networks import build_network
from autovid.engine.session import TrainSession
from autovid.engine.setup import clip_shape
from autovid.errors import UserError
from autovid.nas.genotype import Genotype


def evaluate_checkpoint(path: Path, *, test_clips: int | None = None) -> dict[str, Any]:
    """Load a retrain checkpoint (`state.pt`), rebuild its network and data, evaluate on the test split."""
    if path.is_dir():
        path = path / "state.pt"
    state = load_state(path)
    if state.get("kind") != "train":
        raise UserError(f"{path}: not a retrain checkpoint (search checkpoints hold a supernet)")
    cfg = validate_config(state["config"], source=str(path))
    if test_clips is not None:
        cfg = cfg.with_overrides({"data.test_clips": test_clips}, source="--clips")
    genotype = Genotype.from_json(state["genotype"]) if state.get("genotype") else None
    session = TrainSession(cfg, genotype)
    session.model.load_state_dict(state["model"])
    result = session.evaluate()
    result["epoch"] = state["epoch"]
    result["class_names"] = state.get("class_names")
    return result


def trained_network(state: Mapping[str, Any], *, source: str = "checkpoint") -> tuple[nn.Module, ExperimentConfig]:
    """The network of a retrain checkpoint's state (`load_state`), its weights loaded, on the CPU in eval mode,
    with the config it was trained under. No data is touched: the class count comes from `class_names`."""
    if state.get("kind") != "train":
        raise UserError(f"{source}: not a retrain checkpoint (search checkpoints hold a supernet)")
    cfg = validate_config(state["config"], source=source)
    genotype = Genotype.from_json(state["genotype"]) if state.get("genotype") else None
    model = build_network(cfg, num_classes=len(state["class_names"]), genotype=genotype)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def network_metadata(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a consumer of an exported retrained network needs beside its weights: the classes in logit order,
    how a clip is sampled and normalised into the input tensor, and the architecture (genotype JSON).

    Plain lists, numbers and strings only (it is written into MLflow's MLmodel YAML)."""
    cfg = validate_config(state["config"], source="checkpoint")
    data = cfg.data
    genotype = state.get("genotype")
    return {
        "autovid_version": autovid.__version__,
        "class_names": list(state["class_names"]),
        "input": {
            "layout": "batch, segments K, channels C, frames L, height H, width W",
            "shape": list(clip_shape(data)),  # one clip, without the batch dimension
            "num_segments": data.num_segments,
            "frames_per_segment": data.frames_per_segment,
            "stride": data.stride,
            "mode": data.mode,
            "modality": data.modality,
            "modality_note": "one more frame per segment (per clip in dense mode) is decoded and normalised, then "
                             "consecutive frames are subtracted" if data.modality == "rgb_diff" else None,
            "crop_size": data.crop_size,
            "resize": list(data.resize) if data.resize is not None else None,
            # data.decoder; `auto` resolved on the machine writing this metadata (where a checkpoint is exported)
            "decoder": resolve_decoder(data.decoder) if data.decoder == "auto" else data.decoder,
            "dtype": "float32",
            # per channel: (pixel / 255 - mean) / std, RGB order
            "normalization": {"mean": list(MEAN), "std": list(STD), "pixel_scale": 255.0},
        },
        "output": "logits, batch x classes (softmax for probabilities)",
        "model": cfg.train.model or "genotype",
        "search_space": cfg.search_space if genotype else None,
        "genotype": genotype,
        "genotype_hash": Genotype.from_json(genotype).hash if genotype else None,
        "epochs_trained": int(state["epoch"]),
    }
