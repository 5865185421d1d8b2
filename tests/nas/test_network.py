"""Network: genotypes of every space built at any depth and width, drop path, checkpoints, mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autovid.errors import UserError
from autovid.nas.genotype import Genotype
from autovid.nas.network import Network
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import list_search_spaces, load_search_space


def _clips(b=2, k=2, frames=2, size=16, seed=1):
    return torch.randn(b, k, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("space_name", list_search_spaces())
def test_every_space_builds_at_two_depths(space_name):
    space = load_search_space(space_name)
    genotype = sample_genotype(space, np.random.default_rng(5))
    for channels, cells in ((4, 2), (6, 5)):
        net = Network(genotype, space, num_classes=7, channels=channels, cells=cells)
        out = net(_clips())
        assert out.shape == (2, 7)
        out.sum().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_wider_and_deeper_means_more_parameters():
    space = load_search_space("p3d")
    g = sample_genotype(space, np.random.default_rng(0))
    sizes = [sum(p.numel() for p in Network(g, space, num_classes=5, channels=c, cells=n).parameters())
             for c, n in ((4, 3), (8, 3), (8, 6))]
    assert sizes[0] < sizes[1] < sizes[2]


def test_same_generator_same_network_and_drop_path_masks():
    space = load_search_space("p3d_cell")
    g = sample_genotype(space, np.random.default_rng(1))

    def build():
        return Network(g, space, num_classes=5, channels=4, cells=3, drop_path=0.3,
                       generator=torch.Generator().manual_seed(3))

    a, b = build(), build()
    x = _clips()
    assert torch.equal(a(x), b(x))  # training mode: drop path active, masks from the seeded generator
    assert int(a.drop_step) == 1
    a.eval()
    assert torch.equal(a(x), a(x))  # no drop path in eval mode


def test_state_dict_round_trip_keeps_drop_step():
    space = load_search_space("p3d")
    g = sample_genotype(space, np.random.default_rng(2))
    a = Network(g, space, num_classes=5, channels=4, cells=3, drop_path=0.2, generator=torch.Generator().manual_seed(0))
    a(_clips())
    b = Network(g, space, num_classes=5, channels=4, cells=3, drop_path=0.2, generator=torch.Generator().manual_seed(9))
    b.load_state_dict(a.state_dict())
    assert int(b.drop_step) == 1
    a.eval(), b.eval()
    assert torch.equal(a(_clips()), b(_clips()))


def test_genotype_must_fit_the_space():
    cell_g = sample_genotype(load_search_space("p3d_cell"), np.random.default_rng(0))
    with pytest.raises(UserError, match="topology"):
        Network(cell_g, load_search_space("p3d"), num_classes=5, channels=4, cells=3)
    small = Genotype("module", (("conv_3", 0), ("skip", 0), ("conv_1", 1)), (1, 2))
    with pytest.raises(UserError, match="nodes"):
        Network(small, load_search_space("p3d"), num_classes=5, channels=4, cells=3)


def test_supernet_and_network_share_the_wiring():
    """Same stem, same reductions, same classifier width: the stack is built by one piece of code."""
    from autovid.nas.supernet import SuperNet

    for name in ("p3d", "p3d_cell"):
        space = load_search_space(name)
        sup = SuperNet(space, num_classes=5, channels=4, cells=5)
        net = Network(sample_genotype(space, np.random.default_rng(0)), space, num_classes=5, channels=4, cells=5)
        assert [type(c).__name__ for c in sup.cells] == [type(c).__name__ for c in net.cells]
        assert [c.cell_type for c in sup.cells] == [c.cell_type for c in net.cells]
        assert sup.classifier.in_features == net.classifier.in_features
