"""`autovid predict`: top-k classes of real videos of any size and container, from every kind of model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autovid.cli import main
from autovid.config import validate_config
from autovid.data.synthetic import write_video
from autovid.engine.checkpoint import save_state
from autovid.engine.evaluation import evaluate_checkpoint
from autovid.engine.session import SearchSession
from autovid.engine.setup import build_data
from autovid.export import METADATA_KEY, eager_model, export_model, input_dataset, load_train_state, model_metadata
from autovid.predict import load_predictor, predict_videos, probe_videos
from tests.test_export import train_checkpoint
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow

HEADER = ["video", "rank", "class", "probability"]


def autovid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def moving_square(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a bright square crossing a noisy background."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, (frames, height, width, 3), dtype=np.uint8)
    side = min(height, width) // 3
    for t in range(frames):
        x = t * (width - side) // max(frames - 1, 1)
        video[t, (height - side) // 2:(height + side) // 2, x:x + side] = 230
    return video


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, shared_synthetic_cache: str) -> dict:
    """A retrained checkpoint, its .pt2 and ONNX exports, three real videos (sizes, frame rates, containers and
    codecs the network never saw) and a corrupt one."""
    root = tmp_path_factory.mktemp("predict")
    state = train_checkpoint(root)
    videos = root / "videos"
    videos.mkdir()
    good = [
        write_video(videos / "wide.avi", moving_square(30, 40, 56, 0), fps=10, codec="mpeg4"),
        write_video(videos / "square.mp4", moving_square(12, 64, 64, 1), fps=25, codec="h264"),
        write_video(videos / "motion.avi", moving_square(20, 48, 80, 2), fps=15, codec="mjpeg"),
    ]
    corrupt = videos / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(3).bytes(4096))
    models = {"state": state}
    for fmt in ("pt2", "onnx"):
        models[fmt] = export_model(state, fmt).path
    return {"root": root, "models": models, "good": good, "corrupt": corrupt,
            "class_names": load_train_state(state)["class_names"]}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == HEADER
        return list(reader)


@pytest.mark.parametrize("model", ["state", "pt2", "onnx"])
def test_predict_every_readable_video_and_name_the_corrupt_one(setup: dict, model: str, tmp_path: Path) -> None:
    good, corrupt = setup["good"], setup["corrupt"]
    out = tmp_path / "preds.csv"
    result = autovid("predict", str(setup["models"][model]), *map(str, good[:2]), str(corrupt), str(good[2]),
                     "--topk", "3", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # some video could not be read
    errors = [line for line in result.stderr.splitlines() if line.startswith("autovid:")]
    assert len(errors) == 1 and errors[0].startswith(f"autovid: cannot read {corrupt}: "), result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == HEADER
    for video in good:
        shown = [line.split() for line in lines if line.startswith(str(video))]
        assert [row[1] for row in shown] == ["1", "2", "3"] and all(row[2] in setup["class_names"] for row in shown)
    assert str(corrupt) not in result.stdout
    assert "predicted 3 of 4 videos (6 clips, 2 per video)" in result.stdout and "clips/s" in result.stdout
    rows = _rows(out)
    assert [r["video"] for r in rows] == [str(v) for v in good for _ in range(3)]
    for i in range(0, len(rows), 3):
        probs = [float(r["probability"]) for r in rows[i:i + 3]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[-1] and sum(probs) <= 1 + 1e-6


def predicted(model: str, videos: list[Path], *, clips: int = 2) -> list[tuple[str, list[tuple[str, float]]]]:
    """In-process predictions of every class, in input order; any unreadable video fails the test."""
    def fail(video: str, reason: str) -> None:
        raise AssertionError(f"{video}: {reason}")

    predictor = load_predictor(model)
    return predict_videos(predictor, [str(v) for v in videos], clips=clips, topk=len(predictor.class_names),
                          on_failure=fail).predictions


def _close(a: list, b: list) -> bool:
    """Same videos, same class ranking, probabilities within 1e-5."""
    return [v for v, _ in a] == [v for v, _ in b] and all(
        [c for c, _ in ra] == [c for c, _ in rb] and np.allclose([p for _, p in ra], [p for _, p in rb], atol=1e-5)
        for (_, ra), (_, rb) in zip(a, b))


def test_all_formats_give_the_same_probabilities(setup: dict) -> None:
    runs = {model: predicted(str(setup["models"][model]), setup["good"], clips=3) for model in ("state", "pt2", "onnx")}
    assert _close(runs["pt2"], runs["state"]) and _close(runs["onnx"], runs["state"])


def test_every_format_reproduces_the_checkpoints_evaluation(setup: dict) -> None:
    """On the test split, the top-1 hits and the cross-entropy of predict's probabilities are those of
    `autovid evaluate` (which rebuilds the network through the retrain's own session)."""
    state = load_train_state(setup["models"]["state"])
    expected = evaluate_checkpoint(setup["models"]["state"])
    cfg = validate_config(state["config"], source="test")
    records = build_data(cfg.data, seed=cfg.seed, train_portion=None).test.dataset.records
    names = state["class_names"]
    for model in ("state", "pt2", "onnx"):
        runs = predicted(str(setup["models"][model]), [Path(r.path) for r in records])
        hits = "".join("1" if ranked[0][0] == names[r.label] else "0" for r, (_, ranked) in zip(records, runs))
        loss = np.mean([-np.log(dict(ranked)[names[r.label]]) for r, (_, ranked) in zip(records, runs)])
        assert hits == expected["test/correct"], model
        assert loss == pytest.approx(expected["test/loss"], rel=1e-4), model


def test_clips_are_the_test_loaders_clips(setup: dict) -> None:
    """Preprocessing is the data pipeline's own: a test video's clips equal the test loader's, bit for bit."""
    state = load_train_state(setup["models"]["state"])
    cfg = validate_config(state["config"], source="test")
    test_set = build_data(cfg.data, seed=cfg.seed, train_portion=None).test.dataset
    record = test_set.records[0]
    expected, _ = test_set[(0, 0)]  # [M=2, K, C, L, H, W]
    reader = input_dataset(model_metadata(state)["input"], [(record.path, record.num_frames)], clips=2)
    try:
        assert torch.equal(reader.test_clips(0), expected)
    finally:
        reader.close()


def test_probing_names_each_unreadable_file(setup: dict, tmp_path: Path) -> None:
    found = probe_videos([str(setup["good"][0]), str(setup["corrupt"]), str(tmp_path / "gone.mp4"), str(tmp_path)])
    assert found[0][1] == 30 and found[0][2] == ""
    assert [f[1] for f in found[1:]] == [None, None, None]
    assert [f[2].split()[0] for f in found[1:]] == ["unreadable", "missing", "directory"]


def test_mlflow_logged_model_predicts_like_the_checkpoint(setup: dict, tmp_path: Path) -> None:
    """A pt2 LoggedModel carrying the export metadata (what retrains log), loaded through its models:/ URI."""
    import mlflow
    import mlflow.pytorch

    state = load_train_state(setup["models"]["state"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    example = np.random.default_rng(0).standard_normal((2, 2, 3, 2, 24, 24)).astype(np.float32)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(eager_model(state), name="network", serialization_format="pt2",
                                            input_example=example, metadata={"autovid": model_metadata(state)},
                                            pip_requirements=["torch"])
    finally:
        mlflow.set_tracking_uri(None)
    video = setup["good"][1]
    result = autovid("predict", info.model_uri, str(video), "--tracking-uri", uri, "--topk", "4", "--out", "m.csv",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(mlflow model)" in result.stdout
    from_mlflow = [(str(video), [(r["class"], float(r["probability"])) for r in _rows(tmp_path / "m.csv")])]
    assert _close(from_mlflow, predicted(str(setup["models"]["state"]), [video]))


def test_usage_errors_exit_2_in_one_line(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search = save_state(SearchSession(tiny_config(tmp_path)).state_dict(), tmp_path / "search.pt")
    video = str(setup["good"][0])
    state = str(setup["models"]["state"])
    cases = [
        (("missing.pt", video), "model not found: missing.pt"),
        ((str(search), video), "not a retrain"),
        ((state, video, "--topk", "0"), "--topk 0"),
        ((state, video, "--clips", "0"), "--clips 0"),
        ((state, video, "--out", str(tmp_path / "no" / "p.csv")), "does not exist"),
        (("models:/m-0", video, "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"), "no MLflow store"),
    ]
    for args, needle in cases:
        code = main(["predict", *args])
        errors = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(errors) == 1 and needle in errors[0], (args, errors)
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------------- outputs never destroy inputs


def test_predict_never_replaces_its_model_or_a_video(setup: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """`--out` onto the model, a video or a link to either is refused before any work, even with --overwrite."""
    video, state, pt2 = setup["good"][0], setup["models"]["state"], setup["models"]["pt2"]
    before = {path: path.read_bytes() for path in (video, state, pt2)}
    link = tmp_path / "preds.csv"
    link.symlink_to(state)
    for model, out in ((state, video), (state, state), (pt2, pt2), (state, link), (state.parent, state)):
        code = main(["predict", str(model), str(video), "--out", str(out), "--overwrite"])
        captured = capsys.readouterr()
        errors = captured.err.strip().splitlines()
        assert code == 2 and len(errors) == 1 and "is an input of this command" in errors[0], (model, out, errors)
        assert "predicted" not in captured.out
    assert {path: path.read_bytes() for path in before} == before


def test_an_existing_csv_is_replaced_only_with_overwrite_and_never_by_nothing(
        setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state, video, corrupt = str(setup["models"]["state"]), str(setup["good"][1]), str(setup["corrupt"])
    out = tmp_path / "preds.csv"
    out.write_text("earlier,results\n")
    assert main(["predict", state, video, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"autovid: error: --out {out} exists; add --overwrite to replace it"
    # no video could be read: nothing is written, and it says so (it used to leave a header alone)
    assert main(["predict", state, corrupt, "--out", str(out), "--overwrite"]) == 1
    assert f"predictions: none (no video could be read); {out} not written" in capsys.readouterr().out
    assert out.read_text() == "earlier,results\n"
    assert main(["predict", state, video, "--out", str(out), "--overwrite", "--topk", "2"]) == 0
    assert [r["video"] for r in _rows(out)] == [video, video]


# ---------------------------------------------------------------------------- exported metadata vs the network


def _edited(path: Path, dest: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the exported `path` at `dest` whose embedded autovid metadata went through `edit`."""
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path))
        (prop,) = [p for p in proto.metadata_props if p.key == METADATA_KEY]
        meta = json.loads(prop.value)
        edit(meta)
        prop.value = json.dumps(meta)
        onnx.save(proto, str(dest))
        return dest
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(dest, "w") as dst:
        records = [info.filename for info in src.infolist() if info.filename.endswith(f"extra/{METADATA_KEY}")]
        assert len(records) == 1, src.namelist()
        for info in src.infolist():
            data = src.read(info)
            if info.filename == records[0]:
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            dst.writestr(info, data)
    return dest


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        *parents, leaf = key.split(".")
        node = meta
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value(node[leaf]) if callable(value) else value
    return edit


def _three_segments(meta: dict) -> None:
    """Well-typed and self-consistent, but not what the exported network was traced with (K = 2)."""
    meta["input"]["num_segments"], meta["input"]["shape"] = 3, [3, 3, 2, 24, 24]


_DELETE = object()
BAD_METADATA = {
    "fewer class names than logits": (_set("class_names", lambda names: names[:-1]), "metadata names 3 classes"),
    "more class names than logits": (_set("class_names", lambda names: [*names, "extra"]), "metadata names 5 classes"),
    "num_segments not an integer": (_set("input.num_segments", 2.5), "input.num_segments must be an integer"),
    "num_segments as text": (_set("input.num_segments", "2"), "input.num_segments must be an integer"),
    "no mean": (_set("input.normalization.mean", _DELETE), "input.normalization.mean must be 3 finite numbers"),
    "unknown mode": (_set("input.mode", "sliding"), "input.mode must be one of segments, dense"),
    "a consistent spec the network refuses": (_three_segments,
                                              "the network does not take the input its metadata describes "
                                              "([3, 3, 2, 24, 24])"),
}


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_edited_metadata_is_refused_in_one_line(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                fmt: str, case: str) -> None:
    """Checked against the network when the model loads, before any video: never a traceback, never a wrong label
    (more names than logits used to print labels from a shifted list with exit code 0)."""
    edit, needle = BAD_METADATA[case]
    model = _edited(setup["models"][fmt], tmp_path / f"edited.{fmt}", edit)
    code = main(["predict", str(model), str(setup["good"][0])])
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"autovid: error: {model}: "), errors
    assert needle in errors[0], errors
    assert not any(name in captured.out for name in setup["class_names"])
