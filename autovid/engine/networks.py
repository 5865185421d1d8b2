"""The network factories: the supernet a search trains and the network a retrain trains, with their initialisation.

    build_supernet(cfg) ─▶ SuperNet(α) at search depth/width, mixed op per device (``model.mixed_op``)
    build_network(cfg, genotype) ─▶ Network(genotype) at retrain depth/width, or a registered model
    (both then ``apply_init``: the motion-prior initialisation, ``model.stem_init``)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autovid.config import ExperimentConfig
from autovid.engine.accounting import count_flops, count_parameters
from autovid.engine.init import temporal_difference_init, temporal_difference_init_all
from autovid.engine.setup import clip_shape
from autovid.errors import UserError
from autovid.nas.cells import VideoNet
from autovid.nas.genotype import Genotype
from autovid.nas.network import Network
from autovid.nas.search_space import SearchSpace, load_search_space
from autovid.nas.supernet import SuperNet


def build_network(
    cfg: ExperimentConfig, *, num_classes: int, genotype: Genotype | None, space: SearchSpace | None = None
) -> nn.Module:
    """The network a retrain trains: a discrete NAS network from a genotype, or a registered model, with the
    configured initialisation (``model.stem_init``) applied."""
    if cfg.train.model is not None:
        from autovid.models import create_model, model_kwargs

        _, _, frames, height, _ = clip_shape(cfg.data)
        # Only networks whose classifier depends on the clip size (C3D's fc6) take frames/input_size.
        extra: dict[str, Any] = {
            k: v for k, v in {"frames": frames, "input_size": height}.items() if k in model_kwargs(cfg.train.model)
        }
        model: nn.Module = create_model(
            cfg.train.model, num_classes=num_classes, width=cfg.train.width, consensus=cfg.model.consensus, **extra
        )
    elif genotype is None:
        raise UserError("retraining needs a genotype (--genotype FILE) or train.model=<registered model>")
    else:
        model = Network(
            generator=torch.Generator().manual_seed(cfg.seed),
            genotype=genotype,
            space=space or load_search_space(cfg.search_space),
            num_classes=num_classes,
            channels=cfg.train.channels,
            cells=cfg.train.cells,
            consensus=cfg.model.consensus,
            drop_path=cfg.train.drop_path,
            stem_multiplier=cfg.train.stem_multiplier,
            fixed_kernel=fixed_kernel(cfg),
        )
    # not only weights: the motion-prior init also makes the stem pad time by replicating edge frames, which no
    # state dict records; every rebuild of a trained network (evaluate, export, predict, MLflow) must get it
    apply_init(cfg, model)
    return model


def build_supernet(cfg: ExperimentConfig, *, num_classes: int, space: SearchSpace | None = None,
                   device: torch.device | None = None) -> SuperNet:
    """The supernet a search trains (on `device`), at search depth and width, with the configured init."""
    mixed_op = cfg.model.mixed_op
    if mixed_op == "auto":
        mixed_op = "reference" if device is not None and device.type == "cuda" else "fused"
    model = SuperNet(
        space or load_search_space(cfg.search_space),
        generator=torch.Generator().manual_seed(cfg.seed),  # weights and α: same seed, same init
        num_classes=num_classes,
        channels=cfg.model.channels,
        cells=cfg.model.cells,
        stem_multiplier=cfg.model.stem_multiplier,
        pc_k=cfg.model.pc_k,
        consensus=cfg.model.consensus,
        mixed_op=mixed_op,
        fixed_kernel=fixed_kernel(cfg),
    )
    apply_init(cfg, model)
    return model


def fixed_kernel(cfg: ExperimentConfig) -> str | None:
    """The kernel style of the layers nobody searches: spatial-only when only the search may mix time."""
    return "p2d" if cfg.model.temporal_mixing == "searched" else None


def apply_init(cfg: ExperimentConfig, model: nn.Module) -> None:
    """The configured initialisation beyond each layer's default (``model.stem_init``): the motion prior goes
    to the stem, or, when only searched operators mix time, to the first searched cell's temporal convolutions
    (hand-designed networks keep it in their first temporal convolution either way)."""
    if cfg.model.stem_init != "temporal_difference":
        return
    if cfg.model.temporal_mixing == "searched" and isinstance(model, VideoNet):
        temporal_difference_init_all(model.cells[0])  # the first cell: the module input's first time mixing
    else:
        temporal_difference_init(model)


def network_cost(cfg: ExperimentConfig, model: nn.Module) -> dict[str, int]:
    """Parameters and FLOPs per clip (one video, all K segments) of a network at the configured input."""
    return {
        "params": count_parameters(model),
        "flops": count_flops(model, (1, *clip_shape(cfg.data))),
    }
