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
    # one seed per arm: no seed-level test (NaN), only the per-video test of these trained networks
    assert table.loc[table["arm"] != "darts", "p_value"].isna().all()
    assert table.loc[table["arm"] != "darts", "p_networks"].between(0, 1).all()
    assert (Path(paths["csv"]).parent / "seeds.csv").is_file()
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
    out = run_segments_sweep(cfg, None, segments=[2], seeds=2)
    table = out["table"]
    assert set(zip(table["mode"], table["num_segments"])) == {("segments", 2), ("dense", 2)}
    assert (table["runs"] == 2).all()  # two seeds per setting
    assert table["top1_mean"].between(0, 1).all() and Path(out["plot"]).stat().st_size > 0
    seeds = pd.read_csv(Path(out["csv"]).parent / "seeds.csv")
    assert sorted(seeds["seed"]) == [0, 0, 1, 1]
    comparison = out["comparisons"].iloc[0]
    per_mode = seeds.groupby("mode")["top1"].mean()
    assert comparison["num_segments"] == 2 and comparison["seeds"] == 2
    assert comparison["delta"] == pytest.approx(per_mode["segments"] - per_mode["dense"])


def test_versus_random_searches_per_seed_and_retrains_every_genotype_under_every_seed(
        tmp_path: Path, module_ray) -> None:
    from autovid.nas.genotype import Genotype
    from autovid.tune.ablation import VERSUS_RANDOM_COLUMNS, run_versus_random

    cfg = tiny_config(
        tmp_path,
        search={"epochs": 1, "warmup_epochs": 0},
        train={"epochs": 1, "channels": 4, "cells": 2},
        tune={"max_concurrent_trials": 2},
    )
    result = run_versus_random(cfg, None, samples=2, seeds=2)  # no genotype: the config's search, once per seed
    table = pd.read_csv(result["table"])
    assert list(table.columns) == list(VERSUS_RANDOM_COLUMNS)
    assert sorted(table["seed"].unique()) == [0, 1]
    counts = table.groupby("source").size().to_dict()
    assert counts == {"searched": 2, "random": 4, "control": 2}  # one searched genotype per seed; each random twice
    randoms = table[table["source"] == "random"]
    assert randoms.groupby("genotype")["seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    searched = table[table["source"] == "searched"].sort_values("seed")
    for seed, genotype in zip(searched["seed"], searched["genotype"]):  # the search of that seed, retrained with it
        search_result = next((tmp_path / "runs").glob(f"tiny-s{seed}-search/*/result.json"))
        last = pd.read_json(search_result, lines=True).iloc[-1]
        assert Genotype.from_json(last["genotype"]).hash == genotype
    assert (table.loc[table["source"] == "control", "temporal_edges"] == 0).all()
    assert table["top1"].between(0, 1).all() and (table["params"] > 0).all()
    assert result["random_samples"] == 2 and result["seeds"] == 2
    assert result["provenance"]["manifest"] and result["provenance"]["config"]
    md = Path(result["report"]).read_text()
    assert md.startswith("Provenance: commit ") and "one-way ICC" in md and "Spatial control" in md


def test_versus_random_statistics_from_a_table() -> None:
    from autovid.stats import icc_oneway
    from autovid.tune.ablation import versus_random_stats

    rows = [
        ("s0", "searched", 0, 0.80),
        ("s1", "searched", 1, 0.70),
        ("c", "control", 0, 0.26),
        ("c", "control", 1, 0.24),
    ]
    for g, (a, b) in {"r1": (0.30, 0.32), "r2": (0.50, 0.46), "r3": (0.60, 0.66), "r4": (0.25, 0.25)}.items():
        rows += [(g, "random", 0, a), (g, "random", 1, b)]
    table = pd.DataFrame(rows, columns=["genotype", "source", "seed", "top1"])
    result = versus_random_stats(table, classes=4)
    expected = icc_oneway([[0.30, 0.32], [0.50, 0.46], [0.60, 0.66], [0.25, 0.25]])
    assert result["icc"]["icc"] == pytest.approx(expected["icc"]) and result["icc"]["icc"] > 0.9
    assert result["standing"]["percentile"] == 100.0  # 0.75 is above every random genotype's mean
    assert result["standing"]["delta"] == pytest.approx(0.75 - (0.31 + 0.48 + 0.63 + 0.25) / 4)
    assert result["control_top1"] == pytest.approx(0.25) and result["chance"] == 0.25
    assert result["searched"] == ["s0", "s1"]


def test_versus_random_refuses_a_genotype_of_another_space(tmp_path: Path) -> None:
    from autovid.errors import UserError
    from autovid.nas.genotype import Genotype
    from autovid.tune.ablation import run_versus_random

    cfg = tiny_config(tmp_path)
    two_nodes = Genotype("module", (("conv_3", 0), ("conv_3", 0), ("skip", 1)), (1, 2))
    with pytest.raises(UserError, match="does not fit"):
        run_versus_random(cfg, two_nodes.to_json(), samples=3, seeds=1)


def test_random_arms_get_the_flops_of_one_darts_search(tmp_path: Path) -> None:
    from autovid.config import ArmConfig
    from autovid.engine.accounting import count_flops
    from autovid.engine.networks import build_network
    from autovid.engine.setup import clip_shape
    from autovid.tune.arms import random_arm_genotypes, search_flops

    cfg = tiny_config(tmp_path, search={"epochs": 3, "warmup_epochs": 1})
    arm = ArmConfig(name="rand", strategy="random", search_space="p3d", samples=50)
    chosen = random_arm_genotypes(cfg, arm)
    assert chosen == random_arm_genotypes(cfg, arm)  # deterministic for the seed
    budget = search_flops(cfg)
    assert budget["budget"] == budget["supernet_flops"] * (2 * 3 - 1)
    size = cfg.with_overrides({"train.channels": cfg.model.channels, "train.cells": cfg.model.cells})
    costs = [
        count_flops(build_network(size, num_classes=4, genotype=g), (1, *clip_shape(cfg.data))) * 3 for g in chosen
    ]
    assert 1 <= len(chosen) < 50 and sum(costs) <= budget["budget"]  # fits, and the cap of 50 did not bind
    samples = random_arm_genotypes(cfg.with_overrides({"ablation.budget": "samples"}), arm)
    assert len(samples) == 50


def test_random_search_rounds_spend_what_asha_saves(tmp_path: Path) -> None:
    """A round takes the next genotypes that fit the remaining FLOPs at full length; the first always one."""
    from autovid.nas.search_space import load_search_space
    from autovid.tune.arms import Draws, epoch_flops, fitting, search_flops

    cfg = tiny_config(tmp_path, search={"epochs": 3, "warmup_epochs": 1})
    space = load_search_space(cfg.search_space)
    budget = search_flops(cfg)["budget"]
    first = fitting(Draws(space, 0), budget, cfg, space, at_least_one=True)
    spent = sum(cost * 3 for _, cost in first)
    assert spent <= budget and first[0][1] == epoch_flops(cfg, space, first[0][0])
    draws = Draws(space, 0)
    for _ in first:
        next(draws)
    following = draws.peek()
    # ASHA stopped every genotype after one of three epochs: two thirds of their FLOPs buy fresh genotypes
    saved = budget - spent / 3
    second = fitting(draws, saved, cfg, space, at_least_one=False)
    assert second and second[0][0] == following and sum(c * 3 for _, c in second) <= saved
    assert fitting(Draws(space, 0), 0.0, cfg, space, at_least_one=False) == []
    assert len(fitting(Draws(space, 0), 0.0, cfg, space, at_least_one=True)) == 1
    second_order = search_flops(cfg.with_overrides({"search.order": "second", "search.w_optimizer": "sgd"}))
    assert second_order["half_epochs"] == 3 + 4 * 2 and budget == search_flops(cfg)["supernet_flops"] * 5


def test_null_control_runs_each_seed_on_true_and_shuffled_labels(tmp_path: Path, module_ray) -> None:
    from autovid.tune.ablation import NULL_CONTROL_COLUMNS, run_null_control

    cfg = tiny_config(tmp_path, search={"epochs": 2, "warmup_epochs": 1, "alpha_lr": 0.3},
                      tune={"max_concurrent_trials": 2})
    result = run_null_control(cfg, seeds=2)
    table = pd.read_csv(result["table"])
    assert list(table.columns) == list(NULL_CONTROL_COLUMNS)
    assert sorted(zip(table["labels"], table["seed"])) == [("shuffled", 0), ("shuffled", 1), ("true", 0), ("true", 1)]
    # the same seed on shuffled labels is another search: its α moved on other gradients
    true, null = (table[table["labels"] == k].set_index("seed") for k in ("true", "shuffled"))
    assert (true["alpha_entropy"] != null["alpha_entropy"]).all()
    assert 0 <= result["true"]["agreement"] <= 1 and 0 <= result["shuffled"]["agreement"] <= 1
    md = Path(result["report"]).read_text()
    assert md.startswith("Provenance: commit ") and "shuffled labels (null)" in md


def test_null_control_statistics() -> None:
    import json
    import math

    from autovid.tune.ablation import null_control_stats

    def genotype(*ops: str) -> str:
        return json.dumps({"topology": "module", "normal": [[op, j] for op, j in zip(ops, (0, 0, 1, 0, 2))],
                           "normal_concat": [1, 2, 3], "reduce": [], "reduce_concat": []})

    rows = [(0, "true", genotype("conv_3", "conv_3", "skip", "conv_3", "conv_1"), 1.0),
            (1, "true", genotype("conv_3", "conv_3", "skip", "conv_3", "max_pool_3"), 1.1),
            (0, "shuffled", genotype("skip", "conv_3", "avg_pool_3", "conv_1", "conv_1"), 1.9),
            (1, "shuffled", genotype("max_pool_3", "dil_conv_3", "skip", "conv_3", "conv_3"), 2.0)]
    table = pd.DataFrame([{"seed": s, "labels": k, "genotype": str(s), "val_acc": 0.5, "alpha_entropy": h,
                           "genotype_json": g} for s, k, g, h in rows])
    result = null_control_stats(table, ops=8)
    assert result["true"]["agreement"] == pytest.approx(4 / 5)
    assert result["shuffled"]["agreement"] == 0.0  # no node shares an operator
    assert result["agreement_gain"] == pytest.approx(4 / 5)
    assert result["entropies_separate"] and result["true"]["entropy"][0] == pytest.approx(1.0 / math.log(8))


def test_fixed_arms_get_a_learning_rate_sweep_on_the_alpha_half(tmp_path: Path, module_ray) -> None:
    from autovid.tune.arms import baseline_lrs

    arm = tmp_path / "r3d.yaml"
    arm.write_text("name: r3d\nstrategy: fixed\nmodel: r3d_18\nwidth: 0.125\n")
    cfg = tiny_config(tmp_path, train={"epochs": 1, "lr": 0.003}, tune={"max_concurrent_trials": 2, "num_samples": 2},
                      ablation={"arms": [str(arm)], "seeds": [0], "reference": "r3d"})
    lrs = baseline_lrs(cfg)  # the size of the outer search (tune.num_samples), around train.lr
    assert lrs == pytest.approx([0.0003, 0.03])
    paths = run_ablation(cfg)
    results = pd.read_csv(Path(paths["csv"]).parent / "results.csv", dtype={"correct": str})
    sweep = [
        pd.read_json(p, lines=True).iloc[-1] for p in (tmp_path / "runs").glob("tiny-r3d-s0-lr-sweep/*/result.json")
    ]
    assert len(sweep) == 2 and all("val/acc" in row and "test/acc" not in row for row in sweep)  # α half only
    top = max(row["val/acc"] for row in sweep)
    best = [row["config"]["train.lr"] for row in sweep if row["val/acc"] == top]
    # the best on the α half; on a tie, the rate nearest train.lr (both are 10x away here: either is right)
    assert any(results["train_lr"].item() == pytest.approx(lr) for lr in best)
    assert results["search_cost_s"].item() > 0  # the sweep's compute counts as the arm's search
    assert "learning rate chosen on the α half among 2" in Path(paths["markdown"]).read_text()
    assert baseline_lrs(cfg.with_overrides({"ablation.baseline_lr_sweep": 0})) == []
