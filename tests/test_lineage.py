"""Lineage and system metrics on a real MLflow store (temporary SQLite file): the manifest as a run's dataset
input (digest, classes, split sizes), `manifest_file` naming the file a run reads, and MLflow's system metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from autovid import tracking
from autovid.config import validate_config
from autovid.data.manifest import MANIFEST_COLUMNS, write_manifest
from autovid.engine.setup import manifest_file, prepare_manifest
from autovid.provenance import manifest_hash
from autovid.tracking import Tracker
from tests.tiny import tiny_config


def _manifest(rows: list[tuple[str, int, str, str, str]]) -> pd.DataFrame:
    """(path, label, class, split, status) rows as a full manifest frame."""
    frame = pd.DataFrame(rows, columns=["path", "label", "class_name", "split", "status"])
    frame["num_frames"], frame["fps"], frame["width"], frame["height"], frame["duration"] = 16, 25.0, 32, 32, 0.64
    frame["reason"] = ["" if s == "ok" else "undecodable" for s in frame["status"]]
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(MANIFEST_COLUMNS)]


ROWS = [("/d/walk/a.avi", 0, "walk", "train", "ok"), ("/d/walk/b.avi", 0, "walk", "test", "ok"),
        ("/d/run/c.avi", 1, "run", "train", "ok"), ("/d/run/d.avi", 1, "run", "train", "ok"),
        ("/d/run/e.avi", 1, "run", "test", "quarantined")]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    """One store for the module: creating MLflow's tables costs seconds."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}", "lineage")


def test_manifest_is_the_runs_dataset_input_once(tracker: Tracker, tmp_path: Path) -> None:
    frame = _manifest(ROWS)
    path = write_manifest(frame, tmp_path / "videos.parquet")
    run = tracker.start_parent("p")
    lineage = tracker.log_manifest(run, path)
    tracker.log_manifest(run, path)  # a resumed run logs it again: MLflow keeps one input
    (found,) = tracker.datasets(run)
    assert found["digest"] == lineage.digest == manifest_hash(frame)
    assert found["name"] == "videos" and str(path.resolve()) in found["source"]
    assert found["context"] == "training"
    assert found["profile"] == {"num_rows": 5, "num_classes": 2, "classes": ["walk", "run"],
                                "splits": {"test": 1, "train": 3}, "quarantined": 1}

    # another version of the manifest (one label changed) is another dataset with another digest
    changed = _manifest([ROWS[0], ROWS[1], ROWS[2], ROWS[3][:1] + (0, "walk") + ROWS[3][3:], ROWS[4]])
    other = tracker.start_parent("q")
    tracker.log_manifest(other, write_manifest(changed, tmp_path / "videos2.parquet"))
    assert tracker.datasets(other)[0]["digest"] not in ("", lineage.digest)


def test_manifest_file_is_the_file_prepare_manifest_reads(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    frame = prepare_manifest(cfg.data)
    path = manifest_file(cfg.data)
    assert path.is_file() and manifest_hash(pd.read_parquet(path)) == manifest_hash(frame)
    given = validate_config({"data": {"manifest": str(path)}}, source="test")
    assert manifest_file(given.data) == path.resolve()


def test_system_metrics_are_logged_to_the_run(tracker: Tracker) -> None:
    run = tracker.start_parent("sys")
    monitor = tracker.system_metrics(run, interval_s=0.2)
    deadline = time.monotonic() + 120  # a generous bound on a loaded machine, not a timing assertion
    try:
        while time.monotonic() < deadline and "system/cpu_utilization_percentage" not in \
                tracker.client.get_run(run).data.metrics:
            time.sleep(0.2)
    finally:
        monitor.finish()
    metrics = tracker.client.get_run(run).data.metrics
    assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_system_metrics_config_key(tmp_path: Path) -> None:
    assert not tiny_config(tmp_path).tracking.system_metrics
    assert tiny_config(tmp_path, tracking={"system_metrics": True}).tracking.system_metrics
    with pytest.raises(Exception, match="tracking.system_metrics"):
        tiny_config(tmp_path, tracking={"system_metrics": "sometimes"})


def test_unreadable_manifest_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "not.parquet"
    bad.write_text("no parquet here")
    with pytest.raises(Exception, match="not a Parquet manifest"):
        tracking.manifest_lineage(bad)
