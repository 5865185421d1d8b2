"""Preflight: what a trial would only find out after Ray is up is refused before, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from autovid.engine.preflight import check_forward, example_genotype, preflight
from autovid.errors import UserError
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config


def _with(tmp_path: Path, **sections: dict):
    return tiny_config(tmp_path, **sections)


def test_valid_search_and_retrain_pass(tmp_path: Path) -> None:
    cfg = _with(tmp_path)
    genotype = example_genotype(cfg)
    assert preflight(cfg, "search", "train", genotype_json=genotype) is None
    assert preflight(_with(tmp_path, train={"model": "r3d_18", "width": 0.25}), "train") is None
    assert not Path(cfg.storage_path).exists()  # a check, not a run: no experiment folder was made
    # the same runs one setting off are refused: what passed above was checked, not skipped
    with pytest.raises(UserError, match="needs a genotype"):
        preflight(cfg, "search", "train")
    with pytest.raises(UserError, match="one trial needs 4096 CPUs"):
        preflight(cfg.with_overrides({"tune.resources.cpu": 4096}), "search", "train", genotype_json=genotype)


@pytest.mark.parametrize(
    ("sections", "kind", "needle"),
    [
        ({"search_space": "nosuch"}, "search", "unknown search space 'nosuch'"),
        ({"train": {"model": "nosuch"}}, "train", "unknown model 'nosuch'"),
        # decord 0.6 cannot produce frames 16 pixels wide, for any file
        ({"data": {"resize": [32, 16]}}, "search", "16 pixels wide"),
    ],
)
def test_bad_run_is_refused(tmp_path: Path, sections: dict, kind: str, needle: str) -> None:
    data = sections.pop("data", None)
    cfg = _with(tmp_path, **sections) if data is None else _with(tmp_path, **sections).with_overrides(
        {f"data.{k}": v for k, v in data.items()})
    with pytest.raises(UserError, match=needle):
        preflight(cfg, kind, genotype_json=example_genotype(cfg) if cfg.train.model is None else None)


def test_a_network_that_cannot_take_the_clip_is_refused_without_computing() -> None:
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 2))  # sized for another input
    with pytest.raises(UserError, match=r"the train network cannot process clips of shape \[2, 3, 4, 8, 8\]"):
        check_forward(flat, (2, 3, 4, 8, 8), what="the train network")
    assert all(p.device.type == "meta" for p in flat.parameters())  # nothing was allocated or computed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_on_a_cpu_machine_is_refused_locally_only(tmp_path: Path) -> None:
    cfg = _with(tmp_path, device="cuda")
    with pytest.raises(UserError, match="no CUDA device"):
        preflight(cfg, "search")
    preflight(cfg.with_overrides({"device": "cpu"}), "search")
    preflight(cfg, "search", local=False)  # a cluster's workers may have the GPU the driver lacks


def test_genotype_of_another_space_is_refused(tmp_path: Path) -> None:
    cfg = _with(tmp_path)
    cell = _with(tmp_path, search_space="p3d_cell")
    with pytest.raises(UserError, match="does not fit search space"):
        preflight(cfg, "train", genotype_json=example_genotype(cell))
    genotype = Genotype.from_json(example_genotype(cfg))
    with pytest.raises(UserError, match="needs a genotype"):
        preflight(cfg, "train")
    assert genotype.topology


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


@pytest.mark.parametrize(
    ("overrides", "extra", "needle"),
    [
        (["seed=-1"], [], "seed"),
        (["name=../x"], [], "not a plain name"),
        (["train.lr=.inf"], [], "train.lr: Input should be a finite number"),
        (["search_space=nosuch"], [], "unknown search space"),
        (["data.resize=[32,16]"], [], "16 pixels wide"),
        (["train.model=nosuch"], ["--no-retrain"], "unknown model"),
    ],
)
@pytest.mark.slow
def test_cli_refuses_before_ray_starts(tmp_path: Path, overrides: list[str], extra: list[str], needle: str) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path).model_dump(mode="json")))
    command = "train" if any(o.startswith("train.model") for o in overrides) else "tune"
    result = _cli(tmp_path, command, str(config), *overrides, *([] if command == "train" else extra))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and needle in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # refused before any experiment folder was made


@pytest.mark.slow
def test_cli_refuses_storage_under_a_file_and_bad_segments(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path).model_dump(mode="json")))
    (tmp_path / "afile").write_text("x")
    result = _cli(tmp_path, "tune", str(config), f"storage_path={tmp_path / 'afile' / 'runs'}")
    assert result.returncode == 2 and "not a writable folder" in result.stderr, result.stderr[-2000:]
    result = _cli(tmp_path, "segments", str(config), "train.model=r3d_18", "--segments", "0,2")
    assert result.returncode == 2 and "positive integers" in result.stderr, result.stderr[-2000:]
