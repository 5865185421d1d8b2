"""The motion-prior stem initialisation: it turns the stem into a frame difference, and only where time is mixed."""

from __future__ import annotations

import torch

from autovid.config import load_config
from autovid.engine.init import first_temporal_conv, temporal_difference_init
from autovid.engine.session import build_network
from autovid.models import create_model
from autovid.nas.genotype import Genotype
from autovid.nas.search_space import load_search_space
from autovid.nas.supernet import SuperNet


def _genotype(op: str) -> Genotype:
    return Genotype("module", ((op, 0), (op, 0), (op, 1), (op, 0), (op, 2)), (1, 2, 3))


def _static_response(net: torch.nn.Module) -> torch.Tensor:
    """The stem's output on a clip whose frames are all the same, away from the zero-padded first frame."""
    frame = torch.randn(2, 3, 1, 16, 16)
    clip = frame.expand(2, 3, 4, 16, 16).contiguous()
    return net.stem(clip)[:, :, 1:]


def test_p3d_stem_becomes_a_frame_difference() -> None:
    cfg = load_config("quickstart", ["model.stem_init=temporal_difference"])
    net = build_network(cfg, num_classes=10, genotype=_genotype("conv_3")).eval()
    before = _static_response(net).abs().mean()
    assert temporal_difference_init(net)
    after = _static_response(net).abs().mean()
    # a static scene is (almost) cancelled: only the 0.1 random residual of the kernel still sees it
    assert after < 0.25 * before


def test_spatial_only_networks_are_left_alone() -> None:
    space = load_search_space("p2d")
    net = SuperNet(space, generator=torch.Generator().manual_seed(0), num_classes=4, channels=4, cells=2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert first_temporal_conv(net) is None and not temporal_difference_init(net)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_full_3d_kernels_and_hand_designed_networks_get_a_difference_profile() -> None:
    net = create_model("r3d_18", num_classes=4, width=0.125)
    conv = first_temporal_conv(net)
    assert conv is not None and temporal_difference_init(net)
    w = conv.weight
    centre = w.shape[2] // 2
    assert torch.allclose(w[:, :, centre], -w[:, :, centre - 1])  # +1 / -1 taps of one spatial filter
    assert torch.count_nonzero(w.sum(dim=2)) == 0  # no response to a static scene
    assert torch.count_nonzero(w[:, :, centre + 1 :]) == 0


def test_init_is_deterministic_and_config_driven() -> None:
    from autovid.engine.session import apply_init

    nets = []
    for _ in range(2):
        cfg = load_config("quickstart", ["model.stem_init=temporal_difference"])
        net = build_network(cfg, num_classes=10, genotype=_genotype("sep_conv_3"))
        apply_init(cfg, net)
        nets.append(net)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    plain = build_network(load_config("quickstart", ["model.stem_init=random"]), num_classes=10,
                          genotype=_genotype("sep_conv_3"))
    assert not torch.equal(first_temporal_conv(plain).weight, first_temporal_conv(nets[0]).weight)
