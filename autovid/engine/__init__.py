"""Training engine: search / train / evaluate loops returning metric dicts, and parameter/FLOP accounting."""

from autovid.engine.accounting import count_flops, count_parameters, describe
from autovid.engine.trainer import alpha_entropy, evaluate, search_epoch, train_epoch

__all__ = [
    "alpha_entropy",
    "count_flops",
    "count_parameters",
    "describe",
    "evaluate",
    "search_epoch",
    "train_epoch",
]
