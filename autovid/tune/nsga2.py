"""Optuna's NSGA-II sampler made picklable, as Ray Tune needs every searcher to be (experiment state, resume)."""

from __future__ import annotations

import threading
from typing import Any

import optuna


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``NSGAIISampler`` whose thread locks are left out of its pickled state and made anew when it is loaded.

    Why: Optuna 5.1's sampler keeps a ``threading.Lock`` (``_thread_lock``), and ``tune.Tuner`` pickles the
    searcher that holds it when the experiment starts, which then fails with "cannot pickle '_thread.lock'".
    A lock guards only this process's threads, so a fresh one is what an unpickled copy needs.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_autovid_locks"] = [k for k, v in state.items() if isinstance(v, _LOCK_TYPES)]
        for key in state["_autovid_locks"]:
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        locks = state.pop("_autovid_locks", [])
        self.__dict__.update(state)
        for key in locks:
            setattr(self, key, threading.Lock())


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
