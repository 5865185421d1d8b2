"""Sessions end to end on real synthetic videos: search, derive, retrain; exact resume from a state dict."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from autovid.engine.session import SearchSession, TrainSession
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow

NUMERIC = ("train/loss", "val/loss", "val/acc", "alpha/entropy")


def _numbers(metrics: dict) -> dict:
    return {k: metrics[k] for k in NUMERIC}


def test_search_reports_contract_keys_and_a_valid_genotype(tmp_path: Path) -> None:
    session = SearchSession(tiny_config(tmp_path))
    first = session.step()
    assert first["alpha/updated"] == 0  # warm-up epoch: α frozen
    second = session.step()
    assert second["alpha/updated"] == 1 and session.done
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "alpha/entropy", "genotype/skips",
                "genotype/param_free", "genotype/params", "genotype/flops", "collapse/flag", "epoch"):
        assert math.isfinite(float(second[key])), key
    genotype = Genotype.from_json(second["genotype"])
    assert genotype.hash == second["genotype_hash"]
    assert second["genotype/params"] > 0 and second["genotype/flops"] > 0
    assert len(session.alpha_history) == 2


def test_same_seed_same_metrics_and_genotype(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    a, b = SearchSession(cfg), SearchSession(cfg)
    ra = [a.step() for _ in range(2)]
    rb = [b.step() for _ in range(2)]
    assert [_numbers(r) for r in ra] == [_numbers(r) for r in rb]
    assert ra[-1]["genotype"] == rb[-1]["genotype"]


def test_restored_search_continues_exactly(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 3, "warmup_epochs": 1})
    straight = SearchSession(cfg)
    expected = [straight.step() for _ in range(3)]

    interrupted = SearchSession(cfg)
    interrupted.step()
    state_path = tmp_path / "state.pt"
    torch.save(interrupted.state_dict(), state_path)
    del interrupted
    resumed = SearchSession(cfg)
    resumed.load_state_dict(torch.load(state_path, weights_only=False))
    got = [resumed.step() for _ in range(2)]
    assert [_numbers(r) for r in got] == [_numbers(r) for r in expected[1:]]
    assert got[-1]["genotype"] == expected[-1]["genotype"]


def test_retrain_genotype_from_scratch_and_restore(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, data={"test_clips": 2})
    genotype = Genotype.from_json(SearchSession(cfg).step()["genotype"])
    session = TrainSession(cfg, genotype)
    first = session.step()
    assert {"train/loss", "test/acc", "test/top5", "params", "flops"} <= set(first)
    state = copy.deepcopy(session.state_dict())  # state_dict() aliases the live tensors; a checkpoint is a copy
    second = session.step()
    again = TrainSession(cfg, genotype)
    again.load_state_dict(state)
    assert again.step()["test/acc"] == second["test/acc"]
    full = session.evaluate()
    assert len(full["test/per_class_acc"]) == 4 and len(full["test/confusion"]) == 4


def _bn_batches_tracked(model: torch.nn.Module) -> set[int]:
    return {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("precise", [0, 2])
def test_sessions_recompute_bn_statistics_before_evaluating(tmp_path: Path, precise: int) -> None:
    """Precise BN: the statistics evaluated with come from exactly `precise_bn_batches` fresh batches."""
    cfg = tiny_config(tmp_path, search={"epochs": 1, "precise_bn_batches": precise},
                      train={"precise_bn_batches": precise})
    search = SearchSession(cfg)
    result = search.step()
    train = TrainSession(cfg, Genotype.from_json(result["genotype"]))
    train.step()
    # without precise BN the counters show every training step; with it, at most the loader's batches
    steps = len(search.data.search_w)
    assert _bn_batches_tracked(search.model) == {min(precise, steps) if precise else steps}
    steps = len(train.train_loader)
    assert _bn_batches_tracked(train.model) == {min(precise, steps) if precise else steps}


def test_random_ws_scores_candidates_at_the_end(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0, "strategy": "random_ws", "ws_candidates": 3})
    session = SearchSession(cfg)
    result = session.step()
    assert 0.0 <= result["ws/best_val_acc"] <= 1.0 and result["ws/best_val_acc"] >= result["ws/mean_val_acc"]
    assert result["genotype"] == session.strategy.choice.to_json()


def test_fixed_network_retrain(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, train={"model": "r2plus1d_18", "width": 0.125, "epochs": 1})
    result = TrainSession(cfg, None).step()
    assert 0.0 <= result["test/acc"] <= 1.0 and result["params"] > 0


def test_evaluate_checkpoint_reproduces_the_sessions_evaluation(tmp_path: Path) -> None:
    from autovid.engine.evaluation import evaluate_checkpoint
    from autovid.errors import UserError

    cfg = tiny_config(tmp_path, train={"model": "r3d_18", "width": 0.125, "epochs": 1},
                      data={"test_clips": 2, "modality": "rgb_diff"})
    session = TrainSession(cfg, None)
    session.step()
    path = tmp_path / "state.pt"
    torch.save(session.state_dict(), path)
    result = evaluate_checkpoint(path)
    expected = session.evaluate()  # the checkpoint's own data settings (RGB difference) are used again
    assert result["test/loss"] == pytest.approx(expected["test/loss"], rel=1e-6) and result["epoch"] == 1
    assert result["test/acc"] == expected["test/acc"]
    assert len(result["test/confusion"]) == 4
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not an autovid checkpoint"):
        evaluate_checkpoint(path)


@pytest.mark.parametrize("kind", ["search", "train"])
def test_diverged_training_stops_with_a_clear_error(tmp_path: Path, kind: str) -> None:
    from autovid.engine.preflight import example_genotype
    from autovid.errors import TrainingDiverged

    huge = {"grad_clip": 1e30}
    cfg = tiny_config(tmp_path, search={"epochs": 2, "warmup_epochs": 1, "w_lr": 1e12, **huge},
                      train={"epochs": 2, "channels": 4, "cells": 2, "lr": 1e12, **huge})
    cfg = cfg.with_overrides({"data.batch_size": 2})  # several steps in epoch 1: a step after the blow-up
    session = SearchSession(cfg) if kind == "search" else TrainSession(cfg, Genotype.from_json(example_genotype(cfg)))
    lr_key = "search.w_lr=1000000000000.0" if kind == "search" else "train.lr=1000000000000.0"
    with pytest.raises(TrainingDiverged, match=rf"training diverged in epoch 1: train/loss = nan .*{lr_key}"):
        session.step()
    assert session.epoch == 0  # not counted as a finished epoch


def test_retrain_stem_width_follows_its_config(tmp_path: Path) -> None:
    from autovid.engine.networks import build_network
    from autovid.engine.preflight import example_genotype

    cfg = tiny_config(tmp_path)
    genotype = Genotype.from_json(example_genotype(cfg))
    for multiplier in (3, 2):
        net = build_network(cfg.with_overrides({"train.stem_multiplier": multiplier}), num_classes=4, genotype=genotype)
        bn = [m for m in net.stem.modules() if isinstance(m, torch.nn.BatchNorm3d)][-1]
        assert bn.num_features == multiplier * cfg.train.channels


def test_drop_path_ramps_from_zero_to_its_final_value(tmp_path: Path) -> None:
    from autovid.engine.preflight import example_genotype
    from autovid.engine.session import drop_path_at

    assert [drop_path_at(0.3, e, 4) for e in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    cfg = tiny_config(tmp_path, train={"epochs": 3, "channels": 4, "cells": 2, "drop_path": 0.2})
    session = TrainSession(cfg, Genotype.from_json(example_genotype(cfg)))
    seen = []
    for _ in range(3):
        session.step()
        seen.append(session.model.drop_path_prob)
    assert seen == pytest.approx([0.0, 0.1, 0.2])


def test_mixed_op_follows_config_and_device(tmp_path: Path) -> None:
    from autovid.engine.networks import build_supernet
    from autovid.nas.fused import FusedMixedOp
    from autovid.nas.supernet import ReferenceMixedOp

    def kinds(cfg, device):
        net = build_supernet(cfg, num_classes=4, device=torch.device(device))
        return {type(e) for cell in net.cells for e in getattr(cell, "edges", [])}

    cfg = tiny_config(tmp_path)
    assert kinds(cfg, "cpu") == {FusedMixedOp}  # auto: fused on CPU, where it is faster
    assert kinds(cfg, "cuda") == {ReferenceMixedOp}  # auto: the plain op on CUDA (built on CPU, never run here)
    assert kinds(cfg.with_overrides({"model.mixed_op": "reference"}), "cpu") == {ReferenceMixedOp}
    assert kinds(cfg.with_overrides({"model.mixed_op": "fused"}), "cuda") == {FusedMixedOp}


def test_the_compile_key_picks_the_forward_path(tmp_path: Path) -> None:
    from autovid.engine.fastpath import FastPath

    auto = SearchSession(tiny_config(tmp_path))
    assert auto.fast is auto.model  # CPU, compile=auto: the hand-fused eager ops are the fast path
    compiled = TrainSession(tiny_config(tmp_path, compile="compile"), auto.genotype())
    assert isinstance(compiled.fast, FastPath) and compiled.fast.model is compiled.model
    assert compiled.fast.state_dict().keys() == compiled.model.state_dict().keys()  # checkpoints stay unprefixed
