"""Hand-designed video networks (C3D, R3D-18, R(2+1)D-18) behind one registry: ``create_model(name, ...)``."""

from autovid.models import c3d as _c3d  # noqa: F401  (registers "c3d")
from autovid.models import resnet3d as _resnet3d  # noqa: F401  (registers "r3d_18", "r2plus1d_18")
from autovid.models.registry import (
    SegmentConsensus,
    create_model,
    list_models,
    model_kwargs,
    register_model,
    scale_channels,
)

__all__ = ["SegmentConsensus", "create_model", "list_models", "model_kwargs", "register_model", "scale_channels"]
