"""Tests for the hand-designed video networks and their registry."""

from __future__ import annotations

import pytest
import torch

from autovid.errors import UserError
from autovid.models import create_model, list_models, model_kwargs, register_model

# Published parameter counts at width 1.0, 112x112 input, 16 frames, 101 classes.
PUBLISHED = {"r3d_18": 33.2e6, "r2plus1d_18": 31.3e6, "c3d": 78e6}
TINY = (2, 2, 3, 4, 32, 32)  # [B, K, C, L, H, W]


def _clip_kwargs(name: str, frames: int, size: int) -> dict:
    # C3D sizes fc6 from the clip; the ResNets pool globally and take any clip.
    return {"frames": frames, "input_size": size} if "frames" in model_kwargs(name) else {}


def test_registry_lists_the_three_baselines():
    assert set(list_models()) >= {"c3d", "r3d_18", "r2plus1d_18"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    with torch.device("meta"):  # shapes only: no 78 M-parameter allocation, no forward
        model = create_model(name, num_classes=101, width=1.0, **_clip_kwargs(name, 16, 112))
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(PUBLISHED[name], rel=0.03), f"{name}: {n:,}"


@pytest.mark.parametrize("name", ["c3d", "r3d_18", "r2plus1d_18"])
@pytest.mark.parametrize("consensus", ["avg", "max"])
def test_forward_shape_at_tiny_width(name, consensus):
    model = create_model(name, num_classes=5, width=0.125, consensus=consensus, **_clip_kwargs(name, 4, 32))
    x = torch.randn(*TINY, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_consensus_pools_per_segment_logits():
    model = create_model("r3d_18", num_classes=3, width=0.125, consensus="max").eval()
    x = torch.randn(*TINY, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        per_segment = model.net(x.flatten(0, 1)).view(2, 2, 3)
        assert torch.allclose(model(x), per_segment.amax(1))
        model.consensus = "avg"
        assert torch.allclose(model(x), per_segment.mean(1), atol=1e-6)


def test_width_scales_channels_but_keeps_at_least_four():
    small = create_model("r3d_18", num_classes=2, width=0.01)
    convs = [m for m in small.modules() if isinstance(m, torch.nn.Conv3d)]
    assert min(m.out_channels for m in convs) >= 4
    n_small = sum(p.numel() for p in small.parameters())
    n_half = sum(p.numel() for p in create_model("r3d_18", num_classes=2, width=0.25).parameters())
    assert n_small < n_half


def test_same_generator_seed_gives_same_weights():
    a = create_model("r2plus1d_18", num_classes=4, width=0.125, generator=torch.Generator().manual_seed(7))
    b = create_model("r2plus1d_18", num_classes=4, width=0.125, generator=torch.Generator().manual_seed(7))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_c3d_rejects_a_clip_of_another_shape():
    model = create_model("c3d", num_classes=3, width=0.125, frames=4, input_size=32)
    with pytest.raises(ValueError, match="built for clips"):
        model(torch.randn(1, 1, 3, 8, 32, 32))


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError) as err:
        create_model("resnet9000", num_classes=10)
    for name in ("c3d", "r3d_18", "r2plus1d_18"):
        assert name in str(err.value)


def test_unknown_kwarg_is_rejected_not_ignored():
    with pytest.raises(UserError, match="frames"):
        create_model("r3d_18", num_classes=10, frames=16)
    with pytest.raises(UserError, match="consensus"):
        create_model("r3d_18", num_classes=10, consensus="median")


def test_input_must_be_a_segment_batch():
    model = create_model("r3d_18", num_classes=3, width=0.125)
    with pytest.raises(ValueError, match="B, K, C, L, H, W"):
        model(torch.randn(2, 3, 4, 32, 32))


def test_register_model_requires_keyword_only_entry():
    with pytest.raises(TypeError):

        @register_model
        def bad_model(num_classes, width=1.0, generator=None):  # positional: rejected
            raise AssertionError
