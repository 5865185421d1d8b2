"""build_loaders: stratified search halves, reproducible shuffling, batch shapes, multi-clip test batches."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from autovid.data.loaders import EpochSampler, LoaderBundle, build_loaders, measure_throughput, split_stratified
from autovid.data.manifest import build_manifest, group_of
from autovid.errors import UserError
from tests.tiny import with_clip_spec

CLASSES = {"a": 6, "b": 4, "c": 5}  # videos per class, 2 of each class go to test (groups g01, g02)


@pytest.fixture(scope="module")
def manifest(module_kit) -> pd.DataFrame:
    for cls, n in CLASSES.items():
        for g in range(1, n + 1):
            module_kit.video(f"set/{cls}/v_{cls}_g{g:02d}_c01", 16)
    df = build_manifest(module_kit.root / "set", "folder", workers=2)
    group = df["path"].str.extract(r"_g(\d+)_")[0].astype(int)
    df["split"] = ["test" if g <= 2 else "train" for g in group]
    return df


def bundle(manifest: pd.DataFrame, **kw) -> LoaderBundle:
    args = dict(num_segments=2, frames_per_segment=2, crop_size=16, batch_size=4, seed=3, resize=(20, 20),
                num_workers=0, train_portion=0.5, test_clips=1)
    return build_loaders(manifest, **with_clip_spec(**{**args, **kw}))


def indices(loader) -> list[int]:
    return [i for i, _ in loader.sampler]


def test_search_halves_are_disjoint_stratified_and_cover_train(manifest) -> None:
    b = bundle(manifest)
    assert b.num_classes == 3 and b.class_names == ("a", "b", "c")
    w, a = sorted(indices(b.search_w)), sorted(indices(b.search_a))
    assert not set(w) & set(a) and sorted(w + a) == list(range(len(b.train.dataset)))
    labels = b.train.dataset.labels
    per_class = {c: ([labels[i] for i in w].count(c), [labels[i] for i in a].count(c)) for c in range(3)}
    assert per_class == {0: (2, 2), 1: (1, 1), 2: (2, 1)} or per_class == {0: (2, 2), 1: (1, 1), 2: (1, 2)}
    groups = [group_of(record.path) for record in b.train.dataset.records]
    assert not {groups[i] for i in w} & {groups[i] for i in a}  # groups g03.. hold several classes: split whole
    assert b.search_w.dataset is b.train.dataset  # one dataset, one set of worker caches per loader


def test_batches_have_the_contract_shapes(manifest) -> None:
    b = bundle(manifest, test_clips=3)
    x, y = next(iter(b.search_w))
    assert x.shape == (4, 2, 3, 2, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(iter(b.test))
    assert x.shape == (4, 3, 2, 3, 2, 16, 16)
    assert sum(len(y) for _, y in b.test) == 6
    dense = bundle(manifest, mode="dense", train_portion=None)
    assert dense.search_w is None and dense.search_a is None
    assert next(iter(dense.train))[0].shape == (4, 1, 3, 4, 16, 16)


def test_order_is_reproducible_and_reshuffled_each_epoch(manifest) -> None:
    one, two = bundle(manifest), bundle(manifest)
    first = [indices(one.train), indices(one.train)]
    assert first == [indices(two.train), indices(two.train)] and first[0] != first[1]
    assert indices(one.test) == list(range(6))
    seen = [(i, e) for i, e in EpochSampler([5, 7], shuffle=False)]
    assert seen == [(5, 0), (7, 0)]
    other = bundle(manifest, seed=4)
    assert indices(other.search_w) != indices(bundle(manifest).search_w) or \
        indices(other.train) != indices(bundle(manifest).train)


def test_workers_give_the_same_batches(manifest) -> None:
    serial = [x for x, _ in bundle(manifest).search_a]
    parallel = [x for x, _ in bundle(manifest, num_workers=2).search_a]
    assert len(serial) == len(parallel) and all(torch.equal(s, p) for s, p in zip(serial, parallel))


def test_bad_requests_are_user_errors(manifest) -> None:
    with pytest.raises(UserError, match="split 'val'"):
        bundle(manifest, val_split="val")
    with pytest.raises(UserError, match="train_portion"):
        bundle(manifest, train_portion=1.0)
    only_test = manifest.assign(split="test")
    with pytest.raises(UserError, match="split 'train'"):
        bundle(only_test)


def test_split_stratified_is_deterministic() -> None:
    labels = [0] * 10 + [1] * 3 + [2]
    w, a = split_stratified(labels, 0.7, seed=1)
    assert (w, a) == split_stratified(labels, 0.7, seed=1)
    assert [labels[i] for i in w].count(0) == 7 and [labels[i] for i in w].count(1) == 2
    assert 13 in w or 13 in a


def test_split_keeps_groups_on_one_side() -> None:
    # class 0: 4 groups of 3 clips; class 1: 2 groups; class 2: one group (falls back to splitting videos);
    # no group holds two classes, so each class is split on its own
    labels = [0] * 12 + [1] * 6 + [2] * 4
    groups = [f"g{i // 3}" for i in range(12)] + ["h1"] * 3 + ["h2"] * 3 + ["g9"] * 4
    for seed in range(5):
        w, a = split_stratified(labels, 0.5, seed=seed, groups=groups)
        assert sorted(w + a) == list(range(len(labels)))
        for label in (0, 1):
            w_groups = {groups[i] for i in w if labels[i] == label}
            a_groups = {groups[i] for i in a if labels[i] == label}
            assert w_groups and a_groups and not w_groups & a_groups  # no group straddles the halves
        assert [labels[i] for i in w].count(0) == 6  # 2 of 4 groups: half the class
        assert [labels[i] for i in w].count(2) == 2 and [labels[i] for i in a].count(2) == 2
    # videos that are their own group split exactly as without groups
    assert split_stratified(labels, 0.7, seed=3, groups=[str(i) for i in range(len(labels))]) == \
        split_stratified(labels, 0.7, seed=3)


def shared_groups(n_groups: int = 8, classes: int = 4, clips: int = 2) -> tuple[list[int], list[str]]:
    """Every group (scene) performs every class, ``clips`` videos each, as in the synthetic benchmark."""
    labels, groups = [], []
    for label in range(classes):
        for g in range(n_groups):
            labels += [label] * clips
            groups += [f"g{g:04d}"] * clips
    return labels, groups


def test_split_with_shared_groups_keeps_every_group_on_one_side_across_classes() -> None:
    labels, groups = shared_groups()
    splits = set()
    for seed in range(6):
        w, a = split_stratified(labels, 0.5, seed=seed, groups=groups)
        assert sorted(w + a) == list(range(len(labels))) and not set(w) & set(a)
        w_groups, a_groups = {groups[i] for i in w}, {groups[i] for i in a}
        assert w_groups and a_groups and not w_groups & a_groups  # no scene in both halves, over all classes
        assert len(w) == len(labels) // 2  # 4 of 8 equal groups: exactly the portion
        assert all(labels[i] in {labels[j] for j in a} for i in w)  # every group holds every class here
        assert (w, a) == split_stratified(labels, 0.5, seed=seed, groups=groups)  # deterministic per seed
        splits.add(tuple(w))
    assert len(splits) > 1  # other seeds, other groups


def test_split_with_shared_groups_cuts_nearest_the_portion() -> None:
    # unequal groups: the first part's share of ALL videos is the closest the group sizes allow
    labels = [0, 1, 0, 1, 2, 0, 1, 2, 2, 0, 1, 2, 0, 1, 2, 0]
    groups = ["a", "a", "b", "b", "b", "c", "c", "c", "d", "e", "e", "e", "f", "f", "f", "f"]
    for portion in (0.3, 0.5, 0.7):
        for seed in range(4):
            w, a = split_stratified(labels, portion, seed=seed, groups=groups)
            assert not {groups[i] for i in w} & {groups[i] for i in a} and w and a
            assert abs(len(w) - portion * len(labels)) <= 2  # groups of at most 4 videos


def test_split_with_two_shared_groups_warns_of_one_sided_classes_but_stays_pure(caplog) -> None:
    # class 2 occurs only in group "y": the pure split must leave it on one side, and says so
    labels = [0, 1, 0, 1, 2, 2]
    groups = ["x", "x", "y", "y", "y", "y"]
    with caplog.at_level("WARNING", logger="autovid.data.loaders"):
        w, a = split_stratified(labels, 0.5, seed=0, groups=groups, class_names=["run", "jump", "swim"])
    assert {groups[i] for i in w} != {groups[i] for i in a} and len({groups[i] for i in w}) == 1
    assert "swim" in caplog.text and "run" not in caplog.text


def test_measure_throughput_counts_clips_after_the_first_batch(manifest) -> None:
    b = bundle(manifest)
    result = measure_throughput(b.train)  # 9 train videos, batches of 4: the first is not timed
    assert result.clips == 5 and result.seconds > 0 and result.clips_per_s > 0
    assert measure_throughput(b.train, max_batches=1).clips == 4


def test_sharded_loaders_split_each_global_batch_in_rank_order(manifest) -> None:
    one = bundle(manifest, test_clips=3)
    ranks = [bundle(manifest, test_clips=3, shard=(rank, 3)) for rank in range(3)]
    for name in ("train", "test"):
        full = list(getattr(one, name))
        parts = [list(getattr(b, name)) for b in ranks]
        assert all(len(p) == len(full) for p in parts)  # every rank takes part in every step's collectives
        for i, (x, y) in enumerate(full):  # the ranks' parts, in rank order, are the one-process batch
            assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
            assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
    # 9 train videos in batches of 4: the last global batch (1 clip) leaves ranks 1 and 2 an empty batch
    last = [list(b.train)[-1] for b in ranks]
    assert [len(y) for _, y in last] == [1, 0, 0]
    assert last[2][0].shape == (0, 2, 3, 2, 16, 16) and last[2][1].dtype == torch.int64
    assert list(ranks[1].test)[-1][0].shape[1:] == (3, 2, 3, 2, 16, 16)  # multi-clip test items
