"""Manifests: the four formats, quarantine of broken files (including a decoder crash), Parquet round trip."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from autovid.data.manifest import (
    MANIFEST_COLUMNS,
    QUARANTINE_SHOWN,
    assign_group_splits,
    build_manifest,
    check_manifest_destination,
    format_summary,
    group_of,
    quarantine_warnings,
    read_manifest,
    summarize_manifest,
    write_manifest,
)
from autovid.errors import UserError

UCF_CLASSES = {
    "ApplyEyeMakeup": [("v_ApplyEyeMakeup_g01_c01", 20), ("v_ApplyEyeMakeup_g02_c01", 24)],
    # real UCF101 quirk: files named HandStand... live in folder HandstandPushups
    "HandstandPushups": [("v_HandStandPushups_g01_c01", 16), ("v_HandStandPushups_g02_c01", 18),
                         ("v_HandStandPushups_g03_c02", 22)],
}


def test_ucf101_labels_come_from_folders_and_split_files_have_crlf(kit, tmp_path: Path) -> None:
    root = kit.ucf_tree(tmp_path / "UCF-101", classes=UCF_CLASSES, splits=tmp_path / "ucfTrainTestlist")
    df = build_manifest(root, "ucf101", workers=2)  # split files found beside ROOT
    assert list(df.columns) == list(MANIFEST_COLUMNS) and len(df) == 5
    assert (df["status"] == "ok").all() and (df["reason"] == "").all()
    hs = df[df["path"].str.contains("HandStand")]
    assert set(hs["class_name"]) == {"HandstandPushups"} and set(hs["label"]) == {1}
    assert df.set_index(df["path"].map(lambda p: Path(p).stem))["split"].to_dict() == {
        "v_ApplyEyeMakeup_g01_c01": "test", "v_ApplyEyeMakeup_g02_c01": "train",
        "v_HandStandPushups_g01_c01": "test", "v_HandStandPushups_g02_c01": "train",
        "v_HandStandPushups_g03_c02": "train",
    }
    row = df[df["path"].str.endswith("v_ApplyEyeMakeup_g02_c01.avi")].iloc[0]
    assert (row["num_frames"], row["width"], row["height"]) == (24, 32, 32)
    assert row["fps"] == pytest.approx(25.0) and row["duration"] == pytest.approx(24 / 25)
    assert all(Path(p).is_absolute() for p in df["path"])


def test_ucf101_errors_are_one_line_user_errors(kit, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dataset root not found"):
        build_manifest(tmp_path / "nowhere", "ucf101")
    root = kit.ucf_tree(tmp_path / "ucf", classes=UCF_CLASSES)
    with pytest.raises(UserError, match="trainlist02.txt"):
        build_manifest(root, "ucf101", split=2)
    with pytest.raises(UserError, match="split files not found"):
        build_manifest(root, "ucf101", splits_dir=root / "ApplyEyeMakeup")
    with pytest.raises(UserError, match="unknown manifest format"):
        build_manifest(root, "kinetics")  # type: ignore[arg-type]
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n")
    with pytest.raises(UserError, match="HandstandPushups"):
        build_manifest(root, "ucf101")


def test_broken_files_are_quarantined_with_reasons_and_a_crash_only_hits_itself(kit, tmp_path: Path) -> None:
    root = tmp_path / "videos"
    good = [kit.video(f"videos/{cls}/{cls}_g{g:02d}_c01", 16 + g) for cls in ("run", "jump") for g in range(1, 5)]
    src = good[0]
    broken = {
        "truncated": kit.truncated(src, root / "run" / "run_g09_c01.avi"),
        "zero": kit.zero_byte(root / "run" / "run_g10_c01.avi"),
        "random": kit.random_bytes(root / "jump" / "jump_g11_c01.avi"),
        "zeroed": kit.zeroed(src, root / "jump" / "jump_g12_c01.avi"),
        "crasher": kit.crasher(src, root / "jump" / "jump_g13_c01.avi"),
    }
    df = build_manifest(root, "folder", workers=2, decoder="decord")  # the crasher aborts decord (see test_backends)
    reason = dict(zip(df["path"], df["reason"]))
    assert {name: reason[str(p)] for name, p in broken.items()} == {
        "truncated": "unreadable", "zero": "empty", "random": "unreadable", "zeroed": "unreadable",
        "crasher": "crashed",
    }
    assert all(reason[str(p)] == "" for p in good)  # the crash quarantined nothing else
    bad = df[df["status"] == "quarantined"]
    assert (bad[["num_frames", "width", "height"]] == 0).all().all()
    summary = summarize_manifest(df)
    assert summary == {
        "decoder": "decord", "classes": 2, "videos": 13, "ok": 8, "frames": sum(16 + g for g in range(1, 5)) * 2,
        "quarantined": {"crashed": 1, "empty": 1, "unreadable": 3},
        "by_split": summary["by_split"],
    }
    assert sum(v["videos"] for v in summary["by_split"].values()) == 13
    text = format_summary(summary)
    assert "quarantined: 5" in text and "crashed 1" in text


def test_missing_listed_file_is_quarantined(kit, tmp_path: Path) -> None:
    root = kit.ucf_tree(tmp_path / "ucf", classes=UCF_CLASSES)
    (root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi").unlink()
    df = build_manifest(root, "ucf101", workers=1)
    assert df["reason"].tolist().count("missing") == 1 and (df["status"] == "ok").sum() == 4


def test_hmdb51_split_tags(kit, tmp_path: Path) -> None:
    root = tmp_path / "hmdb"
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for cls, tags in {"wave": [1, 2, 0], "clap": [2, 1, 1]}.items():
        lines = []
        for i, tag in enumerate(tags):
            kit.video(f"hmdb/{cls}/{cls}_{i}", 12)
            lines.append(f"{cls}_{i}.avi {tag} ")
        (splits / f"{cls}_test_split1.txt").write_text("\r\n".join(lines) + "\r\n")
    df = build_manifest(root, "hmdb51", workers=1)
    assert len(df) == 5  # tag 0 is left out
    got = {Path(p).stem: (c, lab, s) for p, c, lab, s in zip(df["path"], df["class_name"], df["label"], df["split"])}
    assert got == {
        "wave_0": ("wave", 1, "train"), "wave_1": ("wave", 1, "test"),
        "clap_0": ("clap", 0, "test"), "clap_1": ("clap", 0, "train"), "clap_2": ("clap", 0, "train"),
    }
    with pytest.raises(UserError, match="split files not found"):
        build_manifest(root, "hmdb51", split=3)


def test_folder_split_keeps_groups_together_and_is_deterministic(kit, tmp_path: Path) -> None:
    for g in range(1, 8):
        for c in (1, 2):
            kit.video(f"data/walk/v_walk_g{g:02d}_c{c:02d}", 8, codec="mjpeg")
    kit.video("data/sit/sit_a", 8, codec="h264")
    kit.video("data/sit/sit_b", 8, codec="h264")
    (tmp_path / "data" / "notes.txt").write_text("not a class folder")
    df = build_manifest(tmp_path / "data", "folder", workers=2)
    assert (df["status"] == "ok").all() and df["class_name"].tolist().count("walk") == 14
    walk = df[df["class_name"] == "walk"]
    by_group = walk.groupby(walk["path"].map(group_of))["split"].nunique()
    assert (by_group == 1).all()
    assert (walk["split"] == "test").sum() == 4  # round(0.3 * 7) = 2 groups x 2 clips
    sit = df[df["class_name"] == "sit"]
    assert sorted(sit["split"]) == ["test", "train"]
    again = build_manifest(tmp_path / "data", "folder", workers=1)
    pd.testing.assert_frame_equal(df, again)
    split2 = build_manifest(tmp_path / "data", "folder", split=2, workers=1)
    assert not split2["split"].equals(df["split"])  # split N rotates the test groups


def test_assign_group_splits() -> None:
    assert assign_group_splits(["a"]) == ["train"]
    assert assign_group_splits(["a", "b"]) == ["test", "train"]
    sides = assign_group_splits([f"g{i}" for i in range(10)] * 2)
    assert sides.count("test") == 6 and sides[:10] == sides[10:]


def test_csv_format_with_and_without_split(kit, tmp_path: Path) -> None:
    a = kit.video("clips/a", 10)
    b = kit.video("clips/b", 12)
    (tmp_path / "list.csv").write_text(f"path,label,split\nclips/{a.name},dog,train\n{b},cat,Test\n")
    df = build_manifest(tmp_path / "list.csv", "csv", workers=1)
    assert df[["class_name", "label", "split"]].values.tolist() == [["dog", 1, "train"], ["cat", 0, "test"]]
    (tmp_path / "ints.csv").write_text(f"path,label\nclips/{a.name},2\nclips/{b.name},0\n")
    df = build_manifest(tmp_path / "ints.csv", "csv", workers=1)
    assert df["label"].tolist() == [2, 0] and set(df["split"]) <= {"train", "test"}
    (tmp_path / "bad.csv").write_text("file,label\nx.avi,1\n")
    with pytest.raises(UserError, match="missing column"):
        build_manifest(tmp_path / "bad.csv", "csv")
    with pytest.raises(UserError, match="csv manifest not found"):
        build_manifest(tmp_path / "none.csv", "csv")


def test_parquet_round_trip_opens_with_pandas_and_pyarrow(kit, tmp_path: Path) -> None:
    root = kit.ucf_tree(tmp_path / "ucf", classes=UCF_CLASSES)
    shutil.copy(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", tmp_path / "spare.avi")
    kit.zero_byte(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    df = build_manifest(root, "ucf101", workers=2)
    out = write_manifest(df, tmp_path / "out" / "manifest.parquet")
    pd.testing.assert_frame_equal(read_manifest(out), df)
    assert pd.read_parquet(out)["reason"].tolist().count("empty") == 1
    table = pq.read_table(out)
    assert table.column_names == list(MANIFEST_COLUMNS) and table.num_rows == 5
    assert str(table.schema.field("num_frames").type) == "int64"
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("nope")
    with pytest.raises(UserError, match="not a Parquet manifest"):
        read_manifest(tmp_path / "junk.parquet")
    df[["path", "label"]].to_parquet(tmp_path / "partial.parquet")
    with pytest.raises(UserError, match="lacks column"):
        read_manifest(tmp_path / "partial.parquet")


def test_ucf101_names_with_spaces_and_the_label_after_the_last_whitespace(kit, tmp_path: Path) -> None:
    classes = {
        "Apply Eye Makeup": [("v_ApplyEyeMakeup_g01_c01", 8), ("v_Apply Eye Makeup_g02_c01", 10)],
        "Jump": [("v_Jump_g01_c01", 12), ("v_Jump_g02_c01", 14)],
    }
    root = kit.ucf_tree(tmp_path / "ucf", classes=classes)
    lists = root / "ucfTrainTestlist"
    # tabs and repeated blanks before the label are whitespace too
    train = (lists / "trainlist01.txt").read_text().replace(".avi 1", ".avi\t 1")
    (lists / "trainlist01.txt").write_text(train)
    assert "Apply Eye Makeup/v_Apply Eye Makeup_g02_c01.avi\t 1" in train
    df = build_manifest(root, "ucf101", workers=2)
    assert (df["status"] == "ok").all() and len(df) == 4
    got = {Path(p).name: (c, lab, s, n) for p, c, lab, s, n in
           zip(df["path"], df["class_name"], df["label"], df["split"], df["num_frames"])}
    assert got == {
        "v_ApplyEyeMakeup_g01_c01.avi": ("Apply Eye Makeup", 0, "test", 8),
        "v_Apply Eye Makeup_g02_c01.avi": ("Apply Eye Makeup", 0, "train", 10),
        "v_Jump_g01_c01.avi": ("Jump", 1, "test", 12),
        "v_Jump_g02_c01.avi": ("Jump", 1, "train", 14),
    }
    # a final word that is no integer is part of the path, not a label
    (lists / "testlist01.txt").write_text("Jump/v_Jump_g01_c01.avi 1x\r\n")
    df = build_manifest(root, "ucf101", workers=1)
    assert df.loc[df["split"] == "test", "path"].map(lambda p: Path(p).name).tolist() == ["v_Jump_g01_c01.avi 1x"]
    assert df.loc[df["split"] == "test", "reason"].tolist() == ["missing"]


def test_hmdb51_file_names_with_spaces(kit, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    splits.mkdir()
    kit.video("hmdb/wave/wave at sea_0", 8)
    kit.video("hmdb/wave/wave_1", 9)
    (splits / "wave_test_split1.txt").write_text("wave at sea_0.avi 1\nwave_1.avi 2\n")
    df = build_manifest(tmp_path / "hmdb", "hmdb51", splits_dir=splits, workers=1)
    assert (df["status"] == "ok").all()
    assert dict(zip(df["path"].map(lambda p: Path(p).name), df["split"])) == {
        "wave at sea_0.avi": "train", "wave_1.avi": "test"}


def test_folder_quarantines_links_folders_and_fifos_named_like_videos(kit, tmp_path: Path) -> None:
    root = tmp_path / "data"
    good = [kit.video(f"data/run/v_run_g{g:02d}_c01", 8 + g) for g in range(1, 4)]
    os.symlink(tmp_path / "gone.avi", root / "run" / "v_run_g04_c01.avi")
    os.symlink(root / "run" / "loop.avi", root / "run" / "loop.avi")  # a link to itself
    os.mkdir(root / "run" / "v_run_g05_c01.avi")
    os.mkfifo(root / "run" / "v_run_g06_c01.mp4")  # probing would block on it: it must never be opened
    os.symlink(good[0], root / "run" / "v_run_g01_c02.avi")  # a link to a good video in the same group is fine
    df = build_manifest(root, "folder", workers=2)
    reason = {Path(p).name: r for p, r in zip(df["path"], df["reason"])}
    assert reason == {
        "loop.avi": "broken_link", "v_run_g01_c01.avi": "", "v_run_g01_c02.avi": "", "v_run_g02_c01.avi": "",
        "v_run_g03_c01.avi": "", "v_run_g04_c01.avi": "broken_link", "v_run_g05_c01.avi": "directory",
        "v_run_g06_c01.mp4": "special_file",
    }
    bad = df[df["reason"] != ""]
    assert (bad["status"] == "quarantined").all() and (bad["num_frames"] == 0).all()
    summary = summarize_manifest(df)
    assert summary["quarantined"] == {"broken_link": 2, "directory": 1, "special_file": 1}
    assert summary["videos"] == 8 and summary["ok"] == 4
    assert "quarantined: 4 (broken_link 2, directory 1, special_file 1)" in format_summary(summary)


def test_a_file_in_two_splits_is_refused(kit, tmp_path: Path) -> None:
    root = kit.ucf_tree(tmp_path / "ucf", classes=UCF_CLASSES)
    test_video = root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi"  # group 1: testlist
    link = root / "HandstandPushups" / "v_HandStandPushups_g05_c01.avi"
    os.symlink(os.path.relpath(test_video, link.parent), link)
    with (root / "ucfTrainTestlist" / "trainlist01.txt").open("a") as f:
        f.write("HandstandPushups/v_HandStandPushups_g05_c01.avi 2\r\n")
    with pytest.raises(UserError, match="two splits") as err:
        build_manifest(root, "ucf101")
    assert str(test_video) in str(err.value) and str(link) in str(err.value)
    assert "\n" not in str(err.value)
    # the same file reached through '..' in a csv is the same file too
    a = kit.video("clips/a", 6)
    kit.video("clips/b", 6)
    (tmp_path / "dup.csv").write_text("path,label,split\nclips/a.avi,x,train\nclips/../clips/b.avi,y,train\n"
                                      "clips/../clips/a.avi,x,test\n")
    with pytest.raises(UserError, match="two splits") as err:
        build_manifest(tmp_path / "dup.csv", "csv")
    assert "clips/a.avi (train)" in str(err.value) and str(a) in str(err.value)


def test_a_link_to_a_video_of_the_same_split_is_allowed(kit, tmp_path: Path) -> None:
    a = kit.video("clips/a", 6)
    os.symlink(a, tmp_path / "clips" / "a_link.avi")
    (tmp_path / "list.csv").write_text("path,label,split\nclips/a.avi,x,train\nclips/a_link.avi,x,train\n")
    df = build_manifest(tmp_path / "list.csv", "csv", workers=1)
    assert (df["status"] == "ok").all() and len(df) == 2


def test_empty_listings_are_user_errors(kit, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv: the csv file is empty"):
        build_manifest(tmp_path / "empty.csv", "csv")
    (tmp_path / "header.csv").write_text("path,label,split\n")
    with pytest.raises(UserError, match="header.csv: the csv file has a header but no rows"):
        build_manifest(tmp_path / "header.csv", "csv")
    root = kit.ucf_tree(tmp_path / "ucf", classes=UCF_CLASSES)
    for name in ("trainlist01.txt", "testlist01.txt"):
        (root / "ucfTrainTestlist" / name).write_text("\r\n")
    with pytest.raises(UserError, match="lists no videos"):
        build_manifest(root, "ucf101")


def test_manifest_destination_is_checked_before_writing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a folder"):
        check_manifest_destination(tmp_path / "folder", what="--out")
    with pytest.raises(UserError, match="file is not a folder"):
        check_manifest_destination(tmp_path / "file" / "sub" / "m.parquet")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError, match="not a regular file"):
        check_manifest_destination(tmp_path / "fifo")
    assert check_manifest_destination(tmp_path / "file") == tmp_path / "file"  # overwritten
    assert check_manifest_destination(tmp_path / "new" / "deeper" / "m.parquet").name == "m.parquet"
    frame = pd.DataFrame([_row()], columns=list(MANIFEST_COLUMNS))
    with pytest.raises(UserError, match="is a folder"):
        write_manifest(frame, tmp_path / "folder")


def _row(**changes: object) -> dict[str, object]:
    row = {"path": "/v/a.avi", "label": 0, "class_name": "a", "split": "train", "num_frames": 8, "fps": 25.0,
           "width": 32, "height": 32, "duration": 0.32, "status": "ok", "reason": ""}
    return {**row, **changes}


def test_read_manifest_refuses_rows_that_cannot_be_sampled(tmp_path: Path) -> None:
    def manifest(*rows: dict[str, object]) -> Path:
        path = tmp_path / "m.parquet"
        pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS)).to_parquet(path, index=False)
        return path

    quarantined = _row(path="/v/b.avi", num_frames=0, fps=0.0, status="quarantined", reason="empty")
    assert len(read_manifest(manifest(_row(), quarantined))) == 2  # 0 frames is how quarantine looks
    with pytest.raises(UserError, match="has no rows"):
        read_manifest(manifest())
    with pytest.raises(UserError, match=r"row 1 \(/v/c.avi\) has num_frames 0"):
        read_manifest(manifest(_row(), _row(path="/v/c.avi", num_frames=0)))
    with pytest.raises(UserError, match="has num_frames -3"):
        read_manifest(manifest(_row(num_frames=-3)))
    with pytest.raises(UserError, match="has num_frames -1"):
        read_manifest(manifest(_row(), {**quarantined, "num_frames": -1}))
    with pytest.raises(UserError, match="negative label"):
        read_manifest(manifest(_row(label=-1)))
    with pytest.raises(UserError, match="status 'maybe'"):
        read_manifest(manifest(_row(status="maybe")))
    with pytest.raises(UserError, match="wrong type"):
        read_manifest(manifest(_row(num_frames=None)))


# -- issue 21, item 5: quarantine warnings are summarised, names from the data are escaped in the log -------------
def test_quarantine_warnings_name_the_first_few_and_count_the_rest() -> None:
    many = [(f"/data/run/v{i}.avi", "empty", "zero-byte file") for i in range(100_000)]
    lines = quarantine_warnings(many)
    assert len(lines) == QUARANTINE_SHOWN + 1
    assert lines[0] == "quarantined /data/run/v0.avi (empty: zero-byte file)"
    assert lines[QUARANTINE_SHOWN - 1].startswith(f"quarantined /data/run/v{QUARANTINE_SHOWN - 1}.avi")
    assert lines[-1] == (f"... and {100_000 - QUARANTINE_SHOWN:,} more quarantined files "
                         f"(see the manifest's reason column)")
    assert len(quarantine_warnings(many[:QUARANTINE_SHOWN])) == QUARANTINE_SHOWN  # a few: each named, no count
    assert quarantine_warnings([]) == []
    [line] = quarantine_warnings([("/d/a\nb.avi", "unreadable", "bad\rheader")])
    assert line == "quarantined /d/a\\nb.avi (unreadable: bad\\rheader)"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "autovid.data.manifest" and r.levelno == logging.WARNING
    ]


def test_indexing_many_bad_files_logs_a_summary(kit, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    kit.video("data/run/v_run_g01_c01", 8)
    extra = 5
    for g in range(2, QUARANTINE_SHOWN + extra + 2):
        os.mkdir(root / "run" / f"v_run_g{g:02d}_c01.avi")  # quarantined without probing: a folder, not a video
    with caplog.at_level(logging.WARNING, logger="autovid.data.manifest"):
        df = build_manifest(root, "folder", workers=1)
    assert (df["reason"] == "directory").sum() == QUARANTINE_SHOWN + extra
    lines = _warnings(caplog)
    assert len(lines) == QUARANTINE_SHOWN + 1, lines
    assert lines[-1] == f"... and {extra} more quarantined files (see the manifest's reason column)"


def test_a_file_name_with_a_newline_is_one_log_line(kit, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    kit.video("data/run/v_run_g01_c01", 8)
    forged = root / "run" / "v_run_g02_c01\n12:00:00 I autovid: indexing finished, no file quarantined\r.avi"
    forged.write_bytes(b"")  # quarantined (empty) by the probing child, then logged by name
    with caplog.at_level(logging.WARNING, logger="autovid.data.manifest"):
        df = build_manifest(root, "folder", workers=1)
    assert str(forged) in set(df["path"])  # the manifest keeps the real name; only the log escapes it
    [line] = _warnings(caplog)
    assert "\n" not in line and "\r" not in line
    assert "v_run_g02_c01\\n12:00:00 I autovid: indexing finished, no file quarantined\\r.avi (empty:" in line
