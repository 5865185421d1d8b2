"""The Optuna study behind an experiment: its journal file, matplotlib plots, and the optuna-dashboard command.

    <storage_path>/<name>/optuna.journal  (written by OptunaSearch during `autovid tune`)
      ├─ study_figures(): optimization history, parameter importances, Pareto front (PNG via matplotlib)
      └─ dashboard_command(): `optuna-dashboard` on that journal, bound to 127.0.0.1
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autovid.errors import UserError
from autovid.files import is_remote

if TYPE_CHECKING:  # optuna and matplotlib stay out of `autovid --help`
    import optuna
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"


def journal_storage(journal: str | Path) -> Any:
    """The JournalStorage over one journal file (Optuna's file lock: safe beside a running study)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal)))


def load_study(experiment_dir: str | Path, study_name: str) -> optuna.Study | None:
    """The experiment's study, or None when it has no journal (remote storage, a random searcher)."""
    import optuna

    journal = Path(experiment_dir) / JOURNAL
    if is_remote(experiment_dir) or not journal.is_file():
        return None
    try:
        return optuna.load_study(study_name=study_name, storage=journal_storage(journal))
    except KeyError:  # no study of that name in the journal
        return None


def study_figures(study: optuna.Study, metric_names: Sequence[str]) -> dict[str, Figure]:
    """PNG-ready matplotlib figures of a study, by artifact file name.

    `optuna_history.png` always (one per objective: `optuna_history_<metric>.png`), `optuna_importances.png`
    (likewise one per objective) once two trials completed with at least one parameter that took two values
    (PED-ANOVA has nothing to compare before), and
    `optuna_pareto.png` for studies of two or three objectives. A plot Optuna refuses (a degenerate study) is
    skipped with a warning: these are views of results already on disk."""
    import matplotlib
    import matplotlib.pyplot as plt  # Optuna's matplotlib backend draws with pyplot
    import optuna
    from optuna.visualization import matplotlib as ovm

    names = list(metric_names)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots: dict[str, Any] = {}
    for i, name in enumerate(names):
        target = (lambda t, i=i: t.values[i]) if len(names) > 1 else None
        plots[f"optuna_history{'_' + _slug(name) if len(names) > 1 else ''}.png"] = (
            lambda target=target, name=name: ovm.plot_optimization_history(study, target=target, target_name=name))
    varied = [p for p in {k for t in complete for k in t.params}
              if len({repr(t.params.get(p)) for t in complete}) > 1]
    if len(complete) >= 2 and varied and len(names) == 1:
        plots["optuna_importances.png"] = lambda: ovm.plot_param_importances(study, target_name=names[0])
    elif len(complete) >= 2 and varied:
        # one plot per objective: PED-ANOVA ranks parameters by how they reach *low* target values, so a
        # maximised objective is negated (without a target Optuna would rank every objective for minimising)
        for i, (name, direction) in enumerate(zip(names, study.directions)):
            sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
            plots[f"optuna_importances_{_slug(name)}.png"] = (
                lambda i=i, sign=sign, name=name: ovm.plot_param_importances(
                    study, target=lambda t: sign * t.values[i], target_name=name))
    if len(names) in (2, 3) and complete:
        plots["optuna_pareto.png"] = lambda: ovm.plot_pareto_front(study, target_names=names)
    figures: dict[str, Figure] = {}
    for artifact, draw in plots.items():
        try:
            # Optuna's plots call plt.style.use("ggplot"), a global rcParams change: keep it inside this plot
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # the direction caveat of a given target: handled above by negating maximised objectives
                warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
                axes = draw()
        except Exception as exc:  # noqa: BLE001 - a plot Optuna cannot draw must not cost the others
            log.warning("Optuna plot %s skipped (%s: %s)", artifact, type(exc).__name__, exc)
            plt.close("all")
            continue
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        figure.set_size_inches(max(figure.get_figwidth(), 6.4), max(figure.get_figheight(), 4.8))
        plt.close(figure)  # detached from pyplot's registry (no leak across a long driver); still savable
        figures[artifact] = figure
    return figures


def _slug(metric: str) -> str:
    return metric.replace("/", "_")


def find_journal(experiment: str, storage_path: str | Path) -> Path:
    """The journal of `experiment`: a name under `storage_path`, an experiment folder, or the journal itself."""
    candidates = [Path(experiment), Path(experiment) / JOURNAL, Path(storage_path) / experiment / JOURNAL]
    for path in candidates:
        if path.is_file() and path.name == JOURNAL:
            return path.resolve()
    known = (
        sorted(p.parent.name for p in Path(storage_path).glob(f"*/{JOURNAL}")) if Path(storage_path).is_dir() else []
    )
    hint = f"; experiments with a study under {storage_path}: {', '.join(known)}" if known else \
        f"; no experiment under {storage_path} has one"
    raise UserError(f"no Optuna study found for {experiment!r} (looked for {JOURNAL} in {candidates[0]} and "
                    f"{Path(storage_path) / experiment}){hint}")


def check_journal(journal: str | Path) -> None:
    """Raise a one-line UserError unless `journal` reads as an Optuna journal (optuna-dashboard, given a corrupt one,
    dies with a traceback). Reads only: a study writing to it meanwhile is not disturbed."""
    try:
        journal_storage(journal).get_all_studies()
    except Exception as exc:  # noqa: BLE001 - whatever Optuna fails with on the file, it is the file's fault
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{journal}: not a readable Optuna journal ({type(exc).__name__}: {detail})") from None


def dashboard_command(journal: str | Path, host: str = "127.0.0.1", port: int = 8080) -> list[str]:
    """argv that starts optuna-dashboard on one journal file, bound to `host` (loopback unless asked)."""
    # optuna_dashboard has no __main__ module; its CLI module runs main() when executed
    return [sys.executable, "-m", "optuna_dashboard._cli", str(journal), "--storage-class", "JournalFileStorage",
            "--host", host, "--port", str(port)]
