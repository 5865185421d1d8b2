"""`autovid predict`: top-k classes of real videos of any size and container, from every kind of model."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

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
from autovid.export import eager_model, export_model, load_train_state, model_metadata
from autovid.predict import ClipReader, load_predictor, predict_videos, probe_videos
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
    reader = ClipReader(model_metadata(state)["input"], [(record.path, record.num_frames)], clips=2)
    try:
        assert torch.equal(reader.read(0), expected)
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
