"""Video manifests: index a dataset (UCF101, HMDB51, class folders, CSV), probe each file once, store Parquet."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import select
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd

from autovid.data.backends import resolve as resolve_decoder
from autovid.data.decoding import ProbeOutcome
from autovid.errors import UserError, printable

log = logging.getLogger(__name__)

ManifestFormat = Literal["ucf101", "hmdb51", "folder", "csv"]
FORMATS: tuple[str, ...] = ("ucf101", "hmdb51", "folder", "csv")

# One row per video. ``path`` is absolute; ``label`` 0-based; ``split`` "train" / "test" (csv may add others);
# ``status`` "ok" or "quarantined" with a short ``reason`` tag (missing, empty, unreadable, no_frames,
# decode_error, crashed, and, found without opening the file: broken_link, directory, special_file);
# metadata columns are 0 for quarantined rows.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "label", "class_name", "split", "num_frames", "fps", "width", "height", "duration", "status", "reason",
)
_DTYPES = {
    "path": "string", "label": "int64", "class_name": "string", "split": "string", "num_frames": "int64",
    "fps": "float64", "width": "int64", "height": "int64", "duration": "float64", "status": "string",
    "reason": "string",
}
DECODER_ATTR = "decoder"  # DataFrame.attrs key (Parquet metadata in the file): the backend that probed the files
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"})
_GROUP = re.compile(r"_g(\d+)_", re.IGNORECASE)
_LABEL = re.compile(r"[0-9]+")  # the optional class number that ends a UCF101 split-list line
TEST_FRACTION = 0.3  # of the groups of each class, for formats without official split files


class Entry(NamedTuple):
    """A video listed by a dataset's split files or folders, before probing."""

    path: Path
    class_name: str
    split: str


class Listing(NamedTuple):
    """All entries of one dataset split plus the class names in label order, and the files the listing was read
    from (split lists, classInd.txt, the csv): inputs that no output of `autovid data index` may replace."""

    entries: list[Entry]
    class_names: list[str]
    sources: tuple[Path, ...] = ()


# ---------------------------------------------------------------------------------------------- formats


def _read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines; tolerates Windows line endings and a UTF-8 BOM."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _split_list_path(line: str) -> str:
    """The video path of a UCF101 split-list line ``<path>[ <label>]``, with ``/`` separators.

    The label, when present, is the integer after the last whitespace; everything before it is the path,
    so folder and file names may contain spaces (``Apply Eye Makeup/v_x.avi 1``).
    """
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and _LABEL.fullmatch(parts[1]):
        line = parts[0]
    return line.replace("\\", "/")


def _find_splits_dir(root: Path, splits_dir: Path | None, archive_dir: str, probe: Callable[[Path], bool]) -> Path:
    candidates = [splits_dir] if splits_dir is not None else [root, root / archive_dir, root.parent / archive_dir]
    for cand in candidates:
        if cand.is_dir() and probe(cand):
            return cand
    where = ", ".join(str(c) for c in candidates)
    raise UserError(f"split files not found (looked in {where}); pass --splits DIR")


def _list_ucf101(root: Path, split: int, splits_dir: Path | None) -> Listing:
    sdir = _find_splits_dir(root, splits_dir, "ucfTrainTestlist", lambda d: (d / "classInd.txt").is_file())
    class_names: list[str] = []
    for line in _read_lines(sdir / "classInd.txt"):
        number, name = (line.split(None, 1) + [""])[:2]  # any whitespace after the number; the name may have spaces
        if not _LABEL.fullmatch(number) or int(number) != len(class_names) + 1 or not name.strip():
            raise UserError(f"{sdir / 'classInd.txt'}: expected '<n> <ClassName>' numbered from 1, got {line!r}")
        class_names.append(name.strip())
    by_lower = {name.lower(): name for name in class_names}
    entries = []
    for split_name, stem in (("train", "trainlist"), ("test", "testlist")):
        list_file = sdir / f"{stem}{split:02d}.txt"
        if not list_file.is_file():
            raise UserError(f"split file not found: {list_file}")
        for line in _read_lines(list_file):
            rel = _split_list_path(line)
            folder = rel.split("/")[0]
            # The label comes from the folder, never the file name: UCF101 stores v_HandStandPushups_*
            # in HandstandPushups/.
            if folder.lower() not in by_lower:
                raise UserError(f"{list_file}: class folder {folder!r} is not in classInd.txt")
            entries.append(Entry(root / rel, by_lower[folder.lower()], split_name))
    sources = (sdir / "classInd.txt", sdir / f"trainlist{split:02d}.txt", sdir / f"testlist{split:02d}.txt")
    return Listing(entries, class_names, sources)


def _list_hmdb51(root: Path, split: int, splits_dir: Path | None) -> Listing:
    suffix = f"_test_split{split}.txt"
    sdir = _find_splits_dir(root, splits_dir, "testTrainMulti_7030_splits", lambda d: any(d.glob(f"*{suffix}")))
    files = sorted(sdir.glob(f"*{suffix}"))
    class_names = sorted(f.name[: -len(suffix)] for f in files)
    entries = []
    for f in files:
        class_name = f.name[: -len(suffix)]
        for line in _read_lines(f):
            parts = line.rsplit(None, 1)  # the tag follows the last whitespace: file names may contain spaces
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"{f}: expected '<video> <0|1|2>', got {line!r}")
            if parts[1] != "0":  # 0 = not used in this split
                entries.append(Entry(root / class_name / parts[0], class_name, "train" if parts[1] == "1" else "test"))
    return Listing(entries, class_names, tuple(files))


def group_of(path: str | Path) -> str:
    """The group a video belongs to: ``NN`` from ``_gNN_`` in its name, else the file stem (its own group)."""
    name = Path(path).name
    match = _GROUP.search(name)
    return f"g{int(match.group(1)):04d}" if match else Path(path).stem


def assign_group_splits(groups: Sequence[str], split: int = 1, test_fraction: float = TEST_FRACTION) -> list[str]:
    """Deterministic train/test labels that keep each group on one side.

    The sorted distinct groups of one class are cut into a test window of ``round(test_fraction * G)``
    groups (at least one when there are two or more), rotated by ``split`` like UCF101's three splits.
    """
    distinct = sorted(set(groups))
    g = len(distinct)
    n_test = max(1, round(test_fraction * g)) if g >= 2 else 0
    start = ((split - 1) * n_test) % g if g else 0
    test = {distinct[(start + i) % g] for i in range(n_test)}
    return ["test" if grp in test else "train" for grp in groups]


def _split_by_groups(items: list[tuple[Path, str]], split: int) -> list[Entry]:
    """(path, class) pairs -> entries (same order) with a group-preserving split computed per class."""
    side: dict[Path, str] = {}
    for cls in sorted({c for _, c in items}):
        paths = [p for p, c in items if c == cls]
        side.update(zip(paths, assign_group_splits([group_of(p) for p in paths], split)))
    return [Entry(path, cls, side[path]) for path, cls in items]


def _list_folder(root: Path, split: int) -> Listing:
    # Everything named like a video is listed, whatever it is: a dangling symlink, a folder or a FIFO
    # called x.avi is then quarantined by build_manifest and shows in the summary instead of vanishing.
    items = [
        (f, d.name)
        for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
        for f in sorted(d.iterdir()) if f.suffix.lower() in VIDEO_EXTENSIONS
    ]
    if not items:
        raise UserError(f"no videos found in class folders under {root} (expected ROOT/<class>/<video>)")
    return Listing(_split_by_groups(items, split), sorted({cls for _, cls in items}))


def _list_csv(csv_path: Path, split: int) -> Listing:
    if not csv_path.is_file():
        raise UserError(f"csv manifest not found: {csv_path}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{csv_path}: the csv file is empty; expected a header path,label[,split] and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{csv_path}: not a readable csv file ({' '.join(str(exc).split())})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; expected path,label[,split]")
    if table.empty:
        raise UserError(f"{csv_path}: the csv file has a header but no rows")
    labels = table["label"].str.strip()
    if labels.str.fullmatch(r"\d+").all():  # integer labels: keep their numbering
        numbers = labels.astype(int)
        names = sorted(set(numbers))
        class_names = [str(i) for i in range(max(names) + 1)]
        classes = [str(n) for n in numbers]
    else:
        class_names = sorted(set(labels))
        classes = list(labels)
    paths = [Path(p) if Path(p).is_absolute() else csv_path.parent / p for p in table["path"].str.strip()]
    if "split" in table.columns:
        entries = [Entry(p, c, s.strip().lower()) for p, c, s in zip(paths, classes, table["split"])]
    else:
        entries = _split_by_groups(list(zip(paths, classes)), split)
    return Listing(entries, class_names, (csv_path,))


def _refuse_cross_split_duplicates(entries: Sequence[Entry]) -> None:
    """Raise :class:`UserError` when one file (after resolving symlinks and ``..``) is listed in two splits.

    A video in both train and test (for instance a symlink in a train folder pointing at a test video)
    leaks the test set into training and silently inflates every accuracy.
    """
    first_seen: dict[str, Entry] = {}
    for entry in entries:
        real = os.path.realpath(entry.path)
        first = first_seen.setdefault(real, entry)
        if first.split != entry.split:
            raise UserError(
                f"the same video is in two splits: {first.path} ({first.split}) and {entry.path} ({entry.split}) "
                f"are both {real}"
            )


def list_videos(
    root: str | Path, fmt: ManifestFormat, *, split: int = 1, splits_dir: str | Path | None = None
) -> Listing:
    """The videos a dataset declares, with classes and train/test split, without opening any file.

    Raises :class:`UserError` for a missing root or split file, a listing with no videos, and a file
    listed in two splits.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown manifest format {fmt!r}; valid: {', '.join(FORMATS)}")
    if split < 1:
        raise UserError(f"split must be >= 1, got {split}")
    root = Path(root)
    sdir = Path(splits_dir) if splits_dir is not None else None
    if fmt == "csv":
        listing = _list_csv(root, split)
    else:
        if not root.is_dir():
            raise UserError(f"dataset root not found: {root}")
        if sdir is not None and not sdir.is_dir():
            raise UserError(f"splits folder not found: {sdir}")
        if fmt == "ucf101":
            listing = _list_ucf101(root, split, sdir)
        elif fmt == "hmdb51":
            listing = _list_hmdb51(root, split, sdir)
        else:
            listing = _list_folder(root, split)
    if not listing.entries:
        raise UserError(f"{root}: the {fmt} split {split} lists no videos")
    _refuse_cross_split_duplicates(listing.entries)
    return listing


# ---------------------------------------------------------------------------------------------- probing


_CHILD = "import sys; from autovid.data.decoding import serve_probes; serve_probes(backend=sys.argv[1])"


class _ProbeChild:
    """One probing subprocess (see :func:`autovid.data.decoding.serve_probes`), asked one file at a time."""

    def __init__(self, backend: str) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # importable without an install, too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        # stderr is dropped: the decoders and FFmpeg complain about every bad file; the manifest keeps the reason
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, backend], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # opened by PIPE
        self.requests, self.replies = self.proc.stdin, self.proc.stdout

    def probe(self, path: str, timeout: float) -> ProbeOutcome | None:
        """The outcome for ``path``, or None when the child died or hung on it (then it is killed)."""
        try:
            self.requests.write(json.dumps(path) + "\n")
            self.requests.flush()
            ready, _, _ = select.select([self.replies], [], [], timeout)
            line = self.replies.readline() if ready else ""
        except (BrokenPipeError, OSError):
            line = ""
        if line:
            return ProbeOutcome.from_json(line)
        self.close()
        return None

    def crash_detail(self, timeout: float) -> str:
        code = self.proc.returncode
        if code is None or code == -signal.SIGKILL:
            return f"the decoder did not finish in {timeout:.0f} s"
        if code < 0:
            return f"the decoder killed the probing process ({signal.Signals(-code).name})"
        return f"the probing process exited with code {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.requests.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _probe_worker(jobs: queue.SimpleQueue, results: list[ProbeOutcome | None], timeout: float,
                  done: Callable[[int], object], backend: str) -> None:
    """Thread body: feed files to a child until the queue is empty; replace the child when it dies."""
    child: _ProbeChild | None = None
    try:
        while True:
            try:
                i, path = jobs.get_nowait()
            except queue.Empty:
                return
            child = child or _ProbeChild(backend)
            outcome = child.probe(path, timeout)
            if outcome is None:  # this file crashed (or hung) the decoder: it alone is quarantined
                outcome = ProbeOutcome(None, "crashed", child.crash_detail(timeout))
                child = None
            results[i] = outcome
            done(1)
    finally:
        if child is not None:
            child.close()


def probe_files(
    paths: Sequence[str], *, workers: int | None = None, progress: bool = False, timeout: float = 120.0,
    decoder: str = "auto",
) -> list[ProbeOutcome]:
    """Probe every file in child processes with ``decoder`` (a name of :data:`autovid.data.backends.DECODERS`);
    the outcomes come back in order.

        paths ─▶ queue ─▶ N threads, each driving one `python -c serve_probes` child (one file at a time)
                              │ child dies (a decoder abort / segfault) or hangs past `timeout`
                              ▼
                      that file: "crashed"; a fresh child takes the rest of the queue

    A child is a plain subprocess (not multiprocessing): it never re-imports the caller's ``__main__``
    and starts in a fraction of a second.
    """
    from tqdm import tqdm  # progress bar only when asked for

    backend = resolve_decoder(decoder)  # in this process: a missing package is one error, not a crashed child per file

    results: list[ProbeOutcome | None] = [None] * len(paths)
    if not paths:
        return []
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for item in enumerate(paths):
        jobs.put(item)
    n_workers = max(1, min(workers or min(os.cpu_count() or 1, 8), len(paths)))
    with tqdm(total=len(paths), desc="probing", unit="video", disable=not progress) as bar:
        threads = [
            threading.Thread(target=_probe_worker, args=(jobs, results, timeout, bar.update, backend), daemon=True)
            for _ in range(n_workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [r if r is not None else ProbeOutcome(None, "crashed", "not probed") for r in results]


# ---------------------------------------------------------------------------------------------- manifests


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def not_a_regular_file(path: str | Path) -> ProbeOutcome | None:
    """The quarantine outcome for a path that is no regular file, found without opening it; else None.

    Such paths never reach the probing children: opening a FIFO blocks until the probe timeout, and a
    folder or a dangling link would be reported with a misleading decoder message. A plain missing
    path returns None: the probe reports it as ``missing``.
    """
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to a good video is a good video
    except OSError:
        if os.path.islink(path):  # dangling, or a loop of links
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return ProbeOutcome(None, "broken_link", f"symlink to a missing or looping target: {target}")
        return None
    if stat.S_ISDIR(mode):
        return ProbeOutcome(None, "directory", "a folder named like a video")
    for is_kind, kind in _SPECIAL:
        if is_kind(mode):
            return ProbeOutcome(None, "special_file", f"{kind}, not a regular file")
    return None


def build_manifest(
    root: str | Path,
    fmt: ManifestFormat,
    *,
    split: int = 1,
    splits_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    listing: Listing | None = None,
    decoder: str = "auto",
) -> pd.DataFrame:
    """Index a dataset: list its videos (see :func:`list_videos`), probe each once in parallel, one row each.

    Unusable files never raise: they become ``status="quarantined"`` rows with a ``reason``. A missing
    root, splits folder or split file, an empty listing or a file in two splits raises :class:`UserError`.

    ``listing``: the result of :func:`list_videos` for these arguments when the caller already has it (the
    CLI lists first, to check ``--out`` against every listed file before hours of probing).

    ``decoder``: the backend that probes (``auto`` resolved here); its name is kept in ``attrs["decoder"]``,
    which :func:`write_manifest` stores in the Parquet file (see :func:`manifest_decoder`).

    Returns:
        DataFrame with :data:`MANIFEST_COLUMNS`, in listing order.
    """
    backend = resolve_decoder(decoder)
    if listing is None:
        listing = list_videos(root, fmt, split=split, splits_dir=splits_dir)
    label_of = {name: i for i, name in enumerate(listing.class_names)}
    paths = [os.path.abspath(e.path) for e in listing.entries]
    outcomes: list[ProbeOutcome | None] = [not_a_regular_file(p) for p in paths]
    to_probe = [i for i, outcome in enumerate(outcomes) if outcome is None]
    for i, probed in zip(to_probe, probe_files([paths[i] for i in to_probe], workers=workers, progress=progress,
                                                          decoder=backend)):
        outcomes[i] = probed
    rows = []
    quarantined: list[tuple[str, str, str]] = []
    for entry, path, outcome in zip(listing.entries, paths, outcomes):
        assert outcome is not None  # every file was either refused before probing or probed
        info = outcome.info
        if info is None:
            quarantined.append((path, outcome.reason, outcome.detail))
        rows.append({
            "path": path, "label": label_of[entry.class_name], "class_name": entry.class_name, "split": entry.split,
            "num_frames": info.num_frames if info else 0, "fps": info.fps if info else 0.0,
            "width": info.width if info else 0, "height": info.height if info else 0,
            "duration": info.duration if info else 0.0,
            "status": "ok" if info else "quarantined", "reason": "" if info else outcome.reason,
        })
    for line in quarantine_warnings(quarantined):
        log.warning("%s", line)
    frame = _typed(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))
    frame.attrs[DECODER_ATTR] = backend
    return frame


def manifest_decoder(df: pd.DataFrame) -> str | None:
    """The decoder backend that probed a manifest's files, or None for a manifest written before it was recorded.

    Frame counts and quarantine reasons mean the same for every backend (:mod:`autovid.data.backends`), so a
    manifest probed by one backend serves training with another; the name records where the counts came from.
    """
    value = df.attrs.get(DECODER_ATTR)
    return str(value) if value else None


QUARANTINE_SHOWN = 20  # quarantined files named one by one in the log; the rest are counted in one line


def quarantine_warnings(quarantined: Sequence[tuple[str, str, str]], *, shown: int = QUARANTINE_SHOWN) -> list[str]:
    """The log lines for quarantined files, each ``(path, reason, detail)``: the first ``shown`` by name, then
    one line counting the rest (a dataset of 100,000 broken files must not log 100,000 lines). Names come from
    the dataset and are escaped: a newline in a file name cannot forge a log line."""
    lines = [f"quarantined {printable(path)} ({printable(reason)}: {printable(detail)})"
             for path, reason, detail in quarantined[:shown]]
    if len(quarantined) > shown:
        lines.append(f"... and {len(quarantined) - shown:,} more quarantined files (see the manifest's reason column)")
    return lines


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(_DTYPES).reset_index(drop=True)


def check_manifest_destination(path: str | Path, *, what: str = "manifest destination") -> Path:
    """Raise :class:`UserError` unless a manifest can be written at ``path``; call it before indexing.

    ``path`` may be absent or a regular file (overwritten); the nearest folder that exists above it must
    be a writable folder (missing ones are created). ``what`` names the path in the message (``--out``).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name such as {path / 'manifest.parquet'}")
    if path.exists() and not path.is_file():
        raise UserError(f"{what} {path} exists and is not a regular file")
    for parent in path.parents:
        if os.path.lexists(parent):  # lexists: a dangling link is in the way, not absent
            if not parent.is_dir():
                raise UserError(f"{what} {path}: {parent} is not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{what} {path}: no permission to write in {parent}")
            break
    return path


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest as Parquet (pyarrow); readable by ``pd.read_parquet`` / ``pyarrow.parquet`` as is."""
    from autovid.files import write_bytes_atomic

    path = check_manifest_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # whole or not at all: a crash never leaves half a manifest at `path`
    frame = _typed(df[list(MANIFEST_COLUMNS)])
    frame.attrs = {DECODER_ATTR: df.attrs[DECODER_ATTR]} if df.attrs.get(DECODER_ATTR) else {}
    frame.to_parquet(buffer, index=False, engine="pyarrow")  # pandas keeps `attrs` in the file's metadata
    write_bytes_atomic(path, buffer.getvalue())
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`; a missing or foreign file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for non-Parquet input
        raise UserError(f"not a Parquet manifest: {path} ({type(exc).__name__})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"not an autovid manifest: {path} lacks column(s) {', '.join(missing)}")
    attrs = df.attrs
    try:
        df = _typed(df[list(MANIFEST_COLUMNS)])
    except (ValueError, TypeError) as exc:  # e.g. a null or text num_frames
        raise UserError(
            f"not an autovid manifest: {path} has a column of the wrong type ({_first_line(exc)})"
        ) from None
    _validate_rows(df, path)
    decoder = attrs.get(DECODER_ATTR)
    df.attrs = {DECODER_ATTR: decoder} if isinstance(decoder, str) and decoder else {}
    return df


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _validate_rows(df: pd.DataFrame, path: Path) -> None:
    """Refuse a manifest that nothing could train on or whose rows would break sampling later, in Ray workers."""
    if df.empty:
        raise UserError(f"manifest {path} has no rows")
    status = df["status"].fillna("")
    bad_status = ~status.isin(("ok", "quarantined"))
    if bad_status.any():
        i = int(bad_status.to_numpy().argmax())
        raise UserError(f"manifest {path}: row {i} has status {status.iloc[i]!r}; expected ok or quarantined")
    # quarantined rows carry 0 frames by design; a usable row needs at least one, and no row fewer than 0
    bad_frames = (df["num_frames"] < 0) | ((status == "ok") & (df["num_frames"] <= 0))
    if bad_frames.any():
        i = int(bad_frames.to_numpy().argmax())
        raise UserError(f"manifest {path}: row {i} ({df['path'].iloc[i]}) has num_frames {df['num_frames'].iloc[i]}; "
                        "a usable video has at least one frame")
    if (df["label"] < 0).any():
        i = int((df["label"] < 0).to_numpy().argmax())
        raise UserError(f"manifest {path}: row {i} ({df['path'].iloc[i]}) has negative label {df['label'].iloc[i]}")


def class_names(df: pd.DataFrame) -> list[str]:
    """Class names in label order (labels 0..max; a label with no row gets its number as name)."""
    names = dict(zip(df["label"].astype(int), df["class_name"].astype(str)))
    return [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]


def summarize_manifest(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for the CLI: classes, videos, usable videos, quarantined by reason, frames, per split."""
    ok = df["status"] == "ok"
    by_split = {
        str(s): {"videos": int(len(g)), "ok": int((g["status"] == "ok").sum()),
                 "frames": int(g.loc[g["status"] == "ok", "num_frames"].sum())}
        for s, g in df.groupby("split", sort=True)
    }
    return {
        "decoder": manifest_decoder(df),
        "classes": int(df["label"].nunique()),
        "videos": int(len(df)),
        "ok": int(ok.sum()),
        "quarantined": {str(k): int(v) for k, v in df.loc[~ok, "reason"].value_counts().sort_index().items()},
        "frames": int(df.loc[ok, "num_frames"].sum()),
        "by_split": by_split,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines for :func:`summarize_manifest`'s dict."""
    quarantined = sum(summary["quarantined"].values())
    reasons = ", ".join(f"{k} {v}" for k, v in summary["quarantined"].items()) or "none"
    lines = [
        f"classes: {summary['classes']}   videos: {summary['videos']}   ok: {summary['ok']}   "
        f"quarantined: {quarantined} ({reasons})   frames: {summary['frames']}",
    ]
    lines += [f"  {s}: {v['ok']}/{v['videos']} videos ok, {v['frames']} frames" for s, v in summary["by_split"].items()]
    if summary.get("decoder"):
        lines.append(f"  probed with the {summary['decoder']} decoder")
    return "\n".join(lines)
