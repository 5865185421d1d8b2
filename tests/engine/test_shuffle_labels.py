"""search.shuffle_labels: the null control of a search sees the train split's labels permuted across videos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from autovid.data.loaders import LoaderBundle, epoch_sampler
from autovid.engine.preflight import example_genotype
from autovid.engine.session import SearchSession, TrainSession
from autovid.engine.setup import build_data
from autovid.nas.genotype import Genotype
from tests.tiny import tiny_config


def _labels(bundle: LoaderBundle, half: str) -> dict[str, int]:
    """path -> label of the videos a loader draws from, as its dataset will hand them out."""
    loader = getattr(bundle, half)
    sampler = epoch_sampler(loader)
    assert sampler is not None
    records = loader.dataset.records
    return {records[i].path: records[i].label for i in sampler.indices}


def _halves(bundle: LoaderBundle) -> dict[str, int]:
    w, a = _labels(bundle, "search_w"), _labels(bundle, "search_a")
    assert not set(w) & set(a)
    return {**w, **a}


def test_shuffled_labels_are_a_fixed_permutation_per_seed_in_both_halves(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    portion = cfg.search.train_portion
    true = build_data(cfg.data, seed=cfg.seed, train_portion=portion)
    shuffled = build_data(cfg.data, seed=cfg.seed, train_portion=portion, shuffle_labels=True)
    truth, seen = _halves(true), _halves(shuffled)
    assert set(seen) == set(truth) == {r.path for r in true.train.dataset.records}  # the same videos
    assert Counter(seen.values()) == Counter(truth.values())  # the same labels, moved across videos
    assert sum(seen[p] != truth[p] for p in truth) > len(truth) // 2
    for half in ("search_w", "search_a"):  # both halves carry permuted labels
        assert any(label != truth[p] for p, label in _labels(shuffled, half).items())
    assert shuffled.class_names == true.class_names and shuffled.num_classes == true.num_classes
    # the test split keeps its true labels
    assert shuffled.test.dataset.records == true.test.dataset.records
    # same seed, same permutation; another seed, another one
    assert _halves(build_data(cfg.data, seed=cfg.seed, train_portion=portion, shuffle_labels=True)) == seen
    other = _halves(build_data(cfg.data, seed=cfg.seed + 1, train_portion=portion, shuffle_labels=True))
    assert Counter(other.values()) == Counter(truth.values()) and other != seen


def test_only_the_search_shuffles_and_only_when_asked(tmp_path: Path) -> None:
    plain = tiny_config(tmp_path)
    assert plain.search.shuffle_labels is False
    truth = _halves(build_data(plain.data, seed=plain.seed, train_portion=plain.search.train_portion))
    assert _halves(SearchSession(plain).data) == truth  # off: unchanged
    cfg = tiny_config(tmp_path, search={"shuffle_labels": True}, train={"holdout": True})
    search = SearchSession(cfg).data
    assert _halves(search) != truth and Counter(_halves(search).values()) == Counter(truth.values())
    assert {r.path: r.label for r in search.train.dataset.records} == _halves(search)
    retrain = TrainSession(cfg, Genotype.from_json(example_genotype(cfg))).data  # the retrain never shuffles
    assert _halves(retrain) == truth
