"""A resumed experiment's trial logs and Optuna journal read as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from autovid.tune.resume_logs import ORPHAN_ATTR, dedupe_trial_logs, fail_orphaned_trials


def _trial_logs(trial: Path, iterations: list[int], *, torn: bool) -> None:
    trial.mkdir(parents=True)
    rows = [
        {"training_iteration": it, "val/acc": 0.1 * it + 0.01 * n, "trial_id": "t"} for n, it in enumerate(iterations)
    ]
    torn_line = '{"training_iteration": 5, "va' if torn else ""
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + torn_line)
    pd.DataFrame(rows).to_csv(trial / "progress.csv", index=False)


def test_repeated_epochs_keep_the_resumed_attempt(tmp_path: Path) -> None:
    # killed after epoch 4, restored from the checkpoint of epoch 2, and the kill tore the last line
    _trial_logs(tmp_path / "trial_a", [1, 2, 3, 4, 3, 4], torn=True)
    # Ray appends after a restore without a new header: a key the resumed attempt adds makes rows ragged
    with open(tmp_path / "trial_a" / "progress.csv", "a") as f:
        f.write("4,0.99,t,extra\n")
    _trial_logs(tmp_path / "trial_b", [1, 2], torn=False)
    before_b = (tmp_path / "trial_b" / "progress.csv").read_text()
    assert dedupe_trial_logs(tmp_path) == 2 + 1  # trial_a's result.json: two repeated epochs, one torn line
    rows = [json.loads(line) for line in (tmp_path / "trial_a" / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4]
    assert [round(r["val/acc"], 2) for r in rows] == [0.1, 0.21, 0.34, 0.45]  # epochs 3 and 4 as re-run
    progress = pd.read_csv(tmp_path / "trial_a" / "progress.csv")  # a table again, rebuilt from result.json
    assert progress["training_iteration"].tolist() == [1, 2, 3, 4]
    assert progress["val/acc"].round(2).tolist() == [0.1, 0.21, 0.34, 0.45]
    assert (tmp_path / "trial_b" / "progress.csv").read_text() == before_b  # nothing to drop: untouched
    assert dedupe_trial_logs(tmp_path) == 0  # idempotent


def test_orphaned_optuna_trials_are_closed_and_labelled(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))),
                                direction="maximize")
    done = study.ask()
    study.tell(done, 0.5)
    study.ask(), study.ask()  # asked by a driver that was killed before their trials were snapshotted
    assert fail_orphaned_trials(journal, "s") == 2
    trials = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal)))).trials
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL]
    assert [t.user_attrs.get(ORPHAN_ATTR, False) for t in trials] == [False, True, True]
    assert fail_orphaned_trials(journal, "s") == 0
    assert fail_orphaned_trials(tmp_path / "none.journal", "s") == 0
    assert fail_orphaned_trials(journal, "other") == 0
