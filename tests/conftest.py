"""Shared pytest setup: threads capped for 2-core CI, one synthetic-video cache for the whole session, and fault
injection into the processes a test starts."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from tests.faults import fault_env

torch.set_num_threads(1)  # 2 cores: tests run beside Ray workers and forkserver probes; 1 thread is fastest


@pytest.fixture(scope="session", autouse=True)
def shared_synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tests that build the tiny benchmark share it (generated once, keyed by its parameters)."""
    cache = str(tmp_path_factory.mktemp("autovid-cache"))
    os.environ["AUTOVID_TEST_CACHE"] = cache
    return cache


@pytest.fixture
def inject_faults(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``inject_faults(hold=..., decode_abort=...)``: the processes this test starts from now on get those faults
    (:func:`tests.faults.fault_env`); the environment is restored afterwards."""

    def inject(**faults) -> None:
        for key, value in fault_env(os.environ, **faults).items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)

    return inject
