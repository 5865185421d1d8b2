"""Study keys of the config: multi-objective, warm start, retrain mode, schedulers. Errors are one line."""

from __future__ import annotations

from typing import Any

import pytest

from autovid.config import load_config, validate_config
from autovid.errors import UserError

SPACE = {"search.w_lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
         "data.num_segments": {"type": "choice", "values": [1, 2]},
         "model.cells": {"type": "int", "low": 2, "high": 4}}
TWO = [{"metric": "val/acc", "mode": "max"}, {"metric": "genotype/flops", "mode": "min"}]


def _tune(**tune: Any):
    return validate_config({"tune": tune}, source="test.yaml")


def _error(**tune: Any) -> str:
    with pytest.raises(UserError) as info:
        _tune(**tune)
    message = str(info.value)
    assert "\n" not in message and message.startswith("test.yaml: ")
    return message


def test_multi_objective_config() -> None:
    cfg = _tune(objectives=TWO, scheduler={"name": "none"}, searcher={"sampler": "nsga2"}, retrain="pareto")
    assert cfg.tune.multi_objective and [o.metric for o in cfg.tune.objectives] == ["val/acc", "genotype/flops"]
    assert not cfg.measures_latency
    latency = _tune(objectives=[TWO[0], {"metric": "genotype/latency_ms", "mode": "min"}], scheduler={"name": "none"})
    assert latency.measures_latency
    assert not _tune().tune.multi_objective and _tune().tune.retrain == "best"


@pytest.mark.parametrize(
    ("tune", "needle"),
    [
        ({"objectives": TWO}, "tune.objectives (multi-objective) needs tune.scheduler.name=none: asha"),
        ({"objectives": TWO, "scheduler": {"name": "hyperband"}}, "needs tune.scheduler.name=none: hyperband"),
        ({"objectives": TWO[:1], "scheduler": {"name": "none"}}, "two or more entries"),
        ({"objectives": [TWO[0], TWO[0]], "scheduler": {"name": "none"}}, "names a metric twice"),
        (
            {"objectives": [TWO[0], {"metric": "val/accuracy", "mode": "max"}], "scheduler": {"name": "none"}},
            "tune.objectives.1.metric: Input should be 'val/acc'",
        ),
        (
            {"objectives": [TWO[0], {"metric": "genotype/flops", "mode": "down"}], "scheduler": {"name": "none"}},
            "tune.objectives.1.mode",
        ),
        (
            {"objectives": TWO, "scheduler": {"name": "none"}, "searcher": {"sampler": "cmaes"}},
            "cmaes is single-objective",
        ),
        ({"retrain": "pareto"}, "tune.retrain=pareto needs tune.objectives"),
        ({"retrain": "all"}, "tune.retrain: Input should be 'best', 'pareto' or 'none'"),
        (
            {"retrain_best": False, "retrain": "best"},
            "tune.retrain_best=false (the former key) contradicts tune.retrain=best",
        ),
        ({"retrain_best": "yes"}, "tune.retrain_best (now tune.retrain: best | pareto | none) must be true or false"),
        ({"scheduler": {"name": "bohb"}}, "tune.scheduler.name"),
        ({"scheduler": {"name": "median", "min_samples": 0}}, "tune.scheduler.min_samples"),
        (
            {"param_space": SPACE, "points_to_evaluate": [{"search.w_lr": 0.05}]},
            "tune.points_to_evaluate[0] must assign exactly the tune.param_space keys; "
            "missing ['data.num_segments', 'model.cells']",
        ),
        (
            {
                "param_space": SPACE,
                "points_to_evaluate": [
                    {"search.w_lr": 0.05, "data.num_segments": 1, "model.cells": 2, "train.lr": 0.1}
                ],
            },
            "not in param_space ['train.lr']",
        ),
        (
            {
                "param_space": SPACE,
                "points_to_evaluate": [{"search.w_lr": 0.5, "data.num_segments": 1, "model.cells": 2}],
            },
            "search.w_lr=0.5 is outside [0.01, 0.1]",
        ),
        (
            {
                "param_space": SPACE,
                "points_to_evaluate": [{"search.w_lr": 0.05, "data.num_segments": 3, "model.cells": 2}],
            },
            "data.num_segments=3 is not one of [1, 2]",
        ),
        (
            {
                "param_space": SPACE,
                "points_to_evaluate": [{"search.w_lr": 0.05, "data.num_segments": 1, "model.cells": 2.5}],
            },
            "model.cells=2.5 is not an integer",
        ),
        (
            {
                "param_space": SPACE,
                "points_to_evaluate": [{"search.w_lr": "fast", "data.num_segments": 1, "model.cells": 2}],
            },
            "search.w_lr='fast' is not a number",
        ),
        (
            {
                "num_samples": 1,
                "param_space": SPACE,
                "points_to_evaluate": [
                    {"search.w_lr": 0.05, "data.num_segments": 1, "model.cells": 2},
                    {"search.w_lr": 0.02, "data.num_segments": 2, "model.cells": 3},
                ],
            },
            "more than tune.num_samples=1",
        ),
    ],
)
def test_study_config_errors_are_one_line(tune: dict[str, Any], needle: str) -> None:
    message = _error(**tune)
    assert needle in message, message


def test_points_to_evaluate_accept_values_of_their_distributions() -> None:
    points = [{"search.w_lr": 0.01, "data.num_segments": 2, "model.cells": 4},
              {"search.w_lr": 0.1, "data.num_segments": 1, "model.cells": 2}]
    cfg = _tune(param_space=SPACE, points_to_evaluate=points)
    assert cfg.tune.points_to_evaluate == points
    assert cfg.flat()["tune.points_to_evaluate"] == points  # recorded (MLflow params) as one value


def test_the_former_retrain_best_key_still_reads() -> None:
    # checkpoints and Tune experiment states written before tune.retrain existed hold tune.retrain_best
    assert _tune(retrain_best=False).tune.retrain == "none"
    assert _tune(retrain_best=True).tune.retrain == "best"
    assert _tune(retrain_best=True, retrain="best").tune.retrain == "best"
    assert "retrain_best" not in _tune(retrain_best=False).tune.model_dump()  # written back in the new form
    assert _tune().with_overrides({"tune.retrain_best": False}).tune.retrain == "none"


def test_built_in_pareto_config_is_a_multi_objective_study() -> None:
    cfg = load_config("pareto")
    assert cfg.tune.multi_objective and cfg.tune.scheduler.name == "none"
    assert cfg.tune.points_to_evaluate  # warm-started


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["tune.scheduler.name=asha"], "needs tune.scheduler.name=none: asha"),
        (["tune.retrain=all"], "tune.retrain: Input should be 'best', 'pareto' or 'none'"),
        (["tune.points_to_evaluate=[{data.num_segments: 2, model.cells: 5, search.w_lr: 0.003, search.alpha_lr: 0.3}]"],
         "model.cells=5 is not one of [2, 3]"),
    ],
)
def test_cli_refuses_a_bad_study_in_one_line(tmp_path, overrides: list[str], needle: str) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "autovid.cli", "tune", "pareto", *overrides], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr


CONSTRAINED = {"param_space": SPACE, "constraints": ["genotype/params <= 1.0e6", " genotype/latency_ms>=0.5 "]}


def test_constraints_parse_and_ask_for_latency() -> None:
    cfg = _tune(**CONSTRAINED)
    first, second = cfg.tune.parsed_constraints
    assert (first.metric, first.op, first.bound) == ("genotype/params", "<=", 1.0e6)
    assert first.violation(4.0e5) < 0 < first.violation(2.0e6) and first.violation(1.0e6) == 0
    assert (second.metric, second.op, second.bound) == ("genotype/latency_ms", ">=", 0.5)
    assert second.violation(1.0) < 0 < second.violation(0.1)
    assert cfg.measures_latency  # a latency bound needs the latency measured, even without a latency objective
    assert not _tune(param_space=SPACE, constraints=["genotype/params <= 10"]).measures_latency


@pytest.mark.parametrize(
    ("constraints", "needle"),
    [
        (["genotype/params < 1e6"], "tune.constraints.0: 'genotype/params < 1e6' is not of the form"),
        (["genotype/params <= 1e6 and val/acc >= 0.5"], "is not of the form"),
        (["genotype/params <= lots"], "is not of the form"),
        (["genotype/params <= 1e999"], "the bound must be a finite number"),
        (["params <= 1e6"], "'params' is not a metric a constraint can bound"),
        (["__import__('os') <= 1"], "is not of the form"),
        ([3], "tune.constraints.0: Input should be a valid string"),
    ],
)
def test_bad_constraints_are_one_line_errors(constraints: list[Any], needle: str) -> None:
    assert needle in _error(param_space=SPACE, constraints=constraints)


@pytest.mark.parametrize("tune", [{"searcher": {"sampler": "random"}}, {"searcher": {"name": "random"}},
                                  {"searcher": {"sampler": "cmaes"}}, {"param_space": {}}])
def test_constraints_need_a_sampler_that_takes_them(tune: dict[str, Any]) -> None:
    assert "tune.constraints need Optuna's constraints support" in _error(**{**CONSTRAINED, **tune})


def test_latency_runtime_key() -> None:
    assert _tune().tune.latency.runtime == "eager"
    cfg = _tune(latency={"runtime": "onnxruntime", "threads": 2})
    assert (cfg.tune.latency.runtime, cfg.tune.latency.threads) == ("onnxruntime", 2)
    assert "tune.latency.runtime" in _error(latency={"runtime": "tensorrt"})
    assert "tune.latency.threads" in _error(latency={"threads": 0})
