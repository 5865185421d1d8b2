"""A torch Dataset of sampled, decoded and transformed clips over a manifest's usable videos."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from autovid.data.backends import resolve as resolve_decoder
from autovid.data.decoding import (
    DECODE_TIMEOUT,
    DecoderLimitation,
    DecodingProcess,
    DecodingProcessError,
    ReaderCache,
    read_frames,
)
from autovid.data.sampling import ClipSpec, clip_indices
from autovid.data.transforms import MEAN, STD, TestTransform, TrainTransform, rgb_difference
from autovid.errors import printable

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 10  # failed decodes tolerated for one item before giving up


class VideoRecord(NamedTuple):
    """The manifest fields a worker needs for one video."""

    path: str
    label: int
    num_frames: int


class VideoClipDataset(Dataset):
    """Clips of the ``status == "ok"`` videos of one split.

        manifest row ─▶ clip_indices (K, L) ─▶ read_frames (only those frames, resized at decode)
                     ─▶ uint8 [K, L, H, W, 3] ─▶ Train/TestTransform ─▶ float32 [K, C, L, crop, crop]

    ``spec`` (:class:`ClipSpec`) says how a clip is cut and shaped. ``spec.mode="dense"`` gives K = 1 and
    L = num_segments * frames_per_segment. With ``num_clips = M > 1``
    an item is [M, K, C, L, crop, crop]: M draws per video (test: M evenly spaced offsets per segment),
    for multi-clip testing whose logits the evaluator averages.

    Randomness: item ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``, so a clip does
    not depend on worker count or order. The epoch comes from :meth:`set_epoch` or, preferably, from
    the index itself: ``dataset[(i, e)]`` (what :class:`autovid.data.loaders.EpochSampler` yields).

    Decoding runs in a persistent child process per decoding process (:class:`DecodingProcess`;
    ``isolate=False`` decodes in-process, for benchmarks and trusted files only): a file on which the decoder
    aborts or segfaults kills that child, not the training run or a DataLoader worker. A file that fails to
    decode, natively or with a Python error, is logged once, marked bad for the dataset's lifetime (in
    shared memory, so every worker skips it without decoding it again) and replaced by another video of
    the same class. :attr:`substituted` counts those bad videos, :attr:`failures` the replacements made;
    both sum over worker processes. The replacement and its frames come from ``rng([seed, e, i, attempt])``,
    so they do not depend on whether a worker already knew the file was bad.

    ``spec.modality="rgb_diff"`` (TSN's RGB difference) decodes one more frame per segment (per clip in dense
    mode) and returns the L differences of consecutive normalized frames, so the clip keeps its shape.

    ``decoder`` is the backend (:mod:`autovid.data.backends`; ``auto`` is resolved here, so a missing package
    fails at once) and ``decode_device`` where TorchCodec decodes (``cuda`` uses NVDEC; other backends ignore it).

    ``spec.resize=(h, w)`` makes the decoder scale at decode (both sides always passed); None keeps the native size.
    Train items get a random resized crop (area ``scale``) and, if ``hflip``, a horizontal flip, one draw
    per clip; test items a centre crop. ``spec.crop_size`` is the side of the square output.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        *,
        split: str | None,
        spec: ClipSpec,
        train: bool,
        seed: int,
        num_clips: int = 1,
        hflip: bool = True,
        scale: tuple[float, float] = (0.4, 1.0),
        cache_size: int = 0,  # open readers kept per worker; 0 = a fresh reader per item (faster, see ReaderCache)
        isolate: bool = True,  # decode in a child process: a native decoder crash costs one video, not the run
        decode_timeout: float = DECODE_TIMEOUT,  # seconds before an isolated decode counts as hung (file is bad)
        decoder: str = "auto",  # data.decoder
        decode_device: str = "cpu",
        mean: tuple[float, ...] = MEAN,  # normalisation: what the network was trained with
        std: tuple[float, ...] = STD,
    ) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        rows = manifest[manifest["status"] == "ok"]
        if split is not None:
            rows = rows[rows["split"] == split]
        self.records = [
            VideoRecord(str(p), int(lab), int(n)) for p, lab, n in zip(rows["path"], rows["label"], rows["num_frames"])
        ]
        self.split = split
        self.spec, self.train, self.seed, self.num_clips = spec, train, seed, num_clips
        crop = spec.crop_size
        self.transform = (TrainTransform(crop, scale=scale, hflip=hflip, mean=mean, std=std) if train
                          else TestTransform(crop, mean=mean, std=std))
        self.by_label: dict[int, list[int]] = {}
        for i, rec in enumerate(self.records):
            self.by_label.setdefault(rec.label, []).append(i)
        self.backend = resolve_decoder(decoder)
        self.readers = ReaderCache(cache_size, self.backend, decode_device)
        self.decoder = (DecodingProcess(cache_size, timeout=decode_timeout, backend=self.backend, device=decode_device)
                        if isolate else None)
        # shared-memory state: visible across DataLoader worker processes (fork or spawn)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._failures = torch.zeros((), dtype=torch.int64).share_memory_()
        self._bad = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()

    # ------------------------------------------------------------------------------------------ state

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain integer indices (also seen by persistent workers)."""
        self._epoch.fill_(int(epoch))

    @property
    def failures(self) -> int:
        """Items so far (all workers) whose video could not be decoded, or was known bad, and was replaced."""
        return int(self._failures)

    @property
    def substituted(self) -> int:
        """Distinct videos found undecodable so far (all workers): each is replaced whenever it is drawn."""
        return int(self._bad.sum())

    @property
    def substituted_paths(self) -> list[str]:
        """The files counted by :attr:`substituted`, in dataset order."""
        return [self.records[i].path for i in torch.nonzero(self._bad).flatten().tolist()]

    def reset_readers(self) -> None:
        """Forget open readers (called in each new worker: decoder state must not cross a fork).

        The decoding child needs no reset: :class:`DecodingProcess` notices the fork and starts its own.
        """
        self.readers.clear()

    # ------------------------------------------------------------------------------------------ items

    @property
    def clip_shape(self) -> tuple[int, ...]:
        """Shape of one item's clip tensor."""
        return self.spec.shape if self.num_clips == 1 else (self.num_clips, *self.spec.shape)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        candidate = index
        for attempt in range(MAX_REPLACEMENTS + 1):
            if attempt == 0:
                rng = np.random.default_rng([self.seed, epoch, index])
            else:
                # A fresh stream per attempt: the replacement and its frames must not depend on how far the
                # failed attempt got, which differs between decoding a bad file and skipping a known one.
                rng = np.random.default_rng([self.seed, epoch, index, attempt])
                peers = self.by_label[self.records[candidate].label]
                others = [j for j in peers if j != candidate] or peers
                candidate = others[int(rng.integers(len(others)))]
            record = self.records[candidate]
            if not self._bad[candidate]:
                try:
                    return self._load(record, rng), record.label
                except (DecoderLimitation, DecodingProcessError):
                    raise  # the configured size or the installation, not the file: replacing videos would not help
                except Exception as exc:  # noqa: BLE001 - any decode failure: never kill the epoch
                    self.readers.discard(record.path)
                    self._bad[candidate] = True
                    # the path and the decoder's message (which may repeat it) come from the data: escaped
                    log.warning("failed to decode %s (%s); it is replaced by another video of class %d from now on",
                                printable(record.path), printable(" ".join(str(exc).split())[:200]), record.label)
            with torch.no_grad():
                self._failures += 1
        raise RuntimeError(f"{MAX_REPLACEMENTS + 1} videos of class {self.records[index].label} failed to decode")

    def test_clips(self, index: int) -> torch.Tensor:
        """Video ``index``'s clips as the test loader makes them, float32 [M, K, C, L, H, W] (M = ``num_clips``,
        evenly spaced; test sampling draws nothing at random). A test dataset only; a file that fails to decode
        raises here (no replacement by another video: the caller asked for this one)."""
        if self.train:
            raise ValueError("test_clips needs a test dataset (train=False): train clips are random draws")
        clips = self._load(self.records[index], np.random.default_rng(0))
        return clips if self.num_clips > 1 else clips.unsqueeze(0)

    def close(self) -> None:
        """Stop the decoding child process, if any (it also ends by itself when this process ends)."""
        if self.decoder is not None:
            self.decoder.close()

    @classmethod
    def of_videos(cls, videos: list[tuple[str, int]], spec: ClipSpec, *, clips: int, decoder: str = "auto",
                  mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> VideoClipDataset:
        """A test dataset of any ``(path, frame count)`` videos, outside a manifest (export, predict): item ``i``
        is video ``i``; ``test_clips(i)`` decodes it, in an isolated child process."""
        rows = pd.DataFrame({"path": [p for p, _ in videos], "label": range(len(videos)),
                             "num_frames": [n for _, n in videos], "status": "ok"})
        return cls(rows, split=None, spec=spec, train=False, seed=0, num_clips=clips, decoder=decoder, mean=mean,
                   std=std)

    def _load(self, record: VideoRecord, rng: np.random.Generator) -> torch.Tensor:
        # train: M independent random draws; test: M evenly spaced offsets (M = 1 is the TSN centre)
        spec = self.spec
        k, l = spec.sampled
        indices = np.stack([
            clip_indices(
                record.num_frames, k, l, mode=spec.mode, train=self.train,
                rng=rng, stride=spec.stride, clip=0 if self.train else m, num_clips=1 if self.train else self.num_clips,
            )
            for m in range(self.num_clips)
        ])  # (M, K, L)
        h, w = spec.resize if spec.resize is not None else (None, None)
        if self.decoder is not None:
            frames = self.decoder.read_frames(record.path, indices, width=w, height=h)
        else:
            frames = read_frames(record.path, indices, width=w, height=h, cache=self.readers)
        frames = frames.reshape(*indices.shape, *frames.shape[1:])  # (M, K, L, H, W, 3)
        clips = [self.transform(frames[m], rng) for m in range(self.num_clips)]
        if spec.modality == "rgb_diff":
            clips = [rgb_difference(c) for c in clips]
        return clips[0] if self.num_clips == 1 else torch.stack(clips)
