"""`autovid ablate` end to end on a tiny config: every strategy, the report, and resume skipping finished arms."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autovid.tune.ablation import run_ablation, run_rank_check
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def _arms(tmp_path: Path) -> list[str]:
    arms = {
        "darts": "name: darts\nstrategy: darts\nsearch_space: p3d\n",
        "rand": "name: rand\nstrategy: random\nsearch_space: p3d\nsamples: 2\n",
        "rws": "name: rws\nstrategy: random_ws\nsearch_space: p3d\noverrides: {search.ws_candidates: 2}\n",
        "r3d": "name: r3d\nstrategy: fixed\nmodel: r3d_18\nwidth: 0.125\n",
    }
    paths = []
    for name, text in arms.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        paths.append(str(path))
    return paths


def test_every_strategy_reports_and_resume_skips_finished(tmp_path: Path, module_ray) -> None:
    cfg = tiny_config(
        tmp_path,
        search={"epochs": 1, "warmup_epochs": 0},
        train={"epochs": 1, "channels": 4, "cells": 2},
        tune={"max_concurrent_trials": 2},
        ablation={"arms": _arms(tmp_path), "seeds": [0], "reference": "darts"},
    )
    paths = run_ablation(cfg)
    table = pd.read_csv(paths["csv"])
    assert list(table["arm"]) == ["darts", "rand", "rws", "r3d"]  # the configured order
    for column in ("seeds", "test_videos", "top1_mean", "top1_ci_low", "top1_ci_high", "delta_vs_ref", "delta_ci_low",
                   "delta_ci_high", "p_value", "significant", "params", "flops", "search_cpu_s"):
        assert column in table.columns
    assert (table["test_videos"] == 8).all()  # tiny config: 4 classes x 2 clips of the one test group
    assert (table["top1_ci_low"] <= table["top1_mean"]).all() and (table["top1_mean"] <= table["top1_ci_high"]).all()
    assert table.loc[table["arm"] == "darts", "delta_vs_ref"].item() == 0
    assert table.loc[table["arm"] != "darts", "p_value"].between(0, 1).all()
    results_path = Path(paths["csv"]).parent / "results.csv"
    results = pd.read_csv(results_path, dtype={"correct": str})
    # the per-video hits agree with the reported top-1 of every run
    for hits, top1 in zip(results["correct"], results["top1"]):
        assert set(hits) <= {"0", "1"} and len(hits) == 8 and hits.count("1") / len(hits) == pytest.approx(top1)
    assert (results.loc[results["arm"] == "r3d", "search_cost_s"] == 0).all()
    assert (results.loc[results["arm"] != "r3d", "search_cost_s"] > 0).all()
    report_md = Path(paths["markdown"]).read_text()
    assert Path(paths["plot"]).stat().st_size > 0 and "darts" in report_md
    assert "rgb input" in report_md  # the budget note states what the networks were fed

    # Interrupted after three arms: drop the last row, resume, and only that arm runs again.
    results.iloc[:3].to_csv(results_path, index=False)
    experiments_before = {p.name for p in (tmp_path / "runs").iterdir()}
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("tiny-darts-s0-*/**/result.json")}
    run_ablation(cfg, resume=True)
    again = pd.read_csv(results_path, dtype={"correct": str})
    assert len(again) == 4 and list(again["arm"].iloc[:3]) == list(results["arm"].iloc[:3])
    assert again.iloc[:3].equals(results.iloc[:3])
    assert {p.name for p in (tmp_path / "runs").iterdir()} == experiments_before
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())  # finished arms untouched


def test_rank_check_reports_kendall_and_spearman(tmp_path: Path, module_ray) -> None:
    cfg = tiny_config(tmp_path, search={"epochs": 1, "warmup_epochs": 0},
                      ablation={"rank_samples": 3, "rank_epochs": 1}, tune={"max_concurrent_trials": 2})
    result = run_rank_check(cfg)
    table = pd.read_csv(result["table"])
    assert len(table) == 3 and table["standalone_val_acc"].between(0, 1).all()
    assert table["inherited_val_acc"].between(0, 1).all()
    # same seed, same scores on CPU: this budget separates the genotypes on both sides, so a NaN is a failure
    # (the undefined case has its own test in tests/test_report.py)
    assert table["inherited_val_acc"].nunique() >= 2 and table["standalone_val_acc"].nunique() >= 2
    for key in ("kendall_tau", "spearman_rho"):
        assert -1.0 <= result[key] <= 1.0, result
    assert result["note"] == "" and result["n"] == 3
    assert Path(result["plot"]).stat().st_size > 0


def test_segments_vs_dense_sweep_retrains_the_same_architecture(tmp_path: Path, module_ray) -> None:
    from autovid.tune.ablation import run_segments_sweep

    cfg = tiny_config(tmp_path, train={"model": "r2plus1d_18", "width": 0.125, "epochs": 1},
                      tune={"max_concurrent_trials": 2})
    out = run_segments_sweep(cfg, None, segments=[1, 2])
    table = out["table"]
    assert set(zip(table["mode"], table["num_segments"])) == {("segments", 1), ("segments", 2), ("dense", 1), ("dense", 2)}
    assert table["top1_mean"].between(0, 1).all() and Path(out["plot"]).stat().st_size > 0


def test_versus_random_places_the_searched_genotype_among_random_ones(tmp_path: Path, module_ray) -> None:
    from autovid.nas.genotype import Genotype
    from autovid.tune.ablation import run_versus_random

    cfg = tiny_config(tmp_path, train={"epochs": 1, "channels": 4, "cells": 2}, tune={"max_concurrent_trials": 2})
    searched = Genotype("module", (("conv_3", 0), ("conv_3", 0), ("skip", 1), ("conv_3", 0), ("conv_1", 2)), (1, 2, 3))
    result = run_versus_random(cfg, searched.to_json(), samples=3)
    table = pd.read_csv(result["table"], dtype={"correct": str})
    assert list(table["kind"]) == ["searched", "random", "random", "random"]
    assert table.iloc[0]["genotype_hash"] == searched.hash == result["searched"]
    below = (table["test_acc"].iloc[1:] < result["searched_test_acc"]).sum()
    ties = (table["test_acc"].iloc[1:] == result["searched_test_acc"]).sum()
    assert result["percentile"] == pytest.approx(100 * (below + 0.5 * ties) / 3)
    assert 0 <= result["ci_low"] <= result["percentile"] <= result["ci_high"] <= 100
    assert 0 < result["vs_best_random"]["p_value"] <= 1


def test_versus_random_refuses_a_genotype_of_another_space(tmp_path: Path) -> None:
    from autovid.errors import UserError
    from autovid.nas.genotype import Genotype
    from autovid.tune.ablation import run_versus_random

    cfg = tiny_config(tmp_path)
    two_nodes = Genotype("module", (("conv_3", 0), ("conv_3", 0), ("skip", 1)), (1, 2))
    with pytest.raises(UserError, match="does not fit"):
        run_versus_random(cfg, two_nodes.to_json(), samples=3)


def test_random_arms_get_the_flops_of_one_darts_search(tmp_path: Path) -> None:
    from autovid.config import ArmConfig
    from autovid.engine.accounting import count_flops
    from autovid.engine.session import build_network
    from autovid.engine.setup import clip_shape
    from autovid.tune.ablation import random_arm_genotypes, search_flops

    cfg = tiny_config(tmp_path, search={"epochs": 3, "warmup_epochs": 1})
    arm = ArmConfig(name="rand", strategy="random", search_space="p3d", samples=50)
    chosen = random_arm_genotypes(cfg, arm)
    assert chosen == random_arm_genotypes(cfg, arm)  # deterministic for the seed
    budget = search_flops(cfg)
    assert budget["budget"] == budget["supernet_flops"] * (2 * 3 - 1)
    size = cfg.with_overrides({"train.channels": cfg.model.channels, "train.cells": cfg.model.cells})
    costs = [count_flops(build_network(size, num_classes=4, genotype=g), (1, *clip_shape(cfg.data))) * 3 for g in chosen]
    assert 1 <= len(chosen) < 50 and sum(costs) <= budget["budget"]  # fits, and the cap of 50 did not bind
    samples = random_arm_genotypes(cfg.with_overrides({"ablation.budget": "samples"}), arm)
    assert len(samples) == 50
