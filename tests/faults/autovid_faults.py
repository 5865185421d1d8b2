"""Faults the tests inject into autovid's own processes: a trial held before an epoch, a decoder that aborts.

This module is not part of autovid. A process loads it at start-up through ``sitecustomize.py`` beside it,
when this folder is on its ``PYTHONPATH`` (see :func:`tests.faults.fault_env`). ``PYTHONPATH`` is inherited
by every process a test starts: the ``autovid`` driver, the Ray workers that run trials (Ray starts them
with the environment ``ray.init`` or the cluster's nodes were started with) and the decoding children
(:class:`autovid.data.decoding.DecodingProcess`). Nothing here runs unless one of the variables below is set,
and then only once the module it patches is imported, so processes that never import it pay nothing.

``AUTOVID_FAULT_HOLD="<epoch>:<folder>"``: a trial about to run that epoch writes ``<folder>/held-<trial id>``
(holding the PIDs of its data-parallel workers, if any) and waits for ``<folder>/release-<trial id>``. It
gives kill-and-resume tests a kill point that no race can move.

``AUTOVID_FAULT_DECODE_ABORT``: ``os.pathsep``-separated video paths on which a decoding child calls
``os.abort()`` instead of decoding: a real native crash on demand, as decord's ``std::bad_alloc``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

HOLD_ENV = "AUTOVID_FAULT_HOLD"
DECODE_ABORT_ENV = "AUTOVID_FAULT_DECODE_ABORT"

Patch = Callable[[ModuleType], None]


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch on a module right after it is first executed, before anyone can bind its names."""

    def __init__(self, patches: dict[str, Patch]) -> None:
        self.patches = patches

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        patch = self.patches.pop(fullname, None)  # popped first: find_spec below asks this finder again
        if patch is None:
            return None
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_then_patch(module: ModuleType) -> None:
            run(module)
            patch(module)

        spec.loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec


def _hold_trials(module: ModuleType) -> None:
    """Wraps ``step`` of both trainables: block before the named epoch until the test releases the trial."""
    epoch, folder = os.environ[HOLD_ENV].split(":", 1)
    gate = Path(folder)
    from autovid.tune.workers import ReplicatedSession

    def held(step: Callable[[Any], dict]) -> Callable[[Any], dict]:
        def held_step(trainable: Any) -> dict:
            session = trainable.session
            if session.epoch + 1 == int(epoch):
                pids = session.worker_pids() if isinstance(session, ReplicatedSession) else []
                (gate / f"held-{trainable.trial_id}").write_text(" ".join(map(str, pids)))
                while not (gate / f"release-{trainable.trial_id}").exists():
                    time.sleep(0.05)
            return step(trainable)

        return held_step

    for trainable in (module.SearchTrainable, module.TrainTrainable):
        trainable.step = held(trainable.step)


def _abort_decodes(module: ModuleType) -> None:
    """Wraps ``serve_decodes`` (only ever run in a decoding child): the named files abort the process."""
    victims = {os.path.abspath(p) for p in os.environ[DECODE_ABORT_ENV].split(os.pathsep) if p}
    serve, read = module.serve_decodes, module.read_frames

    def read_or_abort(path: str, *args: Any, **kwargs: Any) -> Any:
        if os.path.abspath(path) in victims:
            os.abort()
        return read(path, *args, **kwargs)

    def serve_with_aborts(*args: Any, **kwargs: Any) -> None:
        module.read_frames = read_or_abort  # the loop looks read_frames up in its module on every request
        serve(*args, **kwargs)

    module.serve_decodes = serve_with_aborts


def install() -> None:
    """Registers the patches whose variables are set (called by ``sitecustomize.py`` at start-up)."""
    patches: dict[str, Patch] = {}
    if os.environ.get(HOLD_ENV):
        patches["autovid.tune.trainables"] = _hold_trials
    if os.environ.get(DECODE_ABORT_ENV):
        patches["autovid.data.decoding"] = _abort_decodes
    if patches:
        sys.meta_path.insert(0, _PatchAfterImport(patches))
