"""The CLI's local Ray: listens on the loopback address only, and does not outlive a killed driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow

DRIVER = """
import os, sys, time
import ray
from autovid.tune.cluster import init_ray
init_ray(None)
@ray.remote
def hold():
    time.sleep(600)
ref = hold.remote()  # a busy worker, as during a trial
ray.get(ray.remote(lambda: 1).remote())
print("READY", flush=True)
time.sleep(600)
"""
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening(pids: set[int]) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _wait_gone(procs: list[psutil.Process], deadline_s: float) -> list[psutil.Process]:
    # a hang guard, not a timing assertion: the leftovers are gone long before the deadline on any machine
    end = time.monotonic() + deadline_s
    alive = procs
    while alive and time.monotonic() < end:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


def test_local_ray_binds_loopback_and_stops_when_the_driver_is_killed() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)
    procs: list[psutil.Process] = []
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "READY"
        procs = psutil.Process(driver.pid).children(recursive=True)
        ray_procs = [p for p in procs if "watchdog" not in " ".join(p.cmdline())]
        assert any(p.name() == "raylet" for p in ray_procs)
        addresses = _listening({driver.pid, *(p.pid for p in ray_procs)})
        assert addresses and addresses <= LOOPBACK, addresses
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        leftovers = _wait_gone(ray_procs, deadline_s=120)
        assert not leftovers, [p.name() for p in leftovers]
    finally:
        driver.kill()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
