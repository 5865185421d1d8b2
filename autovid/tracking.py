"""MLflow tracking: one client, explicit run ids, nested runs, metrics with steps, genotype / α artifacts.

The only module in autovid that imports mlflow. A `Tracker` owns one `MlflowClient` and never touches
mlflow's global "active run" state, so one driver can log many concurrent Tune trials safely:

    Tracker(uri, experiment)
      ├─ start_parent(run_name, params, tags)      -> parent run id   (one per `autovid tune`)
      │    └─ start_child(parent_id, ...)         -> child run id    (one per trial, tag mlflow.parentRunId)
      ├─ log_metrics(run_id, {"val/acc": .5}, step) / log_params / set_tags
      ├─ log_genotype / log_alpha_history / log_table / log_text / log_dict / log_artifact / log_figure
      ├─ log_network(run_id, model, ...)      -> LoggedModel id  (MLflow 3 model, pt2, run's final metrics)
      │    └─ register_model(model_id, name)  -> registry version
      └─ end(run_id, status)

Runs are re-found by tag on resume (`find_run`) instead of being created twice.

An unusable store fails fast: `check_store` refuses an SQLite file that cannot be opened for writing at once
(MLflow itself retries opening a database for about 100 s), `fail_fast()` bounds MLflow's HTTP retries
(by default about 4 minutes per call against a dead server), and `store_unavailable` tells such a failure
from a rejected value, so callers can stop calling a store that is down instead of stalling on every call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import autovid
from autovid.provenance import git_commit

if TYPE_CHECKING:  # heavy imports stay out of module import time
    import pandas as pd
    import torch
    from matplotlib.figure import Figure
    from torch import nn

logger = logging.getLogger(__name__)

# MLflow's own request limits (mlflow.utils.validation: MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH,
# MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH, MAX_ENTITY_KEY_LENGTH in MLflow 3.x).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE_LEN = 6000
MAX_TAG_VALUE_LEN = 8000
MAX_KEY_LEN = 250

# Tag keys. mlflow.* ones are understood by the MLflow UI (nesting, source commit).
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_VERSION = "autovid.version"
TAG_SEARCH_SPACE = "search_space"
TAG_GENOTYPE_HASH = "genotype_hash"
TAG_EXPERIMENT_ID = "autovid.experiment_id"
TAG_TRIAL_ID = "autovid.trial_id"
TAG_MODEL_ID = "autovid.model_id"  # on a registered model version: the LoggedModel it was made from

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
ALPHA_COLUMNS = ("epoch", "cell", "edge", "op", "weight")

# Bounded MLflow HTTP retries for callers that must not stall (MLflow's defaults, 7 retries with backoff
# factor 2 and a 120 s timeout, spend minutes on every call to a dead server). A value the user exported wins.
FAIL_FAST_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

# Keys MLflow accepts: alphanumerics, _ - . space / (and : off Windows); see mlflow.utils.validation.
_VALID_KEY = re.compile(r"^[\w\-. /:]+$")
# Characters a LoggedModel name may not hold (mlflow.utils.validation._validate_logged_model_name).
_LOGGED_MODEL_NAME_BAD = re.compile(r"[/:.%\"']")
MODEL_TYPE = "video-classifier"  # LoggedModel model_type: searchable in the MLflow UI


def default_tracking_uri() -> str:
    """The embedded default: an SQLite file `mlflow.db` in the current working directory (absolute)."""
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv that starts the MLflow UI for `uri`, bound to `host` (loopback unless the user asks otherwise)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--host", host, "--port", str(port)]


def sqlite_path(uri: str) -> Path | None:
    """The database file behind an `sqlite:///...` URI, or None for any other URI (server, in-memory)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    path = unquote(parsed.path)
    if path in ("", "/", "/:memory:"):
        return None
    # sqlite:///rel.db -> path "/rel.db" (relative), sqlite:////abs.db -> "//abs.db" (absolute)
    return Path(path[1:])


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or written (as opposed to MLflow rejecting a value)."""


def check_store(tracking_uri: str) -> None:
    """Raise TrackingUnavailable at once when the SQLite store behind `tracking_uri` cannot be written.

    MLflow retries opening a database ten times with backoff (about 100 s) before it gives up, which for a
    read-only folder or a file that is not a database is a stall, not a recovery. Other stores pass.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingUnavailable(f"cannot create the folder of {db}: {exc}") from exc
    # SQLite writes a journal beside the database: the folder must take a new file, not just the database.
    try:
        with tempfile.NamedTemporaryFile(dir=db.parent, prefix=".mlflow-write-check-"):
            pass
    except OSError as exc:
        raise TrackingUnavailable(f"folder of {db} is not writable: {exc}") from exc
    if not db.exists():
        return
    if not os.access(db, os.R_OK | os.W_OK):
        raise TrackingUnavailable(f"{db} is not writable")
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=5)) as con:
            con.execute("PRAGMA schema_version").fetchone()  # reads the header: "file is not a database"
    except sqlite3.Error as exc:
        raise TrackingUnavailable(f"{db}: {exc}") from exc


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Within the block, MLflow HTTP calls retry a bounded number of times (FAIL_FAST_HTTP_ENV) unless the user set
    those variables; MLflow reads them on every request."""
    added = [key for key in FAIL_FAST_HTTP_ENV if key not in os.environ]
    for key in added:
        os.environ[key] = FAIL_FAST_HTTP_ENV[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the store cannot be reached or written (network, I/O, locked/full/corrupt database)."""
    from mlflow.exceptions import MlflowException, RestException

    outage: tuple[type[BaseException], ...] = (TrackingUnavailable, OSError, sqlite3.OperationalError)
    try:  # mlflow-skinny comes without SQLAlchemy
        import sqlalchemy.exc
        outage += (sqlalchemy.exc.OperationalError,)
    except ImportError:
        pass
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, outage):
            return True  # requests' ConnectionError and Timeout are OSErrors too
        if type(current) is sqlite3.DatabaseError:  # "file is not a database", not an IntegrityError
            return True
        if isinstance(current, RestException) and current.get_http_status_code() >= 500:
            return True
        if isinstance(current, MlflowException) and (
                current.error_code == "TEMPORARILY_UNAVAILABLE"
                or str(current.message).startswith("API request to")):  # the REST client gave up
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters: one warning stays one line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def open_parent(tracking_uri: str, experiment: str, experiment_key: str) -> tuple[Tracker | None, str | None]:
    """A Tracker and the parent run tagged `experiment_key`, or (None, None) after one warning when the store
    is unavailable: callers write their results to disk first and treat MLflow as a copy."""
    try:
        with fail_fast():
            tracker = Tracker(tracking_uri, experiment)
            return tracker, tracker.find_run(TAG_EXPERIMENT_ID, experiment_key)
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the caller its results
        logger.warning("MLflow tracking: store %s unavailable (%s); results are written to disk only",
                       tracking_uri, describe(exc))
        return None, None


def standard_tags(search_space: str | None = None, genotype_hash: str | None = None) -> dict[str, str]:
    """Tags every autovid run carries: git commit, autovid version, and when known search space / genotype hash."""
    tags = {TAG_GIT_COMMIT: git_commit(), TAG_VERSION: autovid.__version__}
    if search_space is not None:
        tags[TAG_SEARCH_SPACE] = str(search_space)
    if genotype_hash is not None:
        tags[TAG_GENOTYPE_HASH] = str(genotype_hash)
    return tags


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> flat `{"a.b.c": "value"}` with string values (lists/tuples JSON-encoded)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        elif isinstance(value, (list, tuple)):
            try:
                flat[name] = json.dumps(value, default=str)
            except (TypeError, ValueError):
                flat[name] = str(value)
        else:
            flat[name] = str(value)
    return flat


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Keep the finite real numbers (bools excluded) of a flat mapping, as floats."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        value = float(value)
        if not math.isfinite(value):
            logger.debug("dropping non-finite metric %s=%s", key, value)
            continue
        out[key] = value
    return out


def alpha_rows(alphas_json: str | Mapping[str, Any], epoch: int) -> list[dict[str, Any]]:
    """One `alphas` report (`{"ops": [...], "normal": [[w]*ops per edge], "reduce": ... | null}`) -> table rows."""
    alphas = json.loads(alphas_json) if isinstance(alphas_json, str) else alphas_json
    ops = list(alphas["ops"])
    rows: list[dict[str, Any]] = []
    for cell in ("normal", "reduce"):
        for edge, weights in enumerate(alphas.get(cell) or []):
            for op, weight in zip(ops, weights, strict=True):
                rows.append({"epoch": int(epoch), "cell": cell, "edge": edge, "op": op,
                             "weight": float(weight)})
    return rows


def alpha_history_frame(history: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (`epoch, cell, edge, op, weight`) -> a typed DataFrame sorted by epoch, cell, edge."""
    import pandas as pd

    df = pd.DataFrame(list(history), columns=list(ALPHA_COLUMNS))
    df = df.astype({"epoch": "int64", "cell": "string", "edge": "int64", "op": "string",
                    "weight": "float64"})
    return df.sort_values(["epoch", "cell", "edge"], kind="stable").reset_index(drop=True)


def alpha_heatmap(df: pd.DataFrame, epoch: int | None = None) -> Figure:
    """Heatmap (edges x ops, one panel per cell type) of the α softmax weights at `epoch` (default: last)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe headless

    epoch = int(df["epoch"].max()) if epoch is None else epoch
    last = df[df["epoch"] == epoch]
    cells = [c for c in ("normal", "reduce") if (last["cell"] == c).any()]
    ops = list(dict.fromkeys(last["op"]))
    fig = Figure(figsize=(1.0 + 0.8 * len(ops) * len(cells), 1.5 + 0.35 * last["edge"].nunique()))
    axes = fig.subplots(1, max(len(cells), 1), squeeze=False)[0]
    for ax, cell in zip(axes, cells, strict=False):
        table = (last[last["cell"] == cell]
                 .pivot_table(index="edge", columns="op", values="weight", aggfunc="mean")
                 .reindex(columns=ops))
        image = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0.0)
        ax.set_title(f"{cell} cell, epoch {epoch}")
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(table.index)), [f"edge {e}" for e in table.index], fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def alpha_trajectory(df: pd.DataFrame) -> Figure:
    """softmax(α) of every operator against the epoch, one panel per (cell, edge): does the search decide?"""
    from matplotlib.figure import Figure

    edges = list(dict.fromkeys(zip(df["cell"], df["edge"])))
    ops = list(dict.fromkeys(df["op"]))
    cols = min(len(edges), 4) or 1
    rows = max(1, -(-len(edges) // cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (cell, edge) in zip(axes, edges):
        part = df[(df["cell"] == cell) & (df["edge"] == edge)]
        for op in ops:
            line = part[part["op"] == op].sort_values("epoch")
            ax.plot(line["epoch"], line["weight"], marker=".", label=op)
        ax.axhline(1.0 / len(ops), color="grey", lw=0.8, ls=":")  # uniform: α has not decided
        ax.set_title(f"{cell} edge {edge}", fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(edges):]:
        ax.set_visible(False)
    axes[0].set_ylabel("softmax(α)", fontsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(ops), 8), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _valid_key(key: str) -> bool:
    return bool(key) and len(key) <= MAX_KEY_LEN and bool(_VALID_KEY.match(key)) and ".." not in key \
        and not key.startswith("/")


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag value for a run search may not contain a quote: {value!r}")
    return f"'{value}'"


@dataclass(frozen=True)
class ManifestLineage:
    """What identifies the data of a run: the manifest file, the digest of the videos it lists, classes, splits."""

    name: str
    source: str
    digest: str  # provenance.manifest_hash: file names, labels, splits, frame counts and probe verdicts
    classes: tuple[str, ...]  # in label order
    splits: dict[str, int]  # usable videos per split
    quarantined: int  # videos the probe refused (status != ok)
    rows: int

    def profile(self) -> dict[str, Any]:
        return {"num_rows": self.rows, "num_classes": len(self.classes), "classes": list(self.classes),
                "splits": dict(self.splits), "quarantined": self.quarantined}


def manifest_lineage(manifest_path: str | Path) -> ManifestLineage:
    """Read a manifest file and describe it for lineage (see ManifestLineage)."""
    from autovid.data.manifest import read_manifest
    from autovid.provenance import manifest_hash

    path = Path(manifest_path).resolve()
    frame = read_manifest(path)
    usable = frame[frame["status"] == "ok"]
    labels = frame.drop_duplicates("label").sort_values("label")
    return ManifestLineage(
        name=path.stem, source=str(path), digest=manifest_hash(frame),
        classes=tuple(str(c) for c in labels["class_name"]),
        splits={str(k): int(v) for k, v in usable["split"].value_counts().sort_index().items()},
        quarantined=int(len(frame) - len(usable)), rows=int(len(frame)))


def _manifest_dataset(lineage: ManifestLineage) -> Any:
    """An mlflow.data Dataset for a manifest: the digest is autovid's manifest hash, the profile its classes and
    split sizes (MLflow's own datasets profile only row counts)."""
    from mlflow.data.dataset import Dataset
    from mlflow.data.dataset_source_registry import get_registered_sources

    # MLflow registers this source class twice (schemes "" and "file"), so resolve_dataset_source warns that a
    # path is ambiguous; both are the same local-file source
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")

    class ManifestDataset(Dataset):  # defined here: mlflow stays out of autovid's import time
        def _compute_digest(self) -> str:
            return lineage.digest

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

        @property
        def profile(self) -> dict[str, Any]:
            return lineage.profile()

        @property
        def schema(self) -> None:
            return None

    return ManifestDataset(source=local(lineage.source), name=lineage.name, digest=lineage.digest)


class SystemMetrics:
    """A running MLflow system metrics monitor (see Tracker.system_metrics)."""

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor

    def finish(self) -> None:
        """Stop sampling; the monitor logs what it gathered since its last batch."""
        self._monitor.finish()


class Tracker:
    """A thin, explicit-run-id wrapper around one `MlflowClient` for one MLflow experiment.

    Methods raise MLflow's exceptions; callers that must never fail (the Tune callback) catch them.
    """

    def __init__(self, tracking_uri: str, experiment: str, *, artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient

        check_store(tracking_uri)  # fail at once, not after MLflow's own retries
        db = sqlite_path(tracking_uri)
        if db is not None:
            if artifact_location is None:  # beside the database, not in whatever cwd the driver has
                artifact_location = (db.resolve().parent / "mlruns").as_uri()
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment_id(experiment, artifact_location)

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # -- runs ------------------------------------------------------------------------------------
    def start_parent(self, run_name: str, params: Mapping[str, Any] | None = None,
                     tags: Mapping[str, Any] | None = None) -> str:
        """Create a top-level run; log `params` (flattened) and return its id."""
        return self._start(run_name, params, dict(tags or {}))

    def start_child(self, parent_id: str, run_name: str, params: Mapping[str, Any] | None = None,
                    tags: Mapping[str, Any] | None = None) -> str:
        """Create a run nested under `parent_id` (tag `mlflow.parentRunId`) and return its id."""
        return self._start(run_name, params, {**dict(tags or {}), TAG_PARENT_RUN_ID: parent_id})

    def _start(self, run_name: str, params: Mapping[str, Any] | None, tags: dict[str, Any]) -> str:
        tags = {k: str(v)[:MAX_TAG_VALUE_LEN] for k, v in tags.items()}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name)
        run_id = run.info.run_id
        if params:
            self.log_params(run_id, params)
        return run_id

    def find_run(self, tag_key: str, tag_value: str, parent_id: str | None = None) -> str | None:
        """Id of the newest non-deleted run with `tag_key == tag_value` (under `parent_id` if given)."""
        filters = [f"tags.`{tag_key}` = {_quote(str(tag_value))}"]
        if parent_id is not None:
            filters.append(f"tags.`{TAG_PARENT_RUN_ID}` = {_quote(parent_id)}")
        runs = self.client.search_runs([self.experiment_id], filter_string=" and ".join(filters),
                                       max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def children(self, parent_id: str) -> list[str]:
        """Ids of all non-deleted runs nested under `parent_id`."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{TAG_PARENT_RUN_ID}` = {_quote(parent_id)}",
                                       max_results=50000)
        return [r.info.run_id for r in runs]

    def open_children(self, parent_id: str, key_tag: str, tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """Run id -> its `key_tag` value, for the RUNNING runs nested under `parent_id` that carry all `tags`."""
        filters = [f"tags.`{TAG_PARENT_RUN_ID}` = {_quote(parent_id)}", "attributes.status = 'RUNNING'"]
        filters += [f"tags.`{k}` = {_quote(str(v))}" for k, v in (tags or {}).items()]
        runs = self.client.search_runs([self.experiment_id], filter_string=" and ".join(filters), max_results=50000)
        return {r.info.run_id: r.data.tags.get(key_tag, "") for r in runs}

    def reopen(self, run_id: str) -> None:
        """Mark a terminated run RUNNING again (resume continues logging into it)."""
        self.client.update_run(run_id, status="RUNNING")

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """Terminate a run with FINISHED, FAILED or KILLED."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        self.client.set_terminated(run_id, status=status)

    def last_step(self, run_id: str, key: str) -> int | None:
        """Largest step logged for metric `key` in `run_id`, or None when it was never logged."""
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=None)

    def last_steps(self, run_id: str) -> dict[str, int]:
        """Largest step logged for every metric key of `run_id`."""
        steps = {key: self.last_step(run_id, key) for key in self.client.get_run(run_id).data.metrics}
        return {key: step for key, step in steps.items() if step is not None}

    def status(self, run_id: str) -> str:
        """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
        return self.client.get_run(run_id).info.status

    # -- values ----------------------------------------------------------------------------------
    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        """Log every finite numeric value of `metrics` at `step`; returns what was logged.

        Non-numeric values are skipped, non-finite ones dropped (debug log), invalid keys skipped.
        """
        from mlflow.entities import Metric

        values = numeric_metrics(metrics)
        for key in [k for k in values if not _valid_key(k)]:
            logger.debug("skipping metric with a name MLflow rejects: %r", key)
            del values[key]
        now = int(time.time() * 1000)
        entities = [Metric(key, value, now, int(step)) for key, value in values.items()]
        for chunk in _chunks(entities, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk, synchronous=True)
        return values

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
        """Log `params` flattened to dotted keys, values cut to MLflow's limit, in batches of 100."""
        from mlflow.entities import Param

        flat = {k: v[:MAX_PARAM_VALUE_LEN] for k, v in flatten_params(params).items()}
        for key in [k for k in flat if not _valid_key(k)]:
            logger.warning("skipping param with a name MLflow rejects: %r", key)
            del flat[key]
        entities = [Param(key, value) for key, value in flat.items()]
        for chunk in _chunks(entities, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        return flat

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set (overwrite) tags, in batches of 100."""
        from mlflow.entities import RunTag

        entities = [RunTag(k, str(v)[:MAX_TAG_VALUE_LEN]) for k, v in tags.items()]
        for chunk in _chunks(entities, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk, synchronous=True)

    # -- artifacts -------------------------------------------------------------------------------
    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file (or directory) to the run's artifact store."""
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """JSON, or YAML when `artifact_file` ends in .yaml/.yml."""
        self.client.log_dict(run_id, dict(dictionary), artifact_file)

    def log_figure(self, run_id: str, figure: Figure, artifact_file: str) -> None:
        """Save a matplotlib Figure (PNG by extension) as an artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            figure.savefig(local, dpi=120, bbox_inches="tight")
            self._log_as(run_id, local, artifact_file)

    def log_table(self, run_id: str, df: pd.DataFrame, name: str) -> None:
        """Write `df` as Parquet (`<name>.parquet` unless `name` has the suffix) and log it."""
        artifact_file = name if name.endswith(".parquet") else f"{name}.parquet"
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            df.to_parquet(local, index=False)
            self._log_as(run_id, local, artifact_file)

    def _log_as(self, run_id: str, local: Path, artifact_file: str) -> None:
        parent = Path(artifact_file).parent.as_posix()
        self.client.log_artifact(run_id, str(local), None if parent in ("", ".") else parent)

    def log_genotype(self, run_id: str, genotype_json: str, prefix: str = "") -> bool:
        """Log `genotype.json` and, when autovid.nas.genotype is importable, the cell diagram `genotype.png`.

        Returns whether the PNG was written. The JSON is always logged (pretty-printed when valid JSON).
        """
        try:
            text = json.dumps(json.loads(genotype_json), indent=2)
        except (TypeError, ValueError):
            text = genotype_json
        self.log_text(run_id, text, f"{prefix}genotype.json")
        try:
            from autovid.nas.genotype import Genotype
        except ImportError:
            logger.debug("autovid.nas.genotype unavailable: genotype diagram skipped")
            return False
        genotype = Genotype.from_json(genotype_json)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "genotype.png"
            genotype.plot(local)
            if not local.exists():
                logger.warning("Genotype.plot wrote no file at %s", local)
                return False
            self._log_as(run_id, local, f"{prefix}genotype.png")
        self.set_tags(run_id, {TAG_GENOTYPE_HASH: genotype.hash})
        return True

    def log_alpha_history(self, run_id: str, history: Iterable[Mapping[str, Any]],
                          name: str = "alpha_history") -> pd.DataFrame:
        """Log α rows (`epoch, cell, edge, op, weight`) as `<name>.parquet`, `<name>.png` (heatmap, last epoch)
        and `<name>_trajectory.png` (every operator's weight per epoch, one panel per edge)."""
        df = alpha_history_frame(history)
        self.log_table(run_id, df, name)
        if len(df):
            self.log_figure(run_id, alpha_heatmap(df), f"{name}.png")
            self.log_figure(run_id, alpha_trajectory(df), f"{name}_trajectory.png")
        return df

    # -- lineage and system metrics ----------------------------------------------------------------
    def log_manifest(self, run_id: str, manifest: str | Path | ManifestLineage, *,
                     context: str = "training") -> ManifestLineage:
        """Log a manifest (a file, or its `manifest_lineage`) as the run's MLflow dataset input (what
        `mlflow.log_input` logs, through this Tracker's client): name, source path, digest and a profile with the
        classes and the size of every split. Logging the same manifest to a run twice (a resume) adds nothing."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        lineage = manifest if isinstance(manifest, ManifestLineage) else manifest_lineage(manifest)
        dataset = _manifest_dataset(lineage)
        self.client.log_inputs(run_id, datasets=[
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])
        return lineage

    def datasets(self, run_id: str) -> list[dict[str, Any]]:
        """The dataset inputs of a run: `{"name", "digest", "source", "profile", "context"}` each."""
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        found = []
        for item in self.client.get_run(run_id).inputs.dataset_inputs:
            tags = {t.key: t.value for t in item.tags}
            found.append({"name": item.dataset.name, "digest": item.dataset.digest, "source": item.dataset.source,
                          "profile": json.loads(item.dataset.profile or "{}"),
                          "context": tags.get(MLFLOW_DATASET_CONTEXT)})
        return found

    def system_metrics(self, run_id: str, *, interval_s: float = 10.0) -> SystemMetrics:
        """Start MLflow's system metrics monitor for `run_id` (`system/cpu_utilization_percentage`,
        `system/system_memory_usage_megabytes`, ..., GPU ones where pynvml sees a GPU), sampled every `interval_s`
        seconds in a thread of this process; call `finish()` on what is returned to stop it (it logs a last batch)."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # resume_logging: a resumed run continues its system/* steps instead of starting at 0 again
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, samples_before_logging=1,
                                       resume_logging=True, tracking_uri=self.tracking_uri)
        monitor.start()
        return SystemMetrics(monitor)

    # -- models ----------------------------------------------------------------------------------
    def log_network(self, run_id: str, model: nn.Module, *, name: str, input_example: torch.Tensor,
                    metadata: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                    step: int | None = None) -> str:
        """Log `model` as an MLflow 3 LoggedModel produced by run `run_id`; returns its model id.

        The pytorch flavor saves a torch.export archive (`serialization_format="pt2"`): a traced graph and its
        tensors, which loads (`mlflow.pytorch.load_model("models:/<id>")`) without autovid's code; with
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false MLflow first checks that every record of the archive is plain
        tensors and data (torch's weights-only unpickler), so loading runs no code from it. `input_example` (a CPU batch
        of clips) traces the graph and, with the logits it gives, makes the signature; torch.export keeps the
        batch dimension dynamic only when the example's batch is larger than 1. The run's metrics at `step`
        (default: its last step) are linked to the model, and the run lists the model as an output.

        Everything goes through this Tracker's client: no active run, experiment or tracking URI is set
        globally (`mlflow.pytorch.log_model` would resolve all three from global state).
        """
        import mlflow.pytorch
        import torch
        from mlflow.entities import LoggedModelOutput, Metric
        from mlflow.models import Model, infer_signature

        model = model.eval()
        with torch.no_grad():
            logits = model(input_example)
        example = input_example.detach().cpu().numpy()
        signature = infer_signature(example, logits.detach().cpu().numpy())
        run = self.client.get_run(run_id)
        logged = self.client.create_logged_model(
            run.info.experiment_id, name=_LOGGED_MODEL_NAME_BAD.sub("-", name) or "model", source_run_id=run_id,
            tags={k: str(v)[:MAX_TAG_VALUE_LEN] for k, v in (tags or {}).items()},
            params=dict(run.data.params),  # the run's resolved config, as mlflow's log_model copies it
            model_type=MODEL_TYPE)
        model_id = logged.model_id
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "model"
                mlflow.pytorch.save_model(
                    model, str(local), signature=signature, input_example=example,
                    metadata=dict(metadata or {}), serialization_format="pt2",
                    mlflow_model=Model(artifact_path=logged.artifact_location, run_id=run_id,
                                       model_uuid=model_id, model_id=model_id),
                    # given, not inferred: inference loads the model again in a subprocess to watch its imports
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
                self.client.log_model_artifacts(model_id, str(local))
            if step is None:
                step = max(self.last_steps(run_id).values(), default=0)
            self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=int(step))])
            # The model's metrics are the run's at that step, logged again with the model id (what
            # mlflow's log_model does); the run keeps one point per (key, step, timestamp, value).
            linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id)
                      for key in run.data.metrics for m in self.client.get_metric_history(run_id, key)
                      if m.step == step and m.model_id is None]
            for chunk in _chunks(linked, MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=chunk, synchronous=True)
            self.client.finalize_logged_model(model_id, "READY")
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one worth raising
                self.client.finalize_logged_model(model_id, "FAILED")
            raise
        return model_id

    def model_at(self, run_id: str, step: int) -> str | None:
        """Id of a READY LoggedModel that run `run_id` lists as its output at `step`, if any: a resumed
        experiment whose retrain had already finished finds its model instead of logging it twice."""
        from mlflow.entities import LoggedModelStatus

        outputs = self.client.get_run(run_id).outputs
        for output in outputs.model_outputs if outputs is not None else []:
            if output.step == step and self.client.get_logged_model(output.model_id).status == LoggedModelStatus.READY:
                return output.model_id
        return None

    def register_model(self, model_id: str, name: str) -> int:
        """Register LoggedModel `model_id` in the Model Registry as a new version of `name` (created on first
        use); returns the version number. The LoggedModel's `mlflow.modelVersions` tag lists its versions."""
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        logged = self.client.get_logged_model(model_id)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        # The model's artifact location, not `models:/<id>`: MLflow's SQL registry resolves such a URI
        # through the global tracking URI, which this Tracker never sets.
        version = self.client.create_model_version(name, source=logged.artifact_location,
                                                   run_id=logged.source_run_id, model_id=model_id,
                                                   tags={TAG_MODEL_ID: model_id})
        versions = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
        versions.append({"name": version.name, "version": version.version})
        self.client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})
        return int(version.version)


def load_pytorch_model(uri: str, *, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The network logged at an MLflow model URI (`runs:/<run>/<name>`, `models:/<id>` or `models:/<name>/<version>`)
    and the `metadata` dict it was logged with (`{}` when none), from `tracking_uri` (default: MLFLOW_TRACKING_URI,
    else `mlflow.db` here). Loading never unpickles: MLflow allows pickled models by default
    (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true in MLflow 3), so unless the user set that variable it is false for
    the load, and MLflow then refuses a pickled model and checks a pt2 archive's records with torch's
    weights-only unpickler. Errors are UserErrors.
    """
    import mlflow
    import mlflow.pytorch

    from autovid.errors import UserError

    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    db = sqlite_path(store)
    if db is not None and not db.is_file():  # MLflow would create an empty store and then not find the model
        raise UserError(f"{uri}: no MLflow store at {db} (give --tracking-uri)")
    # Model URIs resolve through the global tracking URI only. MLflow mirrors it in MLFLOW_TRACKING_URI, so the
    # variable's old value (None: unset) is what to restore.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(store)
    # unset by the user: progress bars off (they would bury the one-line messages), pickles refused
    defaults = {k: "false" for k in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
                if k not in os.environ}
    os.environ.update(defaults)
    try:
        with fail_fast():
            info = mlflow.models.get_model_info(uri)
            model = mlflow.pytorch.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - unknown run or model, refused pickle, store down: one line
        raise UserError(f"cannot load {uri} from {store}: {describe(exc)}") from None
    finally:
        mlflow.set_tracking_uri(previous)
        for key in defaults:
            os.environ.pop(key, None)
    return model, dict(info.metadata or {})
