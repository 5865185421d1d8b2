"""Starting or joining Ray: a local Ray on the loopback address with a watchdog, or an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

from autovid.tune import watchdog

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's name for "this node may join a cluster"
# Ray Tune's console output engine; "0" selects the legacy one, which at RunConfig(verbose=0) prints nothing,
# where the new one still prints a configuration box and a TensorBoard hint (no TensorBoard logs are written)
NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
# Ray's INFO lines that tell an autovid user nothing: "Checkpoint successfully created" per trial epoch
# (ray.train), "Trainable.setup took N seconds" and "Wrote the latest version of all result files" (ray.tune).
# Their warnings and errors still show; autovid's ConsoleReporter prints the progress.
QUIET_LOGGERS = ("ray.train", "ray.tune")
# A local Ray keeps Ray's default, token authentication on; this logger only says so at every start (its warning
# for a cluster started *without* a token comes from the same place, but autovid never starts one)
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_ray_logs() -> None:
    """Ray's libraries log warnings and errors only: run in the driver and, as Ray's documented
    ``worker_process_setup_hook``, in every worker process (where the trials log their checkpoints)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(address: str | None) -> None:
    """Start local Ray (embedded default) or connect to a cluster (`auto`, `ray://host:port`, RAY_ADDRESS).

    A local Ray listens on 127.0.0.1 only, keeps its dashboard off, and is stopped by a watchdog process if
    this driver dies without shutting it down (SIGKILL). Ray's token authentication is left as Ray
    configures it (on by default)."""
    if ray.is_initialized():
        return
    os.environ.setdefault(NEW_OUTPUT_ENV, "0")  # read by Tune at each fit; a user's own setting wins
    quiet_ray_logs()
    quiet = {"worker_process_setup_hook": quiet_ray_logs}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # no runtime_env here: a job submitted with deploy/runtime_env.yaml has its own, which must stay whole
        # (its workers then still log their checkpoints; only the driver's Ray loggers are quieted)
        ray.init(address=address, log_to_driver=True)
        return
    logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
    with single_machine_ray():
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=True, runtime_env=quiet)
    watchdog.start()


@contextlib.contextmanager
def single_machine_ray() -> Iterator[None]:
    """Make the Ray started inside bind its servers to the loopback address.

    Ray binds to the node IP, which on Linux is the machine's network address; on macOS and Windows, where
    Ray clusters are off by default, it is 127.0.0.1. Ray's own switch for that (read when `ray` is imported,
    and by Ray's child processes from the environment) makes a local run a single-machine one; it is set only
    while the node starts, so that a later connection to a real cluster from this process still works."""
    from ray._private import ray_constants

    saved = (os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


def is_local(address: str | None) -> bool:
    """Trials run on this machine: no cluster address given, here or in RAY_ADDRESS."""
    return not (address or os.environ.get("RAY_ADDRESS"))


def node_cpus() -> float:
    """CPUs of the largest live node of the Ray cluster this process is connected to (at least 1)."""
    return max([float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] + [1.0])
