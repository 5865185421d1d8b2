"""The command line: bad input is one line on stderr and exit code 2; listing commands work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tune", "quickstart", "search.epochz=3"), "search.epochz"),
        # overrides after options (the README's forms) reach the config, not argparse's "unrecognized"
        (("tune", "quickstart", "--resume", "search.epochz=3"), "search.epochz"),
        (("tune", "quickstart", "--no-retrain", "search.epochz=3", "--resume"), "search.epochz"),
        (("train", "quickstart", "--genotype", "g.json", "train.epochz=1"), "train.epochz"),
        (("vs-random", "quickstart", "--genotype", "g.json", "train.epochz=1"), "train.epochz"),
        (("vs-random", "quickstart", "train.model=r3d_18"), "unset train.model"),
        (("vs-random", "quickstart", "--seeds", "0"), "--seeds"),
        (("null", "quickstart", "--seeds", "1"), "--seeds"),
        (("tune", "quickstart", "data.num_segments=0"), "data.num_segments"),
        (("search", "no-such-config"), "quickstart"),
        (("train", "quickstart", "--genotype", "missing.json"), "missing.json"),
        (("data", "index", "no/such/root", "--format", "ucf101", "--out", "m.parquet"), "no/such/root"),
        (("evaluate", "missing.pt"), "missing.pt"),
        (("models", "--input", "16x112"), "--input"),
        (("models", "--input", "0x0x0"), "must be positive"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autovid: error:") and needle in lines[0], result.stderr


def test_bad_yaml_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  order: third\n")
    result = _run("search", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and str(bad) in result.stderr and "search.order" in result.stderr


def test_a_stray_word_is_still_refused(tmp_path: Path) -> None:
    result = _run("tune", "quickstart", "--resume", "stray", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: stray" in result.stderr
