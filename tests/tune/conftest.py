"""Local Ray for the Tune tests: 2 CPUs like CI, no dashboard, workers' logs kept out of the test output."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray


def _local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def local_ray() -> Iterator[None]:
    """A Ray of its own for one test (tests that start clusters or kill workers need a fresh one)."""
    yield from _local_ray()


@pytest.fixture(scope="module")
def module_ray() -> Iterator[None]:
    """One Ray for a module's tests (starting Ray costs seconds per test on 2 cores)."""
    yield from _local_ray()
