"""The motion-prior stem initialisation: it turns the stem into a frame difference, and only where time is mixed."""

from __future__ import annotations

import torch

from autovid.config import load_config
from autovid.engine.init import first_temporal_conv, temporal_difference_init
from autovid.engine.networks import build_network
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
    # the paper's layout: the stem is the first layer that mixes time
    cfg = load_config("quickstart", ["model.stem_init=temporal_difference", "model.temporal_mixing=anywhere"])
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
    from autovid.engine.networks import apply_init

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


def _segments_shuffled_in_time(clip: torch.Tensor) -> torch.Tensor:
    """[B, K, C, L, H, W] with the L frames of every segment in reverse order."""
    return clip.flip(3)


def test_searched_mixing_leaves_time_to_the_searched_operators() -> None:
    """With model.temporal_mixing=searched a cell of per-frame operators cannot see frame order (the stem
    and the fixed reduction are spatial-only), while the same genotype in the paper's layout can."""
    clip = torch.randn(2, 2, 3, 3, 16, 16)
    outputs = {}
    for mixing in ("anywhere", "searched"):
        cfg = load_config("quickstart", [f"model.temporal_mixing={mixing}", "model.stem_init=temporal_difference"])
        # train mode: batch statistics keep activations at unit scale (fresh running stats shrink them to ~0)
        net = build_network(cfg, num_classes=10, genotype=_genotype("conv_1")).train()
        with torch.no_grad():
            outputs[mixing] = (net(clip), net(_segments_shuffled_in_time(clip)))
    same, reversed_ = outputs["searched"]
    torch.testing.assert_close(same, reversed_, rtol=1e-4, atol=1e-5)
    same, reversed_ = outputs["anywhere"]
    assert (same - reversed_).abs().max() > 1e-3


def test_searched_mixing_moves_the_motion_prior_into_the_first_cell() -> None:
    cfg = load_config("quickstart", ["model.temporal_mixing=searched", "model.stem_init=temporal_difference"])
    net = build_network(cfg, num_classes=10, genotype=_genotype("sep_conv_3")).eval()
    assert first_temporal_conv(net.stem) is None  # the stem is spatial-only
    first_cell = [m for m in net.cells[0].modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1]
    assert first_cell and all(m.padding_mode == "replicate" for m in first_cell)
    for conv in first_cell:  # depthwise temporal kernels: −1 / +1 around the centre, plus the 0.1 residual
        w = conv.weight[:, 0, :, 0, 0]
        assert torch.all(w[:, 1] - w[:, 0] > 1.5)
    later = [m for cell in net.cells[1:] for m in cell.modules() if isinstance(m, torch.nn.Conv3d)
             and m.kernel_size[0] > 1]
    assert later and all(m.padding_mode == "zeros" for m in later)  # only the first cell gets the prior
    supernet_cfg = cfg.with_overrides({})
    from autovid.engine.networks import build_supernet

    supernet = build_supernet(supernet_cfg, num_classes=10)
    assert first_temporal_conv(supernet.stem) is None
    assert all(m.padding_mode == "replicate" for m in supernet.cells[0].modules()
               if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1)


def test_replicate_padded_temporal_conv_matches_torch() -> None:
    from autovid.nas.ops import Conv3d

    conv = Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0), bias=False, padding_mode="replicate")
    x = torch.randn(2, 4, 5, 6, 6)
    reference = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (0, 0, 0, 0, 1, 1), mode="replicate"),
                                           conv.weight)
    torch.testing.assert_close(conv(x), reference)
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last_3d)), reference)
