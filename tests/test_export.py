"""`autovid export`: .pt2 and ONNX files that load without autovid and match eager PyTorch on a real test clip."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from autovid.cli import main
from autovid.data.backends import resolve as resolve_decoder
from autovid.engine.checkpoint import save_state
from autovid.engine.preflight import example_genotype
from autovid.engine.session import SearchSession, TrainSession
from autovid.export import (
    METADATA_KEY,
    PARITY_TOLERANCE,
    eager_model,
    load_onnx,
    load_pt2,
    load_train_state,
    model_metadata,
    real_test_clips,
)
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow


def train_checkpoint(root: Path) -> Path:
    """A tiny network retrained for one epoch on the synthetic benchmark, saved as a retrain's state.pt. The
    motion-prior stem init (as the quickstart's) also changes the stem's padding, which no state dict records."""
    cfg = tiny_config(root, train={"epochs": 1, "channels": 4, "cells": 2}, data={"test_clips": 2},
                      model={"stem_init": "temporal_difference"})
    session = TrainSession(cfg, Genotype.from_json(example_genotype(cfg)))
    session.step()
    return save_state(session.state_dict(), root / "state.pt")


def autovid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, shared_synthetic_cache: str) -> dict:
    """The checkpoint, exported to both formats by the command line; what it printed."""
    root = tmp_path_factory.mktemp("export")
    state = train_checkpoint(root)
    out: dict = {"root": root, "state": state}
    for fmt in ("pt2", "onnx"):
        result = autovid("export", str(state), "--format", fmt, cwd=root)
        assert result.returncode == 0, result.stderr
        out[fmt], out[f"{fmt}_stdout"] = root / f"state.{fmt}", result.stdout
    return out


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_export_reports_its_parity_on_a_real_clip(exported: dict, fmt: str) -> None:
    stdout = exported[f"{fmt}_stdout"]
    match = re.search(r"parity with eager PyTorch on (\d+) real test clips of (\S+): max \|Δlogit\| = (\S+)", stdout)
    assert match, stdout
    assert int(match[1]) == 2 and Path(match[2]).is_file()
    assert float(match[3]) <= PARITY_TOLERANCE
    assert exported[fmt].is_file() and not list(exported["root"].glob(".*tmp*"))  # no temporary file left


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_exported_model_matches_eager_at_any_batch_size(exported: dict, fmt: str) -> None:
    state = load_train_state(exported["state"])
    clips, _ = real_test_clips(state, model_metadata(state))  # [2, K, C, L, H, W] of a real test video
    runner, meta = (load_pt2 if fmt == "pt2" else load_onnx)(exported[fmt])
    eager = eager_model(state)
    for batch in (clips[:1], clips, torch.cat([clips, clips.flip(0), clips])):  # batch 1, 2 and 6
        with torch.no_grad():
            expected = eager(batch)
        got = runner(batch)
        assert got.shape == (len(batch), 4)
        assert float((got - expected).abs().max()) <= PARITY_TOLERANCE
    assert meta == model_metadata(state)


_OUTSIDE = """
import json, sys


class NoAutovid:  # the venv has autovid installed (editable): make any import of it fail, by anyone
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "autovid":
            raise ModuleNotFoundError("autovid is not available to this process")


sys.meta_path.insert(0, NoAutovid())
import numpy as np, onnxruntime, torch
clips = torch.from_numpy(np.load("clips.npy"))
extra = {"autovid": ""}
module = torch.export.load("model.pt2", extra_files=extra).module()
session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
print(json.dumps({
    "pt2": module(clips).tolist(),
    "onnx": session.run(None, {session.get_inputs()[0].name: clips.numpy()})[0].tolist(),
    "pt2_meta": json.loads(extra["autovid"]),
    "onnx_meta": json.loads(session.get_modelmeta().custom_metadata_map["autovid"]),
    "autovid_loaded": any(name.split(".")[0] == "autovid" for name in sys.modules),
}))
"""


def test_exports_load_and_run_without_autovid(exported: dict, tmp_path: Path) -> None:
    """`python -I` in a folder outside the repository (no PYTHONPATH, no cwd on sys.path), with every import of
    autovid made to fail: loading and running either file needs only torch or onnxruntime."""
    state = load_train_state(exported["state"])
    clips, _ = real_test_clips(state, model_metadata(state))
    np.save(tmp_path / "clips.npy", clips.numpy())
    for fmt in ("pt2", "onnx"):
        (tmp_path / f"model.{fmt}").write_bytes(exported[fmt].read_bytes())
    blocked = subprocess.run([sys.executable, "-I", "-c", _OUTSIDE.split("import numpy")[0] + "import autovid"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert blocked.returncode != 0 and "not available" in blocked.stderr  # the blocker works
    result = subprocess.run([sys.executable, "-I", "-c", _OUTSIDE], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["autovid_loaded"] is False
    with torch.no_grad():
        expected = eager_model(state)(clips)
    for fmt in ("pt2", "onnx"):
        assert float((torch.tensor(out[fmt]) - expected).abs().max()) <= PARITY_TOLERANCE
    assert out["pt2_meta"] == out["onnx_meta"] == model_metadata(state)


def test_metadata_travels_with_the_export_and_in_a_sidecar(exported: dict) -> None:
    state = load_train_state(exported["state"])
    meta = model_metadata(state)
    for fmt in ("pt2", "onnx"):
        assert json.loads(Path(f"{exported[fmt]}.json").read_text()) == meta
    assert meta["class_names"] == state["class_names"]
    assert Genotype.from_json(meta["genotype"]) == Genotype.from_json(state["genotype"])
    spec = meta["input"]
    assert (spec["num_segments"], spec["frames_per_segment"], spec["crop_size"], spec["stride"]) == (2, 2, 24, 1)
    assert (spec["mode"], spec["modality"], spec["test_clips"], spec["shape"]) == (
        "segments",
        "rgb",
        2,
        [2, 3, 2, 24, 24],
    )
    assert spec["normalization"]["mean"] == [0.45] * 3 and spec["normalization"]["std"] == [0.225] * 3
    assert spec["decoder"] == resolve_decoder("auto")  # data.decoder: auto, as this machine resolves it
    assert meta["autovid_version"] and METADATA_KEY == "autovid"


def exit_code_and_errors(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    """`autovid ARGS` in this process: exit status, stderr lines, stdout."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def test_search_checkpoints_and_foreign_files_are_refused_in_one_line(
        exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search = save_state(SearchSession(tiny_config(tmp_path)).state_dict(), tmp_path / "search.pt")
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint at all")
    for path, needle in ((search, "not a retrain"), (foreign, "not an autovid checkpoint"),
                         (tmp_path / "missing.pt", "not found")):
        code, errors, _ = exit_code_and_errors(capsys, "export", str(path), "--format", "onnx")
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
    assert not list(tmp_path.glob("*.onnx"))


def test_bad_out_is_refused_before_any_work(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for out, needle in ((tmp_path / "no" / "such" / "model.pt2", "does not exist"), (tmp_path, "is a folder")):
        code, errors, stdout = exit_code_and_errors(capsys, "export", str(exported["state"]), "--format", "pt2",
                                                    "--out", str(out))
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
        assert "parity" not in stdout


class _Call:
    """Unpickling this calls print: what a malicious archive would do with something worse."""

    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


def test_a_pt2_archive_that_needs_unpickling_code_is_refused(
        exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """torch.export.load would unpickle the example inputs without restriction after a failed weights_only load:
    the archive is checked first, and a record holding a Python call (here a harmless one) is refused."""
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(exported["pt2"]) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "sample_inputs" in info.filename:
                data = pickle.dumps(_Call(), protocol=0)  # protocol 0 is text: a pickle can look like data
            dst.writestr(info, data)
    code, errors, stdout = exit_code_and_errors(capsys, "predict", str(evil), str(tmp_path / "v.mp4"))
    assert code == 2 and len(errors) == 1 and "refused" in errors[0] and "sample_inputs" in errors[0], errors
    assert "unpickled!" not in stdout


def test_export_never_replaces_its_checkpoint(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--out` onto the checkpoint, or onto a link to it, is refused before any work, even with --overwrite."""
    state = exported["state"]
    before = state.read_bytes()
    link = tmp_path / "model.pt2"
    link.symlink_to(state)
    for out in (state, link):
        for flags in ((), ("--overwrite",)):
            code, errors, stdout = exit_code_and_errors(capsys, "export", str(state), "--format", "pt2",
                                                        "--out", str(out), *flags)
            assert code == 2 and len(errors) == 1 and "is an input of this command" in errors[0], errors
            assert "parity" not in stdout
    assert state.read_bytes() == before and link.is_symlink()


def test_export_replaces_an_existing_file_only_with_overwrite(
        exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = exported["state"]
    code, errors, _ = exit_code_and_errors(capsys, "export", str(state), "--format", "onnx")  # the default: state.onnx
    assert code == 2 and errors == [f"autovid: error: --out {exported['onnx']} exists; add --overwrite to replace it"]
    (tmp_path / "m.onnx.json").write_text("my notes")  # the metadata sidecar counts as an output too
    code, errors, _ = exit_code_and_errors(capsys, "export", str(state), "--format", "onnx", "--out",
                                           str(tmp_path / "m.onnx"))
    assert code == 2 and len(errors) == 1 and "m.onnx.json exists; add --overwrite" in errors[0], errors
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.onnx.json").read_text() == "my notes"
    # with --overwrite, a link at the destination is itself replaced by the export; its target is left as is
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"keep")
    (tmp_path / "m.onnx").symlink_to(kept)
    code, errors, stdout = exit_code_and_errors(capsys, "export", str(state), "--format", "onnx", "--out",
                                                str(tmp_path / "m.onnx"), "--overwrite")
    assert code == 0 and "parity" in stdout, errors
    assert not (tmp_path / "m.onnx").is_symlink() and kept.read_bytes() == b"keep"
    assert load_onnx(tmp_path / "m.onnx")[1] == json.loads((tmp_path / "m.onnx.json").read_text())
