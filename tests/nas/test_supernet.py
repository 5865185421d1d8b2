"""SuperNet: shapes in every space, α/weight split, determinism, exactness of the fast paths, PC-DARTS,
single-path mode, copies and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autovid.errors import UserError
from autovid.nas.search_space import list_search_spaces, load_search_space
from autovid.nas.supernet import SuperNet, sample_genotype

SPACES = list_search_spaces()


def _net(space="p3d", *, seed=0, channels=4, cells=3, pc_k=1, dtype=torch.float32, **kw):
    net = SuperNet(load_search_space(space), num_classes=5, channels=channels, cells=cells, pc_k=pc_k,
                   generator=torch.Generator().manual_seed(seed), **kw)
    return net.to(dtype)


def _clips(b=2, k=2, frames=2, size=16, dtype=torch.float32, seed=1):
    return torch.randn(b, k, 3, frames, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("space", SPACES)
def test_forward_backward_shapes_every_space(space):
    net = _net(space)
    out = net(_clips())
    assert out.shape == (2, 5)
    net.loss(_clips(), torch.tensor([0, 3])).backward()
    assert all(p.grad is not None for p in net.arch_parameters())
    assert all(p.grad is not None for p in net.weight_parameters())
    expected = (load_search_space(space).num_edges, len(load_search_space(space).ops))
    assert all(a.shape == expected for a in net.alphas().values())


def test_dense_input_and_max_consensus():
    net = _net("p3d_cell_t", consensus="max")
    assert net(_clips(k=1, frames=8)).shape == (2, 5)  # dense sampling: one segment of K·L frames
    with pytest.raises(ValueError, match=r"\[B, K, C, L, H, W\]"):
        net(torch.randn(2, 3, 2, 16, 16))


def test_arch_parameters_are_not_weight_parameters():
    for space, pc_k, n_arch in (("p3d", 1, 1), ("p3d_cell", 1, 2), ("p3d_cell", 2, 4)):
        net = _net(space, pc_k=pc_k)
        arch, weights = net.arch_parameters(), net.weight_parameters()
        assert len(arch) == n_arch
        arch_ids = {id(p) for p in arch}
        assert not arch_ids & {id(p) for p in weights}
        assert len(arch) + len(weights) == len(list(net.parameters()))


def test_same_seed_same_init_and_genotype():
    a, b, c = _net("p3d_cell", seed=7), _net("p3d_cell", seed=7), _net("p3d_cell", seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.genotype() == b.genotype()
    assert not torch.equal(a.alpha_normal, c.alpha_normal)
    assert a.alpha_normal.abs().max() < 1e-2  # 1e-3·randn


# ----------------------------------------------------------------------------------------------------------
# The fast paths (zero skipped, shared ReLU, α folded into BN, shared pools, fused node sums, PC merge per node,
# NDHWC layout) against DARTS' plain mixed op (ReferenceMixedOp), in float64.


def _textbook(net):
    """The same supernet (weights, α, β, BN statistics) with DARTS' plain mixed op on every edge."""
    ref = SuperNet(net.space, num_classes=5, channels=4, cells=3, pc_k=net.pc_k, mixed_op="reference",
                   generator=torch.Generator().manual_seed(9)).to(next(net.parameters()).dtype)
    ref.load_state_dict(net.state_dict())
    return ref


@pytest.mark.parametrize(
    "space,pc_k", [("p3d", 1), ("full3d", 1), ("p2d_cell", 1), ("p3d_cell_t", 1), ("p3d", 2), ("p3d_cell", 2)]
)
def test_fast_supernet_equals_textbook_formula(space, pc_k):
    net = _net(space, pc_k=pc_k, dtype=torch.float64)
    with torch.no_grad():  # make α far from uniform so that every weight matters
        for p in net.arch_parameters():
            p.normal_(generator=torch.Generator().manual_seed(3))
    ref = _textbook(net)
    x = _clips(dtype=torch.float64, size=12)
    params = [net.stem[0].weight, *net.arch_parameters()]
    ref_params = [ref.stem[0].weight, *ref.arch_parameters()]
    for layout in (torch.channels_last_3d, torch.contiguous_format):
        net.set_memory_format(layout)
        y, y_ref = net(x), ref(x)
        assert torch.allclose(y, y_ref, atol=1e-9)
        g = torch.autograd.grad(y.square().sum(), params)
        g_ref = torch.autograd.grad(y_ref.square().sum(), ref_params)
        for a, b in zip(g, g_ref):
            assert torch.allclose(a, b, atol=1e-8, rtol=1e-6)


def test_zero_op_costs_nothing():
    net = _net("p3d")
    assert all(len(e.ops) == len(net.space.ops) - 1 for c in net.cells for e in getattr(c, "edges", []))


def test_pools_are_shared_between_edges_reading_one_state():
    cell = _net("p3d_cell").cells[0]
    by_input = {}
    for e, edge in enumerate(cell.edges):
        by_input.setdefault(cell.edge_input[e], []).append(edge)
    for edges in by_input.values():
        for k in edges[0].shareable:
            assert all(edge.ops[k] is edges[0].ops[k] for edge in edges)


# ----------------------------------------------------------------------------------------------------------


def test_pc_darts_shapes_and_genotype():
    net = _net("p3d_cell", pc_k=2)
    assert net(_clips()).shape == (2, 5)
    assert set(net.edge_weights()) == {"normal", "reduce"}
    g = net.genotype()
    assert g.topology == "cell" and len(g.normal) == 8
    with pytest.raises(ValueError, match="divisible"):
        _net("p3d", pc_k=3)


def test_genotype_follows_alpha():
    net = _net("p3d")
    with torch.no_grad():
        net.alpha_normal.zero_()
        net.alpha_normal[:, net.space.ops.index("sep_conv_3")] = 5.0
    g = net.genotype()
    assert {op for op, _ in g.normal} == {"sep_conv_3"}
    weights = net.alphas()["normal"]
    assert torch.allclose(weights.sum(-1), torch.ones(net.space.num_edges))
    data = json.loads(net.alphas_json())
    assert data["ops"] == list(net.space.ops) and data["reduce"] is None and len(data["normal"]) == 6


def test_single_path_mode_runs_only_the_chosen_ops():
    net = _net("p3d_cell")
    g = sample_genotype(net.space, np.random.default_rng(0))
    net.set_path(g)
    net.loss(_clips(), torch.tensor([1, 2])).backward()
    assert all(a.grad is None for a in net.arch_parameters())
    cell = net.cells[0]
    offsets = [sum(2 + m for m in range(node)) for node in range(4)]  # first edge of each node
    chosen = {(offsets[node] + j, op) for node, edges in enumerate(g.nodes("normal")) for op, j in edges}
    for e, edge in enumerate(cell.edges):
        for k, i in enumerate(edge.op_index):
            has_grad = any(p.grad is not None for p in edge.ops[k].parameters())
            name = net.space.ops[i]
            if (e, name) in chosen and list(edge.ops[k].parameters()):
                assert has_grad, (e, name)
            elif name not in ("max_pool_3", "avg_pool_3"):
                assert not has_grad, (e, name)
    net.set_path(None)
    assert net(_clips()).shape == (2, 5)
    bad = sample_genotype(load_search_space("p3d"), np.random.default_rng(0))
    with pytest.raises(UserError, match="does not fit"):
        net.set_path(bad)


def test_single_path_pc_darts():
    net = _net("p3d", pc_k=2)
    net.set_path(sample_genotype(net.space, np.random.default_rng(1)))
    assert net(_clips()).shape == (2, 5)


def test_reference_and_fused_supernets_agree_and_share_state_dicts():
    fused = _net("p3d_cell", pc_k=2)
    ref = _net("p3d_cell", pc_k=2, mixed_op="reference")
    assert set(fused.state_dict()) == set(ref.state_dict())
    for a, b in zip(fused.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same modules in the same order: the same initial network
    x = _clips()
    fused.eval(), ref.eval()
    assert torch.allclose(fused(x), ref(x), atol=1e-5)
    genotype = sample_genotype(fused.space, np.random.default_rng(0))
    fused.set_path(genotype), ref.set_path(genotype)  # single-path mode, as random search with weight sharing
    assert torch.allclose(fused(x), ref(x), atol=1e-5)


def test_state_dict_round_trip():
    net, fresh = _net("p3d_cell", seed=1), _net("p3d_cell", seed=2)
    net.train()
    net(_clips())  # move BN running statistics
    fresh.load_state_dict(net.state_dict())
    net.eval(), fresh.eval()
    assert torch.equal(net(_clips()), fresh(_clips()))
    assert net.genotype() == fresh.genotype()


def test_architect_style_functional_call():
    """The architect evaluates the supernet through torch.func.functional_call with replaced weights."""
    net = _net("p3d")
    names = [n for n, p in net.named_parameters() if p is not net.alpha_normal]
    weights = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters() if n in names}
    loss = F.cross_entropy(torch.func.functional_call(net, weights, (_clips(),)), torch.tensor([0, 1]))
    grads = torch.autograd.grad(loss, [net.alpha_normal, *weights.values()], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
