"""Tests for the DARTS architect: α moves only from the α half, the second-order gradient matches the math."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from autovid.nas.architect import Architect


class MixedToy(nn.Module):
    """A 2-op mixed layer: softmax(α)-weighted sum of a linear and a tanh-linear head on a shared stem."""

    def __init__(self, *, seed: int = 0, d_in: int = 4, hidden: int = 6, classes: int = 3, bn: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Linear(d_in, hidden)
        self.norm = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.ops = nn.ModuleList([nn.Linear(hidden, classes), nn.Linear(hidden, classes)])
        with torch.no_grad():
            for p in self.weight_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)
        self.alpha = nn.Parameter(torch.randn(2, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.tanh(self.stem(x)))
        w = self.alpha.softmax(dim=0)
        return w[0] * self.ops[0](h) + w[1] * torch.tanh(self.ops[1](h))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]


def _batches(seed: int, n: int = 8, d_in: int = 4, classes: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x_w = torch.randn(n, d_in, generator=g, dtype=dtype)
    y_w = torch.randint(0, classes, (n,), generator=g)
    x_a = torch.randn(n, d_in, generator=g, dtype=dtype)
    y_a = torch.randint(0, classes, (n,), generator=g)
    return x_w, y_w, x_a, y_a


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("order", ["first", "second"])
def test_step_moves_alpha_only(order: str) -> None:
    model = MixedToy(bn=True)
    model.train()
    before = _snapshot(model)
    arch = Architect(model, lr=0.1, order=order)
    arch.step(*_batches(1), eta=0.1, w_optimizer=None)
    after = model.state_dict()
    assert not torch.equal(after["alpha"], before["alpha"])
    for key, value in before.items():
        if key != "alpha":  # weights and BatchNorm running statistics untouched
            assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())


def test_first_order_ignores_weight_half() -> None:
    m1, m2 = MixedToy(), MixedToy()
    a1, a2 = Architect(m1, lr=0.1), Architect(m2, lr=0.1)
    x_w, y_w, x_a, y_a = _batches(2)
    x_w2, y_w2, _, _ = _batches(3)
    a1.step(x_w, y_w, x_a, y_a, eta=0.1)
    a2.step(x_w2, y_w2, x_a, y_a, eta=0.1)
    assert torch.equal(m1.alpha, m2.alpha)
    # ...while the α half does matter (compare gradients: Adam's first step only sees their signs)
    g_a = Architect(MixedToy()).alpha_gradients(x_w, y_w, x_a, y_a, eta=0.1)[0]
    g_b = Architect(MixedToy()).alpha_gradients(x_w, y_w, *_batches(4)[2:], eta=0.1)[0]
    g_c = Architect(MixedToy()).alpha_gradients(x_w2, y_w2, x_a, y_a, eta=0.1)[0]
    assert not torch.equal(g_a, g_b)
    assert torch.equal(g_a, g_c)


def test_first_order_gradient_is_val_gradient() -> None:
    model = MixedToy()
    x_w, y_w, x_a, y_a = _batches(5)
    (g,) = Architect(model, order="first").alpha_gradients(x_w, y_w, x_a, y_a, eta=0.1)
    ref = torch.autograd.grad(F.cross_entropy(model(x_a), y_a), model.alpha)[0]
    torch.testing.assert_close(g, ref)


def _unrolled_objective(model: MixedToy, alpha, x_w, y_w, x_a, y_a, *, eta, wd, mom, bufs):
    """L_val(w - η(∇w L_train(w, α) + λw + μ·m), α), differentiable in α."""
    names = [n for n, _ in model.named_parameters() if n != "alpha"]
    w = [p for n, p in model.named_parameters() if n != "alpha"]
    params = {**dict(zip(names, w)), "alpha": alpha}
    loss_t = F.cross_entropy(functional_call(model, params, (x_w,)), y_w)
    g = torch.autograd.grad(loss_t, w, create_graph=True)
    w2 = [p.detach() - eta * (gi + wd * p.detach() + mom * b) for p, gi, b in zip(w, g, bufs)]
    return F.cross_entropy(functional_call(model, {**dict(zip(names, w2)), "alpha": alpha}, (x_a,)), y_a)


@pytest.mark.parametrize("with_momentum", [False, True])
def test_second_order_matches_finite_difference(with_momentum: bool) -> None:
    torch.manual_seed(0)  # nothing here draws from it; set only so a failure is reproducible
    eta, wd, mom = 0.5, 3e-4, 0.9
    model = MixedToy(seed=7).double()
    x_w, y_w, x_a, y_a = _batches(8, dtype=torch.float64)

    opt = None
    bufs = [torch.zeros_like(p) for p in model.weight_parameters()]
    if with_momentum:  # populate the SGD momentum buffers with one real weight step, as in a search
        opt = torch.optim.SGD(model.weight_parameters(), lr=eta, momentum=mom, weight_decay=wd)
        x0, y0, _, _ = _batches(9, dtype=torch.float64)
        F.cross_entropy(model(x0), y0).backward(inputs=model.weight_parameters())
        opt.step()
        bufs = [opt.state[p]["momentum_buffer"].clone() for p in model.weight_parameters()]

    arch = Architect(model, order="second", w_momentum=mom, w_weight_decay=wd)
    (g,) = arch.alpha_gradients(x_w, y_w, x_a, y_a, eta=eta, w_optimizer=opt)

    # Central finite differences of the unrolled objective in α (the quantity DARTS' gradient approximates).
    h = 1e-6
    alpha0 = model.alpha.detach().clone()
    fd = torch.zeros_like(alpha0)
    for i in range(alpha0.numel()):
        e = torch.zeros_like(alpha0)
        e[i] = h
        f_plus = _unrolled_objective(model, alpha0 + e, x_w, y_w, x_a, y_a, eta=eta, wd=wd, mom=mom, bufs=bufs)
        f_minus = _unrolled_objective(model, alpha0 - e, x_w, y_w, x_a, y_a, eta=eta, wd=wd, mom=mom, bufs=bufs)
        fd[i] = (f_plus - f_minus).item() / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-3, atol=1e-6)

    # The exact gradient (double backward) agrees too, and the second-order term is not negligible.
    a = alpha0.clone().requires_grad_(True)
    exact = torch.autograd.grad(
        _unrolled_objective(model, a, x_w, y_w, x_a, y_a, eta=eta, wd=wd, mom=mom, bufs=bufs), a
    )[0]
    torch.testing.assert_close(g, exact, rtol=1e-3, atol=1e-6)
    first = Architect(model, order="first").alpha_gradients(x_w, y_w, x_a, y_a, eta=eta)[0]
    assert (first - exact).abs().max() > 100 * 1e-6 + 1e-3 * exact.abs().max()


def _run(order: str, steps: int = 3) -> tuple[torch.Tensor, dict]:
    model = MixedToy(seed=11)
    arch = Architect(model, lr=0.05, order=order)
    for s in range(steps):
        arch.step(*_batches(20 + s), eta=0.05)
    return model.alpha.detach().clone(), arch.state_dict()


@pytest.mark.parametrize("order", ["first", "second"])
def test_deterministic(order: str) -> None:
    a1, _ = _run(order)
    a2, _ = _run(order)
    assert torch.equal(a1, a2)


def test_state_dict_round_trip() -> None:
    model = MixedToy(seed=3)
    arch = Architect(model, lr=0.05, order="second")
    for s in range(2):
        arch.step(*_batches(30 + s), eta=0.05)
    model2, model3 = copy.deepcopy(model), copy.deepcopy(model)
    arch2 = Architect(model2, lr=0.05, order="second")
    arch2.load_state_dict(arch.state_dict())
    arch3 = Architect(model3, lr=0.05, order="second")  # fresh Adam: no moments
    batch = _batches(40)
    for a in (arch, arch2, arch3):
        a.step(*batch, eta=0.05)
    assert torch.equal(model.alpha, model2.alpha)
    assert not torch.equal(model.alpha, model3.alpha)


def test_rejects_bad_order_and_empty_alphas() -> None:
    with pytest.raises(ValueError):
        Architect(MixedToy(), order="third")  # type: ignore[arg-type]

    class NoAlpha(MixedToy):
        def arch_parameters(self) -> list[nn.Parameter]:
            return []

    with pytest.raises(ValueError):
        Architect(NoAlpha())


@pytest.mark.parametrize("space_name", ["p3d", "p3d_cell"])
@pytest.mark.parametrize("order", ["first", "second"])
def test_alpha_step_changes_alpha_only(space_name: str, order: str) -> None:
    """Every non-α state entry (weights and BN running statistics, shared pool-BN included) is bitwise unchanged."""
    from autovid.nas.search_space import load_search_space
    from autovid.nas.supernet import SuperNet

    torch.manual_seed(0)
    model = SuperNet(load_search_space(space_name), generator=torch.Generator().manual_seed(0), num_classes=3,
                     channels=4, cells=3)
    w_optimizer = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 2, 3, 2, 12, 12)
    y = torch.tensor([0, 2])
    loss = torch.nn.functional.cross_entropy(model(x), y)  # one weight step: momentum buffers exist
    loss.backward()
    w_optimizer.step()
    w_optimizer.zero_grad()
    alpha_names = {name for name, p in model.named_parameters() if any(p is a for a in model.arch_parameters())}
    before = {k: v.clone() for k, v in model.state_dict().items() if k not in alpha_names}
    alphas_before = [a.detach().clone() for a in model.arch_parameters()]
    architect = Architect(model, lr=0.1, order=order)
    architect.step(x, y, torch.randn(2, 2, 3, 2, 12, 12), torch.tensor([1, 0]), eta=0.1, w_optimizer=w_optimizer)
    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed
    assert all(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), alphas_before))  # α did move
