"""How a search picks its architecture: DARTS (α) or random search with weight sharing, behind one interface.

    SearchSession.step():  strategy.updates_alpha(epoch) ─▶ strategy.weight_batches(loader, epoch) ─▶ search epoch
                           ─▶ (last epoch) strategy.finish(session) ─▶ strategy.genotype(session)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from autovid.config import SearchConfig
from autovid.nas.genotype import Genotype
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace
from autovid.nas.supernet import SuperNet
from autovid.rng import Stream, epoch_seed


class ScoringSession(Protocol):
    """What a strategy reads of the search session that runs it (``engine.session.SearchSession`` is one)."""

    model: SuperNet
    space: SearchSpace

    def score_genotypes(self, genotypes: list[Genotype]) -> list[float]:
        """α-half accuracy of each genotype with the supernet's inherited weights."""
        ...


class SearchStrategy(Protocol):
    """How a search picks its architecture: when α learns, which path each weight batch trains, the result."""

    def updates_alpha(self, epoch: int) -> bool: ...

    def weight_batches(self, loader: Any, model: SuperNet, space: SearchSpace, epoch: int) -> Iterable[Any]: ...

    def finish(self, session: ScoringSession) -> dict[str, float]:
        """After the last epoch: extra metrics (random WS scores its candidates here)."""
        ...

    def genotype(self, session: ScoringSession) -> Genotype: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Darts:
    """DARTS: α learns after the warm-up epochs; the genotype is derived from α by the DARTS rule."""

    def __init__(self, cfg: SearchConfig, seed: int) -> None:
        self.warmup_epochs = cfg.warmup_epochs

    def updates_alpha(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs

    def weight_batches(self, loader: Any, model: SuperNet, space: SearchSpace, epoch: int) -> Iterable[Any]:
        return loader

    def finish(self, session: ScoringSession) -> dict[str, float]:
        return {}

    def genotype(self, session: ScoringSession) -> Genotype:
        return session.model.genotype()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SinglePathBatches:
    """Random search with weight sharing: before each weight step, route the supernet along one
    uniformly sampled genotype (Li & Talwalkar 2019), so every path trains on an equal share of batches."""

    def __init__(self, loader: Any, model: SuperNet, space: SearchSpace, rng: np.random.Generator) -> None:
        self.loader, self.model, self.space, self.rng = loader, model, space, rng

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.model.set_path(sample_genotype(self.space, self.rng))
            yield batch


class RandomWeightSharing:
    """Random search with weight sharing: α never moves; single random paths train the shared weights, then
    `ws_candidates` random genotypes are scored with the inherited weights and the best is the result."""

    def __init__(self, cfg: SearchConfig, seed: int) -> None:
        self.candidates, self.seed = cfg.ws_candidates, seed
        self.choice: Genotype | None = None

    def updates_alpha(self, epoch: int) -> bool:
        return False

    def weight_batches(self, loader: Any, model: SuperNet, space: SearchSpace, epoch: int) -> Iterable[Any]:
        rng = np.random.default_rng(epoch_seed(self.seed, epoch, Stream.SINGLE_PATHS))
        return SinglePathBatches(loader, model, space, rng)

    def finish(self, session: ScoringSession) -> dict[str, float]:
        rng = np.random.default_rng(epoch_seed(self.seed, 0, Stream.WS_CANDIDATES))
        candidates = [sample_genotype(session.space, rng) for _ in range(self.candidates)]
        scores = session.score_genotypes(candidates)
        best = int(np.argmax(scores))
        self.choice = candidates[best]
        return {"ws/best_val_acc": scores[best], "ws/mean_val_acc": float(np.mean(scores))}

    def genotype(self, session: ScoringSession) -> Genotype:
        """The best candidate once scored; before that a fixed sample (a search needs a genotype every epoch)."""
        if self.choice is None:
            return sample_genotype(session.space, np.random.default_rng(epoch_seed(self.seed, 0, Stream.WS_FALLBACK)))
        return self.choice

    def state_dict(self) -> dict[str, Any]:
        return {"ws_choice": self.choice.to_json() if self.choice is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.choice = Genotype.from_json(state["ws_choice"]) if state.get("ws_choice") else None


STRATEGIES: dict[str, Callable[[SearchConfig, int], SearchStrategy]] = {
    "darts": Darts,
    "random_ws": RandomWeightSharing,
}


def make_strategy(cfg: SearchConfig, seed: int) -> SearchStrategy:
    """The configured `search.strategy`."""
    return STRATEGIES[cfg.strategy](cfg, seed)
