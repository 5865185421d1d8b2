"""Fault injection into the processes a test starts (see ``autovid_faults.py`` for how and what)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.faults.autovid_faults import DECODE_ABORT_ENV, HOLD_ENV

FOLDER = str(Path(__file__).parent)

__all__ = ["DECODE_ABORT_ENV", "FOLDER", "HOLD_ENV", "fault_env"]


def fault_env(base: Mapping[str, str], *, hold: tuple[int, Path] | None = None,
              decode_abort: Iterable[str | Path] = ()) -> dict[str, str]:
    """``base`` plus the variables that inject these faults into processes started with it (and their children).

    ``hold=(epoch, folder)``: trials wait before ``epoch``; ``decode_abort``: decoding these files aborts.
    Without faults, the injection variables of ``base`` are dropped, so a run with ``os.environ`` is clean."""
    env = {k: v for k, v in base.items() if k not in (HOLD_ENV, DECODE_ABORT_ENV)}
    if hold is not None:
        env[HOLD_ENV] = f"{hold[0]}:{hold[1]}"
    if aborts := [str(p) for p in decode_abort]:
        env[DECODE_ABORT_ENV] = os.pathsep.join(aborts)
    if HOLD_ENV in env or DECODE_ABORT_ENV in env:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (FOLDER, env.get("PYTHONPATH", "")) if p)
    return env
