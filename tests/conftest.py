"""Shared pytest setup: threads capped for 2-core CI, and one synthetic-video cache for the whole session."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # 2 cores: tests run beside Ray workers and forkserver probes; 1 thread is fastest


@pytest.fixture(scope="session", autouse=True)
def shared_synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tests that build the tiny benchmark share it (generated once, keyed by its parameters)."""
    cache = str(tmp_path_factory.mktemp("autovid-cache"))
    os.environ["AUTOVID_TEST_CACHE"] = cache
    return cache
