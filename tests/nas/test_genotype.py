"""Genotypes: the derive rule on hand-made α, JSON round trip, stable hash, text and PNG views."""

from __future__ import annotations

import numpy as np
import pytest

from autovid.errors import UserError
from autovid.nas.genotype import Genotype, derive_genotype
from autovid.nas.search_space import load_search_space

CELL = Genotype(
    "cell",
    (("sep_conv_3", 0), ("skip", 1), ("conv_3", 1), ("max_pool_3", 2), ("skip", 0), ("dil_conv_3", 3),
     ("avg_pool_3", 1), ("conv_1", 4)),
    (2, 3, 4, 5),
    (("max_pool_3", 0), ("conv_3", 1), ("skip", 2), ("max_pool_3", 1), ("conv_1", 0), ("skip", 3),
     ("sep_conv_3", 2), ("skip", 4)),
    (2, 3, 4, 5),
)
MODULE = Genotype(
    "module", (("conv_3", 0), ("sep_conv_3", 0), ("skip", 1), ("max_pool_3", 1), ("dil_conv_3", 2)), (1, 2, 3)
)


def _weights(space, picks):
    """softmax-like rows: tiny everywhere, zero strongest everywhere, and picks[(edge, op)] = value."""
    w = np.full((space.num_edges, len(space.ops)), 0.01)
    w[:, space.ops.index("zero")] = 0.9  # must never be chosen
    for (edge, op), value in picks.items():
        w[edge, space.ops.index(op)] = value
    return w


def test_darts_rule_on_hand_made_cell_alphas():
    space = load_search_space("p3d_cell")
    # node edge offsets: n0 -> 0,1 ; n1 -> 2,3,4 ; n2 -> 5..8 ; n3 -> 9..13
    picks = {
        (0, "conv_3"): 0.5, (1, "skip"): 0.3,  # n0: both of its only two edges
        (2, "avg_pool_3"): 0.2, (3, "sep_conv_3"): 0.6, (4, "dil_conv_3"): 0.4,  # n1: edges from 1 and 2 win
        (5, "max_pool_3"): 0.7, (6, "conv_1"): 0.1, (7, "skip"): 0.15, (8, "conv_3"): 0.65,  # n2: 0 and 3
        (9, "conv_1"): 0.3, (10, "conv_3"): 0.31, (13, "sep_conv_3"): 0.32,  # n3: inputs 1 and 4
    }
    picks[(13, "conv_3")] = 0.2  # weaker than sep_conv_3 on the same edge
    w = _weights(space, picks)
    g = derive_genotype(space, {"normal": w, "reduce": w})
    assert g.normal == (("conv_3", 0), ("skip", 1), ("sep_conv_3", 1), ("dil_conv_3", 2), ("max_pool_3", 0),
                        ("conv_3", 3), ("conv_3", 1), ("sep_conv_3", 4))
    assert g.reduce == g.normal and g.normal_concat == (2, 3, 4, 5)
    assert all(op != "zero" for op, _ in g.normal)


def test_module_rule_keeps_min_2_i_plus_1_edges():
    space = load_search_space("p3d")
    # edges: n0 <- in (0) ; n1 <- in (1), n0 (2) ; n2 <- in (3), n0 (4), n1 (5)
    picks = {(0, "dil_conv_3"): 0.4, (1, "skip"): 0.2, (2, "conv_1"): 0.3, (3, "avg_pool_3"): 0.5,
             (4, "conv_3"): 0.1, (5, "sep_conv_3"): 0.6}
    g = derive_genotype(space, {"normal": _weights(space, picks)})
    assert g.topology == "module" and g.reduce == ()
    assert g.nodes() == [[("dil_conv_3", 0)], [("skip", 0), ("conv_1", 1)], [("avg_pool_3", 0), ("sep_conv_3", 2)]]
    assert g.normal_concat == (1, 2, 3)


def test_pc_darts_edge_weights_change_the_ranking():
    space = load_search_space("p3d")
    picks = {(3, "conv_3"): 0.5, (4, "conv_1"): 0.4, (5, "skip"): 0.3}
    w = _weights(space, picks)
    assert [j for _, j in derive_genotype(space, {"normal": w}).nodes()[2]] == [0, 1]
    beta = np.ones(space.num_edges)
    beta[3] = 0.1  # edge in -> n2 normalized away
    assert [j for _, j in derive_genotype(space, {"normal": w}, edge_weights={"normal": beta}).nodes()[2]] == [1, 2]


def test_json_round_trip_and_files(tmp_path):
    for g in (CELL, MODULE):
        assert Genotype.from_json(g.to_json()) == g
        assert Genotype.load(g.save(tmp_path / f"{g.topology}.json")) == g
    with pytest.raises(UserError):
        Genotype.from_json("{not json")
    with pytest.raises(UserError):
        Genotype.load(tmp_path / "missing.json")


def test_hash_is_stable_and_order_free():
    # Pinned: the hash is an identifier stored in run records; it must not drift between versions.
    assert (CELL.hash, MODULE.hash) == ("c373e324b500", "1053e199ca7f")
    assert Genotype.from_json(CELL.to_json()).hash == CELL.hash
    swapped = Genotype(
        "module", (("conv_3", 0), ("skip", 1), ("sep_conv_3", 0), ("dil_conv_3", 2), ("max_pool_3", 1)), (1, 2, 3)
    )
    assert swapped == MODULE and swapped.hash == MODULE.hash  # edges of a node are canonically ordered


def test_views_and_counts(tmp_path):
    text = str(CELL)
    assert CELL.hash in text and "sep_conv_3(c_{k-2})" in text and "reduce" in text
    assert "n0 = conv_3(in)" in str(MODULE)
    assert (CELL.num_skips(), CELL.num_skips("reduce"), CELL.num_param_free(), CELL.num_param_free("reduce")) == (
        2,
        3,
        4,
        5,
    )
    for g in (CELL, MODULE):
        path = g.plot(tmp_path / "plots" / f"{g.topology}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (("module", (("conv_9", 0),), (1,)), "unknown operator"),
        (("module", (("conv_3", 1),), (1,)), "does not exist"),
        (("module", (("conv_3", 0),), (1,), (("skip", 0),), (1,)), "no reduction"),
        (("cell", (("conv_3", 0), ("skip", 1)), (2,)), "reduction"),
        (("module", (("conv_3", 0),), (5,)), "concat"),
        (("tree", (("conv_3", 0),), (1,)), "topology"),
    ],
)
def test_invalid_genotypes(args, message):
    with pytest.raises(UserError, match=message):
        Genotype(*args)
