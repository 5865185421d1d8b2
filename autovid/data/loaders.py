"""DataLoaders for search and retraining: train, DARTS' weight and alpha halves, and test."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler, default_collate, get_worker_info

from autovid.data.dataset import VideoClipDataset
from autovid.data.manifest import class_names as manifest_class_names
from autovid.data.manifest import group_of
from autovid.data.sampling import ClipSpec
from autovid.errors import UserError
from autovid.rng import Stream
from autovid.rng import generator as rng_stream

log = logging.getLogger(__name__)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset_index, epoch)`` over a fixed subset, reshuffled each time it is iterated.

    Carrying the epoch inside the index lets every worker derive the same per-item RNG
    ``(seed, epoch, index)`` without anyone calling ``set_epoch``; the order comes from a
    ``torch.Generator`` seeded once, so a run replays exactly.
    """

    def __init__(self, indices: Sequence[int], *, shuffle: bool, seed: int = 0) -> None:
        self.indices = list(indices)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = torch.randperm(len(self.indices), generator=self.generator).tolist() if self.shuffle else range(
            len(self.indices))
        return iter([(self.indices[i], epoch) for i in order])


class ShardedBatches(Sampler[list[tuple[int, int]]]):
    """Rank ``rank``'s part of each global batch of ``sampler``: the batches of ``batch_size`` one process
    would draw, each cut into ``world`` contiguous parts (sizes differ by at most one; a part may be empty
    when a last batch has fewer clips than ranks). The union over ranks is the one-process batch, in order."""

    def __init__(self, sampler: EpochSampler, *, batch_size: int, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        items = list(self.sampler)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            base, extra = divmod(len(batch), self.world)
            lo = self.rank * base + min(self.rank, extra)
            yield batch[lo : lo + base + (self.rank < extra)]


def epoch_sampler(loader: DataLoader) -> EpochSampler | None:
    """The ``EpochSampler`` behind a loader built here (sharded or not)."""
    sampler = getattr(loader.batch_sampler, "sampler", None)
    return sampler if isinstance(sampler, EpochSampler) else None


class _Collate:
    """``default_collate``, and an empty batch of the right shape for an empty shard (so that every rank
    takes part in every step's collectives)."""

    def __init__(self, clip_shape: tuple[int, ...]) -> None:
        self.clip_shape = clip_shape

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> Any:
        if not items:
            return torch.empty((0, *self.clip_shape)), torch.empty(0, dtype=torch.long)
        return default_collate(items)


def split_stratified(labels: Sequence[int], portion: float, seed: int, groups: Sequence[str] | None = None,
                     class_names: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """Split positions into a first part of about ``portion`` of the videos and a second part of the rest.

    Without ``groups``, per class: about ``portion`` of each class's videos go to the first part, each
    class keeping at least one video on each side when it has two.

    With ``groups`` (UCF101/HMDB51's ``_gNN_``: clips cut from one long video, one scene), whole groups go
    to one side, so the α half never validates on clips of a video (a scene) the weights trained on:

    * groups not shared (each group holds one class): per class as above, in units of the class's groups
      (at least one group on each side when it has two); a class with a single group falls back to
      splitting its videos.
    * groups shared (some group occurs in two or more classes, as in the synthetic benchmark, where every
      scene performs every class, and in UCF101, whose group numbers recur across classes): ONE permutation
      of the distinct groups, cut where the first part's share of all videos is closest to ``portion``,
      with at least one group on each side. Every group then lies wholly in one half across all classes;
      a per-class split would pair scene g05 with class A in one half and with class B in the other, a
      leak. Stratification is then only approximate: a class may end up with no video in one half (few
      groups); that is logged as a warning naming the classes (``class_names``, else their labels), and
      the group-pure split is kept, since purity matters more. With a single distinct group there is
      nothing to cut, and the per-class video split is used.

    Deterministic for ``seed`` (stream :attr:`Stream.HALVES`).
    """
    if not 0.0 < portion < 1.0:
        raise UserError(f"train_portion must be in (0, 1), got {portion}")
    rng = rng_stream(seed, Stream.HALVES)
    labels_arr = np.asarray(labels)
    if groups is not None and len(set(groups)) >= 2 and _groups_shared(labels_arr, groups):
        return _split_shared_groups(labels_arr, groups, portion, rng, class_names)
    first: list[int] = []
    second: list[int] = []
    for label in np.unique(labels_arr):
        positions = np.flatnonzero(labels_arr == label)
        units = _units(positions, groups)
        members = [units[i] for i in rng.permutation(len(units))]
        first_units, second_units = _cut(members, portion)
        first += [i for unit in first_units for i in unit]
        second += [i for unit in second_units for i in unit]
    return sorted(first), sorted(second)


def _cut(members: list[list[int]], portion: float) -> tuple[list[list[int]], list[list[int]]]:
    """Cut ordered units where the first part's share of their videos is closest to ``portion``
    (at least one unit on each side when there are two or more)."""
    sizes = np.cumsum([len(unit) for unit in members])
    cut = int(np.argmin(np.abs(sizes - portion * sizes[-1]))) + 1
    if len(members) >= 2:
        cut = min(max(cut, 1), len(members) - 1)
    return members[:cut], members[cut:]


def _groups_shared(labels: np.ndarray, groups: Sequence[str]) -> bool:
    """Whether some group occurs in two or more classes."""
    classes_of: dict[str, set[int]] = {}
    for group, label in zip(groups, labels.tolist()):
        classes_of.setdefault(group, set()).add(label)
    return any(len(classes) >= 2 for classes in classes_of.values())


def _split_shared_groups(labels: np.ndarray, groups: Sequence[str], portion: float, rng: np.random.Generator,
                         class_names: Sequence[str] | None) -> tuple[list[int], list[int]]:
    """One cut of a permutation of all distinct groups: every group wholly on one side, across all classes."""
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)  # in order of first appearance: deterministic
    units = list(by_group.values())
    members = [units[i] for i in rng.permutation(len(units))]
    first_units, second_units = _cut(members, portion)
    first = sorted(i for unit in first_units for i in unit)
    second = sorted(i for unit in second_units for i in unit)
    present = set(labels.tolist())
    one_sided = sorted((present - set(labels[first].tolist())) | (present - set(labels[second].tolist())))
    if one_sided:
        names = [class_names[c] if class_names is not None and c < len(class_names) else str(c) for c in one_sided]
        log.warning("the group-pure weight/α split leaves %d class(es) with no video in one half (too few "
                    "shared groups): %s; kept, since a split that mixes groups would leak scenes across the "
                    "halves", len(names), ", ".join(names))
    return first, second


def _units(positions: np.ndarray, groups: Sequence[str] | None) -> list[list[int]]:
    """What a class is split by: its groups when it has two or more, else its single videos."""
    if groups is not None:
        by_group: dict[str, list[int]] = {}
        for i in positions.tolist():
            by_group.setdefault(groups[i], []).append(i)
        if len(by_group) >= 2:
            return list(by_group.values())  # in order of first appearance: deterministic
    return [[i] for i in positions.tolist()]


def worker_init(worker_id: int) -> None:
    """Give each DataLoader worker its own readers (never inherit decoder state across fork)."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, VideoClipDataset):
        info.dataset.reset_readers()


class Throughput(NamedTuple):
    """Clips delivered by one timed pass over a loader."""

    clips: int
    seconds: float

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("nan")


def measure_throughput(loader: DataLoader, *, max_batches: int | None = None) -> Throughput:
    """Time one pass over ``loader`` (at most ``max_batches``), not counting the first batch (worker start-up).

    A plain clock around one pass, not ``torch.utils.benchmark``: its Timer re-runs a statement to time it,
    while a pass over a loader consumes an epoch (sampler state, persistent workers) and cannot be replayed."""
    batches = iter(loader)
    next(batches, None)
    clips, start = 0, time.perf_counter()
    for i, (x, _) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        clips += len(x)
    return Throughput(clips, time.perf_counter() - start)


@dataclass
class LoaderBundle:
    """The loaders of one experiment. ``search_w``/``search_a`` are None when no search split was asked for.

        train split ─┬─────────────────────────────▶ train     (retraining on all train videos)
                     └─ by group, train_portion ───▶ search_w  (network weights)
                                                   └▶ search_a  (architecture α)
        val_split   ───────────────────────────────▶ test      (centre crops, test_clips per video)

    The halves take whole groups, per class unless groups are shared across classes (then one split of
    all groups): :func:`split_stratified`.
    """

    train: DataLoader
    search_w: DataLoader | None
    search_a: DataLoader | None
    test: DataLoader
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def failures(self) -> int:
        """Clips that failed to decode and were replaced, over all loaders so far."""
        return sum(ds.failures for ds in _datasets(self.train, self.search_w, self.search_a, self.test))

    @property
    def substituted(self) -> dict[str, int]:
        """Per split: distinct videos found undecodable so far, each replaced by another of its class."""
        return {_split_name(ds): ds.substituted for ds in _datasets(self.train, self.test)}

    def substitution_metrics(self, *loaders: DataLoader | None) -> dict[str, int]:
        """``data/substituted/<split>`` for the splits behind ``loaders``: what a session reports per epoch.

        The count covers the videos decoded so far, so the test split's is exact once it has been
        evaluated: a non-zero value means the test set was not the manifest's (bad videos were replaced).
        """
        return {f"data/substituted/{_split_name(ds)}": ds.substituted for ds in _datasets(*loaders)}


def _datasets(*loaders: DataLoader | None) -> list[VideoClipDataset]:
    """The distinct datasets behind ``loaders`` (the train split's loaders share one), in order."""
    found: dict[int, VideoClipDataset] = {}
    for loader in loaders:
        if loader is not None:
            dataset = loader.dataset
            assert isinstance(dataset, VideoClipDataset)  # every loader here is built by build_loaders
            found.setdefault(id(dataset), dataset)
    return list(found.values())


def _split_name(ds: VideoClipDataset) -> str:
    return ds.split if ds.split is not None else "all"


def _loader(dataset: VideoClipDataset, indices: Sequence[int], *, shuffle: bool, seed: int, batch_size: int,
            num_workers: int, shard: tuple[int, int]) -> DataLoader:
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=worker_init)
    sampler = EpochSampler(indices, shuffle=shuffle, seed=seed)
    rank, world = shard
    if world > 1:
        kwargs.update(batch_sampler=ShardedBatches(sampler, batch_size=batch_size, rank=rank, world=world),
                      collate_fn=_Collate(dataset.clip_shape))
    else:
        kwargs.update(batch_size=batch_size, sampler=sampler, drop_last=False)
    return DataLoader(dataset, num_workers=num_workers, pin_memory=torch.cuda.is_available(), **kwargs)


def build_loaders(
    manifest: pd.DataFrame,
    *,
    spec: ClipSpec,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    train_portion: float | None = 0.5,
    test_clips: int = 1,
    val_split: str = "test",
    hflip: bool = True,
    crop_scale: tuple[float, float] = (0.4, 1.0),
    isolate_decoding: bool = True,
    shard: tuple[int, int] = (0, 1),
    decoder: str = "auto",
    decode_device: str = "cpu",
) -> LoaderBundle:
    """Build the experiment's loaders from a manifest (only ``status == "ok"`` rows are used).

    Batches are ``(clips, labels)``: clips float32 [B, K, C, L, crop, crop] (``[B, M, K, ...]`` for the
    test loader when ``test_clips = M > 1``), labels int64 [B]. Shuffling uses ``torch.Generator``s
    seeded from ``seed``; pin_memory only when CUDA is available.

    Each decoding process (this one, or each worker) decodes in a persistent child process unless
    ``isolate_decoding=False``: a video on which the decoder aborts or segfaults is then replaced like any
    undecodable file instead of ending the run (see :class:`VideoClipDataset`). ``decoder``: the backend
    (``data.decoder``); ``decode_device``: where TorchCodec decodes.

    ``shard=(rank, world)`` with ``world > 1``: every loader yields rank's part of each global batch of
    ``batch_size`` (:class:`ShardedBatches`), so ``world`` data-parallel ranks together see exactly the
    batches of one process.
    """
    splits = set(manifest.loc[manifest["status"] == "ok", "split"])
    for name in ("train", val_split):
        if name not in splits:
            raise UserError(f"the manifest has no usable videos in split {name!r} (has: {', '.join(sorted(splits))})")
    names = tuple(manifest_class_names(manifest))
    common: dict[str, Any] = dict(spec=spec, isolate=isolate_decoding, decoder=decoder, decode_device=decode_device)
    train_ds = VideoClipDataset(manifest, split="train", train=True, seed=seed, hflip=hflip, scale=crop_scale, **common)
    test_ds = VideoClipDataset(manifest, split=val_split, train=False, seed=seed, num_clips=test_clips, **common)
    opts: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, shard=shard)
    train = _loader(train_ds, range(len(train_ds)), shuffle=True, seed=seed, **opts)
    test = _loader(test_ds, range(len(test_ds)), shuffle=False, seed=seed, **opts)
    search_w = search_a = None
    if train_portion is not None:
        groups = [group_of(record.path) for record in train_ds.records]
        w_idx, a_idx = split_stratified(train_ds.labels, train_portion, seed, groups=groups, class_names=names)
        # initial shuffling seeds of the halves; a session reseeds every loader per epoch (autovid.rng streams)
        search_w = _loader(train_ds, w_idx, shuffle=True, seed=seed + 1, **opts)
        search_a = _loader(train_ds, a_idx, shuffle=True, seed=seed + 2, **opts)
    return LoaderBundle(train, search_w, search_a, test, num_classes=len(names), class_names=names)
