"""Random genotypes: uniform over the space, always valid and buildable, reproducible from the rng."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from autovid.nas.genotype import Genotype
from autovid.nas.network import Network
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import load_search_space


def test_draws_cover_every_op_and_input_and_are_valid():
    for name in ("p3d", "p3d_cell"):
        space = load_search_space(name)
        rng = np.random.default_rng(0)
        draws = [sample_genotype(space, rng) for _ in range(400)]
        for cell in space.cell_types:
            ops = Counter(op for g in draws for op, _ in g.edges(cell))
            assert set(ops) == set(space.searchable_ops)  # every op but zero
            # uniform: each op within 25% of its expected share
            expected = sum(ops.values()) / len(space.searchable_ops)
            assert all(abs(n - expected) < 0.25 * expected for n in ops.values()), ops
            last = Counter(j for g in draws for _, j in g.nodes(cell)[-1])
            assert set(last) == set(range(space.num_inputs + space.nodes - 1))
        for g in draws[:40]:
            assert Genotype.from_json(g.to_json()) == g
        for g in draws[:6]:  # buildable at retrain width
            net = Network(g, space, num_classes=3, channels=4, cells=3)
            assert net(torch.randn(1, 1, 3, 2, 12, 12)).shape == (1, 3)


def test_same_seed_same_genotypes():
    space = load_search_space("full3d_cell")
    a = [sample_genotype(space, np.random.default_rng(42)) for _ in range(3)]
    b = [sample_genotype(space, np.random.default_rng(42)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(42)
    assert len({sample_genotype(space, rng).hash for _ in range(20)}) == 20
