"""The command line: bad input is one line on stderr and exit code 2; listing commands work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autovid.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tune", "quickstart", "search.epochz=3"), "search.epochz"),
        # overrides after options (the README's forms) reach the config, not argparse's "unrecognized"
        (("tune", "quickstart", "--resume", "search.epochz=3"), "search.epochz"),
        (("tune", "quickstart", "--no-retrain", "search.epochz=3", "--resume"), "search.epochz"),
        (("train", "quickstart", "--genotype", "g.json", "train.epochz=1"), "train.epochz"),
        (("vs-random", "quickstart", "--genotype", "g.json", "train.epochz=1"), "train.epochz"),
        (("vs-random", "quickstart", "train.model=r3d_18"), "unset train.model"),
        (("vs-random", "quickstart", "--seeds", "0"), "--seeds"),
        (("null", "quickstart", "--seeds", "1"), "--seeds"),
        (("tune", "quickstart", "data.num_segments=0"), "data.num_segments"),
        (("tune", "quickstart", "tune.constraints=[genotype/params < 5]"), "tune.constraints.0: 'genotype/params < 5'"),
        (("search", "no-such-config"), "quickstart"),
        (("train", "quickstart", "--genotype", "missing.json"), "missing.json"),
        (("data", "index", "no/such/root", "--format", "ucf101", "--out", "m.parquet"), "no/such/root"),
        (("evaluate", "missing.pt"), "missing.pt"),
        (("models", "--input", "16x112"), "--input"),
        (("models", "--input", "0x0x0"), "must be positive"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autovid: error:") and needle in lines[0], result.stderr


def test_bad_yaml_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  order: third\n")
    result = _run("search", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and str(bad) in result.stderr and "search.order" in result.stderr


def test_a_stray_word_is_still_refused(tmp_path: Path) -> None:
    result = _run("tune", "quickstart", "--resume", "stray", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: stray" in result.stderr


# -- issue 21, item 4: `autovid ui` checks its port and leaves no server behind --------------------------------
@pytest.mark.parametrize("args", [("--port", "0"), ("--port", "-1"), ("--port", "65536"), ("--port", "70000"),
                                  ("--optuna", "exp", "--port", "0")])
def test_ui_refuses_a_port_out_of_range_in_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _run("ui", *args, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"autovid: error: --port {args[-1]}:") and "1 to 65535" in lines[0], lines[0]
    assert "MLflow UI at" not in result.stdout and "optuna-dashboard at" not in result.stdout  # nothing started


UI_MARK = "AUTOVID_TEST_UI"  # set in the environment of `autovid ui`: every process it starts inherits it


def _marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries `marker`: `autovid ui` and whatever it started, at any depth."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(UI_MARK) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_to_ui_stops_every_server_process_and_frees_the_port(tmp_path: Path) -> None:
    port, marker = _free_port(), uuid.uuid4().hex
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen([sys.executable, "-m", "autovid.cli", "ui", "--port", str(port), "--tracking-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, UI_MARK: marker})
    try:
        answered, deadline = False, time.monotonic() + 300  # a hang guard on a loaded machine, not a timing check
        while not answered and ui.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
                    answered = response.status == 200
            except OSError:  # not listening yet, or not answering yet
                time.sleep(0.2)
        assert answered, log.read_text()
        started = _marked(marker)
        assert len(started) >= 3, [p.cmdline() for p in started]  # autovid, `mlflow ui`, its HTTP server(s)
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
        left = _marked(marker)
        assert not left, [p.cmdline() for p in left]
        with socket.socket() as s:
            # SO_REUSEADDR, as a server sets it: the answered request's TIME_WAIT is no listener; a live one fails
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        for process in _marked(marker):  # what a failing run left: not left on the machine
            process.kill()


# -- issue 21, item 5: an interrupted command advises --resume only where it has one -----------------------------
def test_the_interrupted_line_names_resume_only_for_commands_that_have_it() -> None:
    from autovid.cli import build_parser, interrupted_line

    parser = build_parser()
    assert interrupted_line(parser.parse_args(["export", "state.pt", "--format", "pt2"])) == "autovid: interrupted"
    assert interrupted_line(parser.parse_args(["data", "synth", "out"])) == "autovid: interrupted"
    assert (
        interrupted_line(parser.parse_args(["search", "quickstart"])) == "autovid: interrupted (resume with --resume)"
    )


def test_an_interrupted_command_without_resume_does_not_advise_it(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    # far more videos than it writes before the interrupt: it is still working when SIGINT comes
    proc = subprocess.Popen([sys.executable, "-m", "autovid.cli", "data", "synth", str(out), "--classes", "14",
                             "--videos-per-class", "200"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            # a shell's background job ignores SIGINT, and Python then never raises
                            # KeyboardInterrupt: give the child the default disposition whoever started the suite
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300  # a hang guard: the first video shows the command is under way
        while not any(out.glob("*/*.avi")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and stderr.strip().splitlines() == ["autovid: interrupted"], stderr
