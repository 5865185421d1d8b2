"""`autovid data index|synth|summary`: bad datasets and destinations are one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from autovid.data.manifest import MANIFEST_COLUMNS, manifest_decoder, read_manifest
from autovid.data.synthetic import write_video


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a refused command; it must name every needle."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autovid: error:"), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _folder_dataset(root: Path) -> Path:
    """Two classes of two real (tiny) videos each, in class-folder layout."""
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for g in (1, 2):
            write_video(root / cls / f"v_{cls}_g{g:02d}_c01.avi", frames)
    return root


def test_index_of_an_empty_csv(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    _one_line_error(_run("data", "index", "empty.csv", "--format", "csv", "--out", "m.parquet", cwd=tmp_path),
                    "empty.csv", "empty")
    (tmp_path / "header.csv").write_text("path,label\n")
    _one_line_error(_run("data", "index", "header.csv", "--format", "csv", "--out", "m.parquet", cwd=tmp_path),
                    "header.csv", "no rows")
    assert not (tmp_path / "m.parquet").exists()


def test_index_checks_out_before_probing(tmp_path: Path) -> None:
    _folder_dataset(tmp_path / "data")
    (tmp_path / "taken").mkdir()
    (tmp_path / "file").write_text("x")
    # one line and nothing else: no probing progress bar and no per-file log came before the refusal
    refused = _run("data", "index", "data", "--format", "folder", "--out", "taken", cwd=tmp_path)
    _one_line_error(refused, "--out", "taken", "is a folder")
    assert "probing" not in refused.stderr  # tqdm's bar goes to stderr as soon as probing starts
    _one_line_error(_run("data", "index", "data", "--format", "folder", "--out", "file/m.parquet", cwd=tmp_path),
                    "--out", "file is not a folder")
    assert list((tmp_path / "taken").iterdir()) == [] and (tmp_path / "file").read_text() == "x"
    ok = _run("data", "index", "data", "--format", "folder", "--out", "new/m.parquet", cwd=tmp_path)
    assert ok.returncode == 0 and "manifest: new/m.parquet" in ok.stdout, ok.stderr
    assert len(pd.read_parquet(tmp_path / "new" / "m.parquet")) == 4


def test_synth_into_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    _one_line_error(_run("data", "synth", "out", cwd=tmp_path), "out", "not a folder")
    _one_line_error(_run("data", "synth", "out/bench", cwd=tmp_path), "out/bench", "not a folder")
    assert (tmp_path / "out").read_text() == "x"


def test_summary_of_an_unusable_manifest(tmp_path: Path) -> None:
    pd.DataFrame([], columns=list(MANIFEST_COLUMNS)).to_parquet(tmp_path / "empty.parquet")
    _one_line_error(_run("data", "summary", "empty.parquet", cwd=tmp_path), "empty.parquet", "no rows")
    row = {"path": "/v/a.avi", "label": 0, "class_name": "a", "split": "train", "num_frames": -5, "fps": 25.0,
           "width": 32, "height": 32, "duration": 0.0, "status": "ok", "reason": ""}
    pd.DataFrame([row], columns=list(MANIFEST_COLUMNS)).to_parquet(tmp_path / "neg.parquet")
    _one_line_error(_run("data", "summary", "neg.parquet", cwd=tmp_path), "neg.parquet", "num_frames -5")


def test_index_never_writes_over_the_dataset(tmp_path: Path) -> None:
    """`--out` onto a video of the dataset (directly or through a link), anywhere inside its tree, or onto the csv
    or a video it lists, is refused before probing; the dataset is untouched."""
    data = _folder_dataset(tmp_path / "data")
    video = data / "a" / "v_a_g01_c01.avi"
    before = video.read_bytes()
    (tmp_path / "link.parquet").symlink_to(video)
    for out in (str(video), "link.parquet", "data/manifest.parquet", "data/a/new.parquet"):
        refused = _run("data", "index", "data", "--format", "folder", "--out", out, "--overwrite", cwd=tmp_path)
        _one_line_error(refused, "--out", out)
        assert "probing" not in refused.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_video(outside / "v_c_g01_c01.avi", np.zeros((4, 16, 16, 3), np.uint8))
    (tmp_path / "list.csv").write_text("path,label\ndata/a/v_a_g01_c01.avi,a\nelsewhere/v_c_g01_c01.avi,c\n")
    for out in ("list.csv", "elsewhere/v_c_g01_c01.avi"):
        _one_line_error(_run("data", "index", "list.csv", "--format", "csv", "--out", out, "--overwrite", cwd=tmp_path),
                        "--out", out, "is an input")
    assert video.read_bytes() == before and (tmp_path / "list.csv").read_text().startswith("path,label")
    assert sorted(p.name for p in data.rglob("*")) == sorted(["a", "b"] + [f"v_{c}_g0{g}_c01.avi" for c in "ab"
                                                                             for g in (1, 2)])


def test_index_replaces_a_manifest_only_with_overwrite(tmp_path: Path) -> None:
    _folder_dataset(tmp_path / "data")
    (tmp_path / "m.parquet").write_text("an older result")
    _one_line_error(_run("data", "index", "data", "--format", "folder", "--out", "m.parquet", cwd=tmp_path),
                    "--out m.parquet exists; add --overwrite")
    assert (tmp_path / "m.parquet").read_text() == "an older result"
    ok = _run("data", "index", "data", "--format", "folder", "--out", "m.parquet", "--overwrite", "--decoder", "pyav",
              cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len(pd.read_parquet(tmp_path / "m.parquet")) == 4
    assert (
        "probed with the pyav decoder" in ok.stdout
        and manifest_decoder(read_manifest(tmp_path / "m.parquet")) == "pyav"
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically, no leftover
