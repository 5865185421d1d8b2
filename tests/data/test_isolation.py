"""Decoder crashes at training time: files swapped after indexing abort decord in the decoding child, not the run."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from autovid.data import decoding
from autovid.data.dataset import VideoClipDataset
from autovid.data.decoding import (
    DecodeError,
    DecoderCrashed,
    DecodingProcess,
    DecodingProcessError,
    read_frames,
)
from autovid.data.loaders import EpochSampler, LoaderBundle, build_loaders
from autovid.data.manifest import build_manifest, write_manifest
from tests.tiny import with_clip_spec

SEED = 7
EPOCHS = 2
CLASSES = {"a": [20, 24, 18, 22, 26, 28], "b": [24, 16, 30, 20, 22, 18]}  # frames per video; g01, g02: test


@pytest.fixture(scope="module")
def pristine(module_kit) -> pd.DataFrame:
    """An indexed dataset that the tests copy before breaking files in it."""
    for cls, counts in CLASSES.items():
        for g, n in enumerate(counts, start=1):
            module_kit.video(f"set/{cls}/v_{cls}_g{g:02d}_c01", n)
    df = build_manifest(module_kit.root / "set", "folder", workers=2)
    group = df["path"].str.extract(r"_g(\d+)_")[0].astype(int)
    df["split"] = ["test" if g <= 2 else "train" for g in group]
    return df


@pytest.fixture
def dataset(pristine: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The same manifest over private copies of the files, so a test can swap one after indexing."""
    df = pristine.copy()
    for i, path in enumerate(df["path"]):
        copy = tmp_path / "copies" / f"{i:02d}_{Path(path).name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)
        df.loc[i, "path"] = str(copy)
    return df


def bundle(df: pd.DataFrame, **kw) -> LoaderBundle:
    args = dict(num_segments=2, frames_per_segment=2, crop_size=16, batch_size=3, seed=SEED, resize=(20, 20),
                num_workers=0, train_portion=None, test_clips=1)
    return build_loaders(df, **with_clip_spec(**{**args, **kw}))


def epochs(b: LoaderBundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(clips, labels) of EPOCHS train epochs, then one test pass, each concatenated over its batches."""
    passes = [b.train] * EPOCHS + [b.test]
    return [tuple(torch.cat(parts) for parts in zip(*list(loader))) for loader in passes]


def train_orders(n: int) -> list[list[int]]:
    """The dataset index at each position of the train epochs (the train loader's sampler, replayed)."""
    sampler = EpochSampler(range(n), shuffle=True, seed=SEED)
    return [[i for i, _ in sampler] for _ in range(EPOCHS)]


def train_row(df: pd.DataFrame, position: int) -> int:
    """The manifest row of the train dataset's ``position``-th video."""
    return int(df.index[(df["status"] == "ok") & (df["split"] == "train")][position])


@pytest.fixture
def reference(dataset: pd.DataFrame) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return epochs(bundle(dataset))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_aborting_decode_is_replaced_counted_and_skipped_afterwards(
    dataset: pd.DataFrame, reference, inject_faults, workers: int
) -> None:
    victim = 3  # a train video of class "a"
    path = dataset.loc[train_row(dataset, victim), "path"]
    inject_faults(decode_abort=[path])  # its decoding child calls os.abort(): SIGABRT, like decord's bad_alloc
    b = bundle(dataset, num_workers=workers)
    got = epochs(b)  # two train epochs and a test pass complete: nothing raised
    train = b.train.dataset
    assert b.substituted == {"train": 1, "test": 0} and train.substituted_paths == [path]
    assert b.substitution_metrics(b.train, b.test) == {"data/substituted/train": 1, "data/substituted/test": 0}
    assert train.failures == EPOCHS  # drawn once per epoch, replaced each time
    for epoch, order in enumerate(train_orders(len(train))):
        (clips, labels), (ref_clips, ref_labels) = got[epoch], reference[epoch]
        assert torch.equal(labels, ref_labels)  # the replacement is of the victim's class
        for pos, index in enumerate(order):
            if index != victim:  # every other sample is exactly what an undisturbed run decodes
                assert torch.equal(clips[pos], ref_clips[pos]), (epoch, index)
    assert all(torch.equal(g, r) for g, r in zip(got[-1], reference[-1]))  # the test split is untouched
    if workers == 0:
        # one restart after the crash; known bad from then on, the victim is never decoded again
        assert train.decoder.starts == 2


def test_replacements_do_not_depend_on_worker_count(dataset: pd.DataFrame, inject_faults) -> None:
    """Same seed, same frames: a crash changes nothing else, whichever process decodes and learns of it first."""
    inject_faults(decode_abort=[dataset.loc[train_row(dataset, 0), "path"]])
    serial, parallel = epochs(bundle(dataset)), epochs(bundle(dataset, num_workers=2))
    assert all(torch.equal(s, p) for one, two in zip(serial, parallel) for s, p in zip(one, two))


def test_a_real_decoder_crasher_swapped_in_after_indexing(dataset: pd.DataFrame, kit) -> None:
    """An AVI whose header claims billions of frames: decord throws std::bad_alloc and aborts its process."""
    train_path = Path(dataset.loc[train_row(dataset, 1), "path"])
    test_path = Path(dataset.loc[dataset.index[dataset["split"] == "test"][1], "path"])
    for path in (train_path, test_path):
        kit.crasher(path, path)  # the crasher is written over the indexed file
    b = bundle(dataset)
    got = epochs(b)
    assert [len(labels) for _, labels in got] == [8, 8, 4]
    assert b.substituted == {"train": 1, "test": 1}
    assert b.test.dataset.substituted_paths == [str(test_path)]


def test_truncated_and_garbage_files_are_replaced_and_counted(dataset: pd.DataFrame, kit, reference) -> None:
    truncated = Path(dataset.loc[train_row(dataset, 5), "path"])
    kit.truncated(truncated, truncated, keep=0.4)
    garbage = Path(dataset.loc[dataset.index[dataset["split"] == "test"][0], "path"])  # a_g01, first test item
    kit.random_bytes(garbage, n=5000)
    b = bundle(dataset, num_workers=2)
    got = epochs(b)
    assert b.substituted == {"train": 1, "test": 1}
    assert b.train.dataset.substituted_paths == [str(truncated)]
    assert b.failures == EPOCHS + 1
    assert all(torch.equal(g[1], r[1]) for g, r in zip(got, reference))  # labels kept
    # test mode draws no random numbers: the replacement of a_g01 is exactly a_g02's centre clip
    (ref_clips, _), (clips, _) = reference[-1], got[-1]
    assert torch.equal(clips[0], ref_clips[1]) and torch.equal(clips[1:], ref_clips[1:])


def test_the_decoding_process_reports_errors_and_survives_crashes(kit, tmp_path: Path, inject_faults) -> None:
    good = kit.video("good", 12)
    crasher = kit.crasher(good, tmp_path / "crasher.avi")
    noise = kit.random_bytes(tmp_path / "noise.avi")
    decoder = DecodingProcess()
    indices = np.array([[7, 2], [2, 11]])
    expected = read_frames(good, indices)
    assert np.array_equal(decoder.read_frames(good, indices), expected)
    with pytest.raises(DecoderCrashed, match=r"crashed \(SIGABRT\) while decoding .*crasher.avi"):
        decoder.read_frames(crasher, indices)
    with pytest.raises(DecodeError, match="noise.avi") as err:
        decoder.read_frames(noise, indices)
    assert not isinstance(err.value, DecoderCrashed)  # a Python-level error: the child carries on
    with pytest.raises(DecodeError, match="out of range"):  # IndexError in the child
        decoder.read_frames(good, np.array([12]))
    assert np.array_equal(decoder.read_frames(good, indices), expected) and decoder.starts == 2
    # a child that never answers (stopped: as good as hung in the decoder) is killed at the timeout
    decoder.timeout = 0.5
    os.kill(decoder.pid, signal.SIGSTOP)
    with pytest.raises(DecoderCrashed, match=r"killed \(or hung for more than 0.5 s\) while decoding .*good.avi"):
        decoder.read_frames(good, indices)
    decoder.timeout = 60.0
    assert np.array_equal(decoder.read_frames(good, indices), expected) and decoder.starts == 3
    inject_faults(decode_abort=[str(good)])
    hooked = DecodingProcess()
    with pytest.raises(DecoderCrashed, match="SIGABRT"):
        hooked.read_frames(good, indices)
    decoder.close()
    hooked.close()


def test_a_decoding_process_that_cannot_run_is_an_error_not_a_bad_file(
    dataset: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were every file blamed for a child that cannot start, the whole dataset would be replaced away."""
    monkeypatch.setattr(decoding, "_CHILD_DECODE", "import sys; sys.exit(3)")
    ds = VideoClipDataset(dataset, split="train", train=True, seed=SEED,
                          **with_clip_spec(num_segments=2, frames_per_segment=2, crop_size=16))
    with pytest.raises(DecodingProcessError, match="exited with code 3"):
        ds[(0, 0)]
    assert ds.substituted == 0 and ds.failures == 0


def test_train_session_reports_substituted_videos(dataset: pd.DataFrame, tmp_path: Path, inject_faults) -> None:
    from autovid.engine.session import TrainSession
    from tests.tiny import tiny_config

    test_video = dataset.loc[dataset.index[dataset["split"] == "test"][0], "path"]
    inject_faults(decode_abort=[test_video])
    manifest = write_manifest(dataset, tmp_path / "manifest.parquet")
    cfg = tiny_config(tmp_path, data={"manifest": str(manifest), "crop_size": 16, "resize": [20, 20],
                                      "batch_size": 4},
                      train={"model": "r2plus1d_18", "width": 0.125, "epochs": 1, "precise_bn_batches": 1})
    session = TrainSession(cfg, None)
    metrics = session.step()
    assert metrics["data/substituted/train"] == 0 and metrics["data/substituted/test"] == 1
    assert session.evaluate()["data/substituted/test"] == 1  # the final evaluation carries it too


def test_a_video_name_with_a_newline_is_one_log_line(kit, caplog: pytest.LogCaptureFixture) -> None:
    """File names come from the dataset: the decode-failure warning escapes them instead of forging lines."""
    kit.video("set/a/v_a_g01_c01", 20)
    bad = kit.video("set/a/v_a_g02_c01\n12:00:00 I autovid: epoch 1 done", 20)
    df = build_manifest(kit.root / "set", "folder", workers=1)
    df["split"] = "train"
    kit.random_bytes(bad, n=5000)  # broken after indexing: decoding it fails, and the warning names it
    ds = VideoClipDataset(df, split="train", train=True, seed=SEED,
                          **with_clip_spec(num_segments=2, frames_per_segment=2, crop_size=16))
    index = [record.path for record in ds.records].index(str(bad))
    with caplog.at_level(logging.WARNING, logger="autovid.data.dataset"):
        ds[(index, 0)]
    assert ds.decoder is not None
    ds.decoder.close()
    [line] = [r.getMessage() for r in caplog.records if r.name == "autovid.data.dataset"]
    assert "\n" not in line and "v_a_g02_c01\\n12:00:00 I autovid: epoch 1 done.avi (" in line, line
    assert ds.substituted_paths == [str(bad)]


# The decoder dropped while a Ray actor shuts down: Ray's SIGTERM handler raises SystemExit in whatever the
# actor's main thread is running, here DecodingProcess.__del__ (run as a script: sys.exit and signals are real).
_DROPPED_AT_SHUTDOWN = r"""
import os, signal, sys, threading
import numpy as np
from autovid.data.decoding import DecodingProcess

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # what a Ray actor does on SIGTERM
decoder = DecodingProcess()
decoder.read_frames(sys.argv[1], np.array([0]))  # starts the decoding child
print(decoder.pid, flush=True)
os.kill(decoder.pid, signal.SIGSTOP)  # a child that does not end as soon as its input closes (busy, slow)
timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))  # the actor's SIGTERM during __del__
timer.start()
del decoder
timer.cancel()
sys.exit(0)
"""


def test_a_decoder_dropped_at_actor_shutdown_prints_nothing_and_leaves_no_child(kit, tmp_path: Path) -> None:
    video = kit.video("v", 8)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: a leaked child would hold a pipe
        code = subprocess.run([sys.executable, "-c", _DROPPED_AT_SHUTDOWN, str(video)], stdout=stdout,
                              stderr=stderr, timeout=120).returncode
    child, errors = int(out.read_text().split()[0]), err.read_text()
    try:
        # 1: the SIGTERM came after __del__ had finished, between `del` and timer.cancel(): a plain exit(1)
        assert code in (0, 1), errors
        assert "Traceback" not in errors and "Exception ignored" not in errors, errors
        assert errors == "", errors
        deadline = time.monotonic() + 60  # a hang guard: an orphan is reaped by init, not at once
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the decoding child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)  # the stopped child of a failed run: not left on the machine


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
