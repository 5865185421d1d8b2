"""The compiled fast path (autovid.engine.fastpath) against eager PyTorch on the tiny supernet and a derived network.

Cold inductor builds of a supernet take minutes on two cores, so the parity tests compile with
``backend="aot_eager"`` (dynamo capture and the AOT forward/backward graphs, kernels run by eager ATen) and one
slow test runs inductor itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters
from torch.optim.swa_utils import update_bn

from autovid.engine.fastpath import FastPath, accelerate, compile_options, preferred_memory_format
from autovid.engine.networks import build_network, build_supernet
from autovid.nas.architect import Architect
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config

CPU = torch.device("cpu")
CLASSES = 4


def _clips(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny_config-shaped batch: [B, K=2, C=3, L=2, 24, 24] and labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, 3, 2, 24, 24, generator=g), torch.randint(0, CLASSES, (batch,), generator=g)


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def _step(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Logits and the gradient of every parameter in ``params`` (None where it gets none) of one train step."""
    for p in params:
        p.grad = None
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), [None if p.grad is None else p.grad.clone() for p in params]


def _assert_step_matches(fast: nn.Module, fast_params: list, eager: nn.Module, eager_params: list,
                         x: torch.Tensor, y: torch.Tensor, *, atol: float = 1e-5) -> None:
    got, got_grads = _step(fast, fast_params, x, y)
    want, want_grads = _step(eager, eager_params, x, y)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=atol)
    assert len(got_grads) == len(want_grads)
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert (g is None) == (w is None), f"parameter {i}: gradient presence differs"
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=atol, msg=lambda m, i=i: f"parameter {i}: {m}")


def _assert_same_buffers(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"buffer {name}: {m}")


@pytest.fixture(scope="module")
def supernets(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, nn.Module, FastPath]:
    """Two identical tiny PC-DARTS supernets (fused mixed op, as on CPU), the first behind the fast path."""
    torch._dynamo.reset()  # graph counts below must not depend on what compiled earlier in the process
    cfg = tiny_config(tmp_path_factory.mktemp("fastpath"), model={"pc_k": 2, "mixed_op": "fused", "cells": 1})
    model = build_supernet(cfg, num_classes=CLASSES)
    eager = copy.deepcopy(model)
    fast = accelerate(model, device=CPU, mode="compile", backend="aot_eager")
    assert isinstance(fast, FastPath)
    return model, eager, fast


def test_off_and_auto_on_cpu_return_the_model_itself(tmp_path: Path) -> None:
    model = build_supernet(tiny_config(tmp_path), num_classes=CLASSES)
    assert accelerate(model, device=CPU, mode="off") is model
    assert accelerate(model, device=CPU, mode="auto") is model  # the CPU fast path is the hand-fused eager one
    assert accelerate(model, device=torch.device("cuda"), mode="off") is model
    # compiling is lazy: the CUDA choice can be checked without a GPU
    assert isinstance(accelerate(model, device=torch.device("cuda"), mode="auto"), FastPath)
    assert compile_options("cuda") == {"mode": "reduce-overhead", "dynamic": False}
    assert compile_options("cpu") == {"mode": "default", "dynamic": None}
    assert preferred_memory_format("cpu") == torch.channels_last_3d
    assert preferred_memory_format("cuda") == torch.contiguous_format
    with pytest.raises(ValueError, match="mode must be one of"):
        accelerate(model, device=CPU, mode="fast")


def test_wrapper_shares_parameters_state_and_mode(supernets: tuple) -> None:
    model, _, fast = supernets
    assert [id(p) for p in fast.parameters()] == [id(p) for p in model.parameters()]
    assert list(fast.state_dict()) == list(model.state_dict())  # no `model.` / `_orig_mod.` prefix
    assert fast.arch_parameters() == model.arch_parameters()
    assert fast.genotype() == model.genotype()
    model.eval()
    assert not fast.training  # switched through the model, read through the wrapper
    fast.train()
    assert model.training and all(m.training for m in model.modules())
    state = copy.deepcopy(model.state_dict())
    fast.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))


def test_supernet_matches_eager_and_alpha_changes_do_not_recompile(supernets: tuple) -> None:
    model, eager, fast = supernets
    x, y = _clips(4, seed=0)
    params, eager_params = list(model.parameters()), list(eager.parameters())
    model.train(), eager.train()

    _assert_step_matches(fast, params, eager, eager_params, x, y)  # compiles the training graph
    assert all(a.grad is not None for a in model.arch_parameters())  # α and β get gradients
    _assert_same_buffers(model, eager)  # BatchNorm running statistics updated alike
    graphs = _graphs()
    assert graphs >= 1

    # α moved in place (as Adam does) by the DARTS architect, which runs the eager model through
    # functional_call, plus a weight update: the compiled graph must read the new values, not recompile.
    for net in (model, eager):
        Architect(net, lr=0.1, order="first").step(x, y, *_clips(4, seed=1), eta=0.025)
        with torch.no_grad():
            for a in net.arch_parameters():
                a.mul_(-3.0)
            next(iter(net.weight_parameters())).mul_(0.5)
    torch.testing.assert_close(model.arch_parameters()[0], eager.arch_parameters()[0])
    with torch._dynamo.config.patch(error_on_recompile=True):
        _assert_step_matches(fast, params, eager, eager_params, *_clips(4, seed=2))
    assert _graphs() == graphs
    _assert_same_buffers(model, eager)

    # evaluation without grad: the fused mixed op runs it eagerly (dynamo would split it into ~30 graphs)
    xe, _ = _clips(4, seed=3)
    with torch.no_grad():
        fast.eval(), eager.eval()
        assert fast.eager_reason() == "no-grad forward of the fused mixed op"
        torch.testing.assert_close(fast(xe), eager(xe), rtol=1e-4, atol=1e-5)
    fast.train(), eager.train()
    assert _graphs() == graphs


def test_reference_supernet_compiles_training_and_evaluation(tmp_path: Path) -> None:
    """The CUDA path (mixed_op "reference") is one graph with and without grad; α changes recompile neither."""
    torch._dynamo.reset()
    cfg = tiny_config(tmp_path, model={"pc_k": 2, "mixed_op": "reference", "cells": 1})
    model = build_supernet(cfg, num_classes=CLASSES)
    eager = copy.deepcopy(model)
    fast = accelerate(model, device=CPU, mode="compile", backend="aot_eager")
    params, eager_params = list(model.parameters()), list(eager.parameters())
    graphs = _graphs()
    _assert_step_matches(fast, params, eager, eager_params, *_clips(4, seed=10))
    _assert_same_buffers(model, eager)
    assert _graphs() == graphs + 1
    xe, _ = _clips(4, seed=11)
    with torch.no_grad():
        fast.eval(), eager.eval()
        torch.testing.assert_close(fast(xe), eager(xe), rtol=1e-4, atol=1e-5)
        for net in (model, eager):
            for a in net.arch_parameters():
                a.mul_(2.0)
        with torch._dynamo.config.patch(error_on_recompile=True):
            torch.testing.assert_close(fast(xe), eager(xe), rtol=1e-4, atol=1e-5)
    assert _graphs() == graphs + 2


def test_single_path_and_precise_bn_run_eagerly(supernets: tuple) -> None:
    model, eager, fast = supernets
    graphs = _graphs()
    genotype = model.genotype()
    model.set_path(genotype), eager.set_path(genotype)
    try:
        assert fast.eager_reason() == "single-path mode"
        _assert_step_matches(fast, list(model.parameters()), eager, list(eager.parameters()), *_clips(4, seed=4))
    finally:
        model.set_path(None), eager.set_path(None)
    assert fast.eager_reason() is None

    # precise BN (trainer.recalibrate_bn): update_bn sets momentum=None while it runs, then restores it
    batches = [_clips(4, seed=s)[0] for s in (5, 6)]
    update_bn(batches, fast), update_bn(batches, eager)
    _assert_same_buffers(model, eager)
    assert fast.eager_reason() is None
    assert _graphs() == graphs  # nothing compiled for either


def _genotype(tmp_path: Path) -> tuple:
    """The tiny config (with drop path) and the genotype its supernet derives at its seeded initial α."""
    cfg = tiny_config(tmp_path, train={"drop_path": 0.3})
    supernet = build_supernet(cfg, num_classes=CLASSES)
    genotype: Genotype = supernet.genotype()
    return cfg, genotype


def test_derived_network_matches_eager_drop_path_runs_eagerly(tmp_path: Path) -> None:
    torch._dynamo.reset()
    cfg, genotype = _genotype(tmp_path)
    model = build_network(cfg, num_classes=CLASSES, genotype=genotype)
    eager = copy.deepcopy(model)
    fast = accelerate(model, device=CPU, mode="compile", backend="aot_eager")
    params, eager_params = list(model.parameters()), list(eager.parameters())
    x, y = _clips(4, seed=7)

    fast.drop_path_prob = eager.drop_path_prob = 0.0  # written through the wrapper, it reaches the network
    assert model.drop_path_prob == 0.0
    _assert_step_matches(fast, params, eager, eager_params, x, y)
    _assert_same_buffers(model, eager)
    graphs = _graphs()

    # drop path: masks from the network's own generator, eagerly, so both draw the same masks
    model.drop_path_prob = eager.drop_path_prob = 0.3
    assert fast.eager_reason() == "drop path"
    _assert_step_matches(fast, params, eager, eager_params, x, y)
    assert int(model.drop_step) == int(eager.drop_step) == 1
    assert _graphs() == graphs

    with torch.no_grad():
        fast.eval(), eager.eval()  # evaluation has no drop path: compiled again
        assert fast.eager_reason() is None
        torch.testing.assert_close(fast(x), eager(x), rtol=1e-4, atol=1e-5)
    assert _graphs() == graphs + 1


@pytest.mark.slow
def test_inductor_matches_eager_on_a_derived_network(tmp_path: Path) -> None:
    """The real CPU fast path: inductor's C++ kernels, forward and backward."""
    cfg, genotype = _genotype(tmp_path)
    cfg = tiny_config(tmp_path, train={"cells": 1, "channels": 4})
    model = build_network(cfg, num_classes=CLASSES, genotype=genotype)
    eager = copy.deepcopy(model)
    fast = accelerate(model, device=CPU, mode="compile")
    x, y = _clips(2, seed=8)
    _assert_step_matches(fast, list(model.parameters()), eager, list(eager.parameters()), x, y, atol=1e-4)
    _assert_same_buffers(model, eager)
