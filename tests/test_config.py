"""Config loading: validation errors are one line naming the key and file; overrides; immutability."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from autovid.config import ExperimentConfig, load_config, parse_overrides
from autovid.errors import UserError
from autovid.resources import list_resources


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_every_builtin_config_validates() -> None:
    names = list_resources("tune_configs")
    assert "quickstart" in names
    for name in names:
        assert isinstance(load_config(name), ExperimentConfig)


def test_dotted_overrides_apply_and_parse_types(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "name: x\n"), ["data.num_segments=8", "search.w_lr=1e-2", "data.resize=[64, 80]"])
    assert cfg.data.num_segments == 8
    assert cfg.search.w_lr == pytest.approx(0.01)
    assert cfg.data.resize == (64, 80)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("data:\n  num_segmnets: 3\n", [], "data.num_segmnets: unknown key"),
        ("data:\n  num_segments: four\n", [], "data.num_segments"),
        ("search:\n  train_portion: 1.5\n", [], "search.train_portion"),
        ("name: x\n", ["search.epochz=2"], "unknown config key 'search.epochz'"),
        ("name: x\n", ["data.num_segments=0"], "data.num_segments"),
        ("data:\n  modality: flow\n", [], "data.modality"),
        ("data:\n  crop_scale: [0.9, 0.5]\n", [], "crop_scale must be (low, high)"),
        ("data:\n  crop_scale: [0, 1]\n", [], "data.crop_scale"),
        ("tune:\n  param_space:\n    data.nope: {type: choice, values: [1]}\n", [], "data.nope"),
        # a trial never holds devices it does not use
        ("name: x\n", ["tune.resources.gpu=2"], "set tune.resources.workers=2 and gpu=1"),
        ("name: x\n", ["tune.resources.gpu=0.5", "tune.resources.workers=2"], "need a whole GPU each"),
    ],
)
def test_bad_input_is_one_line_naming_key_and_file(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_unknown_builtin_name_lists_valid_names() -> None:
    with pytest.raises(UserError, match="quickstart"):
        load_config("no-such-config")


def test_config_is_immutable_and_flat_roundtrips(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "seed: 3\n"))
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 4  # type: ignore[misc]
    flat = cfg.flat()
    assert flat["seed"] == 3 and flat["data.num_segments"] == cfg.data.num_segments
    assert cfg.with_overrides({"seed": 5}).seed == 5 and cfg.seed == 3


def test_parse_overrides_rejects_malformed() -> None:
    with pytest.raises(UserError, match="key.sub=value"):
        parse_overrides(["justakey"])


def test_a_trial_larger_than_this_machine_is_refused() -> None:
    from autovid.engine.preflight import check_trial_fits

    cfg = load_config("quickstart", ["tune.resources.workers=2", "tune.resources.cpu=2"])
    check_trial_fits(cfg, cpus=4, gpus=0)
    with pytest.raises(UserError, match=r"needs 4 CPUs \(workers=2 × cpu=2\) but this machine has 2"):
        check_trial_fits(cfg, cpus=2, gpus=0)
    gpu = load_config("quickstart", ["tune.resources.workers=4", "tune.resources.gpu=1"])
    with pytest.raises(UserError, match="needs 4 GPUs"):
        check_trial_fits(gpu, cpus=64, gpus=2)
