"""Named random streams: every draw in a run comes from (run seed, epoch, stream), never from a bare integer.

Reproducibility and exact resume rest on each purpose having its own independent stream: a restored run
reseeds each one as an uninterrupted run would, without saving generator states. The values are part of the
results (changing one changes every figure drawn from it), so new streams take new values.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """What a random stream is for (the int is mixed into its seed)."""

    TRAIN_BATCHES = 0  # the weight half's shuffling and clip sampling (search) / the train split's (retrain)
    ALPHA_BATCHES = 1  # the α half's shuffling and clip sampling
    TORCH_GLOBAL = 2  # torch's global generator for the epoch (dropout, drop path)
    SINGLE_PATHS = 3  # random-WS: the single path of each weight step
    WS_FALLBACK = 4  # random-WS: the genotype reported before any candidate was scored
    WS_SCORING = 5  # random-WS: the α-half batches every candidate is scored on
    WS_CANDIDATES = 6  # random-WS: the candidates scored at the end
    RANK_GENOTYPES = 7  # `autovid rank`: the genotypes whose rankings are compared
    VERSUS_RANDOM = 8  # `autovid vs-random`: the random genotypes the searched one is compared with
    EVALUATION = 9  # evaluation batches (multi-clip offsets are deterministic; this fixes anything else)
    SHUFFLED_LABELS = 10  # search.shuffle_labels: the permutation of the train split's labels (null control)
    HALVES = 0x5EA  # the split of the train split into weight and α halves


def epoch_seed(seed: int, epoch: int, stream: Stream) -> int:
    """A 32-bit seed for `stream` in `epoch` of the run seeded `seed` (independent across all three)."""
    return int(np.random.SeedSequence([seed, epoch, int(stream)]).generate_state(1)[0])


def generator(seed: int, stream: Stream) -> np.random.Generator:
    """A numpy generator for a per-run stream (not per epoch)."""
    return np.random.default_rng([seed, int(stream)])
