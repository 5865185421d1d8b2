"""After a resumed experiment: Ray's per-trial logs and the Optuna journal read as one uninterrupted run.

A driver killed between a trial's report and the next experiment snapshot makes the resumed trial repeat the
epochs after its last recorded checkpoint. Ray appends those reports again to the trial's `result.json` and
`progress.csv` (epochs 1, 2, 3, 4, 4), and the Optuna journal keeps the trials the killed driver had asked
for but the restored searcher never heard of, RUNNING for ever. Once `Tuner.fit` returns:

    result.json / progress.csv  ─▶ one row per training_iteration, the last attempt's (the resumed timeline)
    optuna.journal              ─▶ trials still RUNNING marked FAIL, tagged `autovid.orphaned_by_resume`
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from autovid.files import is_remote, write_csv_atomic, write_text_atomic

log = logging.getLogger(__name__)

ORPHAN_ATTR = "autovid.orphaned_by_resume"


def dedupe_trial_logs(experiment_path: str | Path) -> int:
    """Keep the last report of each training_iteration in every trial's logs; returns the rows dropped."""
    root = Path(experiment_path)
    if is_remote(experiment_path) or not root.is_dir():
        return 0
    dropped = 0
    for trial_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        dropped += _dedupe_trial(trial_dir)
    if dropped:
        log.info("resume: dropped %d repeated report rows from the trial logs under %s", dropped, root)
    return dropped


def _dedupe_trial(trial_dir: Path) -> int:
    """result.json (JSON lines) is the record; progress.csv is rewritten from it when rows were dropped.

    Ray appends to progress.csv after a restore without rewriting its header, so once a resumed trial reports
    a key the first attempt did not, that file is not even a table any more: it is rebuilt, not edited."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by the kill: the resumed attempt reported that epoch again
    kept = _last_per_iteration(rows)
    if len(kept) == len(lines):
        return 0
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))
    progress = trial_dir / "progress.csv"
    if progress.is_file():
        # as Ray writes it: the config left out, nested values flattened with "/"
        table = pd.json_normalize([{k: v for k, v in row.items() if k != "config"} for row in kept], sep="/")
        write_csv_atomic(table, progress)
    return len(lines) - len(kept)


def _last_per_iteration(rows: list[dict]) -> list[dict]:
    by_iteration: dict[int, dict] = {}
    for row in rows:
        by_iteration[int(row.get("training_iteration", 0))] = row  # later attempts replace earlier ones
    return [by_iteration[i] for i in sorted(by_iteration)]


def fail_orphaned_trials(journal: str | Path, study_name: str) -> int:
    """Mark the journal's trials that are still RUNNING after the experiment ended as FAIL; returns how many.

    The journal is append-only: a killed driver's asks cannot be taken back, only closed and labelled."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not Path(journal).is_file():
        return 0
    storage = JournalStorage(JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0  # no study of that name (the searcher never asked)
    orphans = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for trial in orphans:
        storage.set_trial_user_attr(trial._trial_id, ORPHAN_ATTR, True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if orphans:
        log.info("resume: %d Optuna trials asked by the interrupted driver were closed as FAIL (%s)",
                 len(orphans), ", ".join(str(t.number) for t in orphans))
    return len(orphans)
