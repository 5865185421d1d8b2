"""Stop the local Ray that a run started when the run's process dies, even by SIGKILL.

`ray.shutdown()` stops a local Ray cluster when the driver exits normally. A driver killed with SIGKILL
leaves Ray's agents (DashboardAgent, RuntimeEnvAgent) running for minutes, holding ports and memory. This
watchdog runs in its own session, keeps the driver's process tree in view, and when the driver is gone
terminates what is left of that tree (then kills what ignores SIGTERM):

    python -m autovid.tune.watchdog <driver pid>
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

POLL_S = 0.5  # how often the driver's liveness and its process tree are read
GRACE_S = 5.0  # SIGTERM, then SIGKILL for what is still alive after this long


def start(driver_pid: int | None = None) -> subprocess.Popen:
    """Start a watchdog for `driver_pid` (default: this process), detached from its terminal and signals."""
    return subprocess.Popen(
        [sys.executable, "-m", "autovid.tune.watchdog", str(driver_pid or os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _tree(driver: psutil.Process) -> dict[int, float]:
    """pid -> create time of the driver's descendants (the create time tells a reused pid apart)."""
    out: dict[int, float] = {}
    try:
        children = driver.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for child in children:
        if child.pid == os.getpid():  # the watchdog is itself a child of the driver
            continue
        try:
            out[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return out


def stop_leftovers(seen: dict[int, float], grace_s: float = GRACE_S) -> list[int]:
    """Terminate the processes in `seen` that still run (and are the same processes); returns their pids."""
    alive = []
    for pid, created in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.terminate()
                alive.append(proc)
        except psutil.Error:
            continue
    _, still = psutil.wait_procs(alive, timeout=grace_s)
    for proc in still:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return [proc.pid for proc in alive]


def watch(driver_pid: int) -> None:
    """Follow the driver's process tree until the driver ends, then stop its leftovers."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, float] = {}
    while _alive(driver):
        seen.update(_tree(driver))
        time.sleep(POLL_S)
    stop_leftovers(seen)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # reaped between the two calls
        return False


if __name__ == "__main__":
    watch(int(sys.argv[1]))
