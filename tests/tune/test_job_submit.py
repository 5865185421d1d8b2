"""autovid as a Ray job: a local Ray head on 127.0.0.1 (started here with `ray start --head`, stopped after), the
RayJob manifest's entrypoint and runtime environment submitted with `ray job submit`, the genotype read back.

Nodes get autovid through the runtime environment (the checkout as working_dir), not from an install: the job's
driver and a worker both import it from Ray's unpacked copy of the working folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from autovid.nas.genotype import Genotype

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
WORKING_DIR_COPY = "runtime_resources/working_dir_files/"  # where Ray unpacks a job's working_dir on a node
NO_AGENT_YET = "No available agent to submit job, please try again later"  # ray/dashboard/modules/job/job_head.py


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _manifest() -> tuple[str, dict]:
    """The RayJob's entrypoint and runtime environment (deploy/rayjob.yaml)."""
    spec = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())["spec"]
    return spec["entrypoint"], yaml.safe_load(spec["runtimeEnvYAML"])


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on loopback with its own auth token: (job server address, environment of a client)."""
    temp = Path(tempfile.mkdtemp(prefix="avray", dir="/tmp"))  # short: Ray's socket paths live under it
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           # Ray binds to the loopback address only (as autovid's own local Ray does)
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           # the nodes' Python: `python` in the entrypoint is this environment's, as in a cluster image
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard, agent, client = _free_port(), _free_port(), _free_port(), _free_port()
    process = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--include-dashboard=true",
         # ports of their own, not Ray's fixed defaults (52365, 10001): every other Ray on this machine (a local
         # autovid run, the other test worker's) binds those, and a job agent without its HTTP port takes no jobs
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 600  # a hang guard for a loaded machine, not a timing check
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=30).close()
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): the job server is up
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray head did not start (exit code {process.poll()})") from None
                time.sleep(1)
        yield address, env
    finally:
        # only the processes this test started: the head's own process group (GCS, raylet, agents, workers).
        # SIGKILL, not SIGTERM: nothing of this head is kept, and a SIGTERM makes the raylet drain for up to 30 s.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _submit(address: str, env: dict[str, str], runtime_env: dict, entrypoint: list[str]) -> str:
    """`ray job submit --runtime-env FILE -- ENTRYPOINT` from the checkout (working_dir "." is this folder)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(runtime_env, fh)
    try:
        deadline = time.monotonic() + 600  # a hang guard, as for the head's start
        while True:
            done = subprocess.run([str(RAY), "job", "submit", "--address", address, "--runtime-env", fh.name, "--",
                                   *entrypoint], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            # the job server answers before the node's job agent has registered (a loaded machine): Ray refuses
            # the job with this line and asks to try again later, which is what a client of a new head does
            if NO_AGENT_YET not in done.stdout + done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        os.unlink(fh.name)
    assert done.returncode == 0 and "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_runtime_env_file_is_the_rayjob_one() -> None:
    entrypoint, runtime_env = _manifest()
    assert runtime_env == yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    assert "pip" not in runtime_env and runtime_env["working_dir"] == "."  # no package index at run time
    assert shlex.split(entrypoint) == ["python", "-m", "autovid.cli", "tune", "cluster-smoke"]


def test_nodes_import_autovid_from_the_runtime_env(head: tuple[str, dict[str, str]]) -> None:
    address, env = head
    _, runtime_env = _manifest()
    probe = ("import autovid, ray; ray.init(); where = ray.remote(lambda: __import__('autovid').__file__); "
             "print('driver:', autovid.__file__); print('worker:', ray.get(where.remote()))")
    out = _submit(address, env, runtime_env, ["python", "-c", probe])
    paths = dict(re.findall(r"^(driver|worker): (\S+)$", out, re.MULTILINE))
    assert set(paths) == {"driver", "worker"}, out[-2000:]
    for path in paths.values():
        assert WORKING_DIR_COPY in path and not path.startswith(str(REPO)), paths


def test_rayjob_entrypoint_runs_a_search_and_its_genotype_reads_back(head: tuple[str, dict[str, str]]) -> None:
    address, env = head
    entrypoint, runtime_env = _manifest()
    out = _submit(address, env, runtime_env, shlex.split(entrypoint))
    printed = re.search(r"^best genotype ([0-9a-f]+):$", out, re.MULTILINE)
    results = re.search(r"^results: (\S+)$", out, re.MULTILINE)
    assert printed and results, out[-3000:]
    experiment = Path(results.group(1))
    assert WORKING_DIR_COPY in str(experiment)  # the job ran in Ray's copy of the checkout
    genotype = Genotype.from_json((experiment / "best_genotype.json").read_text())
    assert genotype.hash == printed.group(1)
    summary = (experiment / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(",OK," in row for row in summary[1:])  # two trials of cluster-smoke
