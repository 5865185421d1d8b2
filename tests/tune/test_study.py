"""Optuna study tooling: matplotlib plots of a journal study, and optuna-dashboard on it (loopback only)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib
import optuna
import pytest

from autovid.cli import build_parser, ui_invocation
from autovid.errors import UserError
from autovid.tune.study import JOURNAL, dashboard_command, find_journal, journal_storage, load_study, study_figures


def _study(folder: Path, name: str, directions: list[str], trials: int) -> optuna.Study:
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=journal_storage(folder / JOURNAL), directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        x, k = (
            trial.suggest_float("search.w_lr", 1e-3, 1e-1, log=True),
            trial.suggest_categorical("model.cells", [2, 3]),
        )
        return (x * k, 1.0 / k)[: len(directions)]

    study.optimize(lambda t: objective(t) if len(directions) > 1 else objective(t)[0], n_trials=trials)
    return study


def test_multi_objective_study_figures(tmp_path: Path) -> None:
    _study(tmp_path / "exp", "exp", ["maximize", "minimize"], trials=6)
    study = load_study(tmp_path / "exp", "exp")
    assert study is not None and len(study.trials) == 6
    style = dict(matplotlib.rcParams)
    figures = study_figures(study, ["val/acc", "genotype/flops"])
    assert dict(matplotlib.rcParams) == style  # Optuna's plt.style.use("ggplot") stays inside the plots
    assert set(figures) == {"optuna_history_val_acc.png", "optuna_history_genotype_flops.png",
                            "optuna_importances_val_acc.png", "optuna_importances_genotype_flops.png",
                            "optuna_pareto.png"}
    for name, figure in figures.items():
        figure.savefig(tmp_path / name)  # still drawable after leaving pyplot's registry
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_importances_need_two_completed_trials(tmp_path: Path) -> None:
    _study(tmp_path / "one", "one", ["maximize"], trials=1)
    study = load_study(tmp_path / "one", "one")
    assert study is not None
    assert set(study_figures(study, ["objective"])) == {"optuna_history.png"}


def test_no_study_without_a_journal_or_of_another_name(tmp_path: Path) -> None:
    assert load_study(tmp_path, "exp") is None
    _study(tmp_path / "exp", "exp", ["maximize"], trials=1)
    assert load_study(tmp_path / "exp", "other") is None


def test_find_journal_by_name_folder_or_file(tmp_path: Path) -> None:
    _study(tmp_path / "runs" / "exp", "exp", ["maximize"], trials=1)
    journal = (tmp_path / "runs" / "exp" / JOURNAL).resolve()
    assert find_journal("exp", tmp_path / "runs") == journal
    assert find_journal(str(tmp_path / "runs" / "exp"), "elsewhere") == journal
    assert find_journal(str(journal), "elsewhere") == journal
    with pytest.raises(UserError, match="no Optuna study found for 'nope'.*experiments with a study under .*: exp"):
        find_journal("nope", tmp_path / "runs")


def test_ui_optuna_command_line(tmp_path: Path) -> None:
    _study(tmp_path / "runs" / "exp", "exp", ["maximize"], trials=1)
    args = build_parser().parse_args(["ui", "--optuna", "exp", "--storage-path", str(tmp_path / "runs")])
    command, banner = ui_invocation(args)
    journal = str((tmp_path / "runs" / "exp" / JOURNAL).resolve())
    assert command == [sys.executable, "-m", "optuna_dashboard._cli", journal, "--storage-class",
                       "JournalFileStorage", "--host", "127.0.0.1", "--port", "8080"]
    assert banner.startswith("optuna-dashboard at http://127.0.0.1:8080")
    mlflow_command, _ = ui_invocation(build_parser().parse_args(["ui", "--tracking-uri", "sqlite:///x.db"]))
    assert mlflow_command[-4:] == ["--host", "127.0.0.1", "--port", "5000"]  # the MLflow UI keeps its default


def test_ui_optuna_without_a_study_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "autovid.cli", "ui", "--optuna", "nope"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no Optuna study found for 'nope'" in lines[0], result.stderr


@pytest.mark.parametrize("content", [b"\xab\xcd" + bytes(range(256)) * 8,  # not text
                                     b'{"op_code": 0, "worker_id": "w"}\n'])  # JSON, not a journal's records
def test_ui_optuna_on_a_corrupt_journal_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / JOURNAL).write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "autovid.cli", "ui", "--optuna", "exp", "--storage-path",
                             str(tmp_path / "runs"), "--port", str(_free_port())], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("autovid: error: ") and "not a readable Optuna journal" in lines[0], lines[0]
    assert "optuna-dashboard at" not in result.stdout  # refused before the dashboard started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_the_study_on_loopback(tmp_path: Path) -> None:
    _study(tmp_path / "exp", "exp", ["maximize", "minimize"], trials=3)
    port = _free_port()
    proc = subprocess.Popen(dashboard_command(tmp_path / "exp" / JOURNAL, port=port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body, deadline = None, time.monotonic() + 300  # a hang guard, not a timing assertion
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
                    body = response.read().decode()
            except (urllib.error.URLError, OSError):  # not up yet, or slow to answer on a loaded machine
                time.sleep(0.2)
        assert body is not None, proc.stderr.read().decode() if proc.poll() is not None else "no answer"
        assert '"study_name": "exp"' in body or '"study_name":"exp"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_the_nsga2_sampler_pickles_and_keeps_sampling() -> None:
    """Ray Tune pickles the searcher; Optuna 5.1's NSGA-II sampler holds a thread lock that pickle refuses."""
    import pickle

    import optuna

    from autovid.tune.nsga2 import PicklableNSGAIISampler

    sampler = PicklableNSGAIISampler(seed=0, population_size=2)
    copy = pickle.loads(pickle.dumps(sampler))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=copy)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=4)
    assert len(study.trials) == 4
