"""Results written whole or not at all (a temporary file beside the target, synced, renamed), outputs that never
overwrite the command's own inputs, and local vs remote paths.

The atomic write is these few lines of the standard library (``os.fsync`` + ``os.replace``) rather than a
dependency: the package that did it (``atomicwrites``) is archived by its author, and none of ours offers it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from autovid.errors import UserError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Replace `path` with `data` so that a crash or a full disk leaves the old file or the new one, never half.

    The temporary file has a fresh name and is created exclusively (never through a link someone left there), and
    the rename replaces the directory entry `path`: a symbolic link at `path` is itself replaced by the new file,
    and the file it pointed to is left untouched (commands ask for --overwrite before replacing anything)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as f:  # 0o666 less the umask, as open() gives
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_bytes_atomic` for text (UTF-8)."""
    return write_bytes_atomic(path, text.encode())


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """`frame.to_csv(path, index=False)`, atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


def _resolved(path: str | Path, flag: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise UserError(f"{flag} {path}: cannot resolve the path ({exc})") from None


def check_output(out: str | Path, inputs: Iterable[str | Path] = (), *, overwrite: bool, flag: str = "--out",
                 trees: Iterable[str | Path] = ()) -> Path:
    """Refuse, in one line and before any work, an output that would destroy something: one of the command's
    `inputs` (compared after resolving symlinks, so a link to an input counts as the input), anything inside one
    of the folders in `trees` (a dataset the command reads), a folder, or any existing path unless `overwrite`
    (the command's --overwrite flag). The write itself must then be atomic (`write_bytes_atomic`)."""
    out = Path(out)
    target = _resolved(out, flag)
    for tree in trees:
        root = _resolved(tree, flag)
        if target == root or target.is_relative_to(root):
            raise UserError(f"{flag} {out} is inside {tree}, which this command reads; write it elsewhere")
    for source in inputs:
        if _resolved(source, flag) == target:
            same = "" if str(source) == str(out) else f" ({source})"
            raise UserError(f"{flag} {out} is an input of this command{same}: writing it would destroy it; "
                            "write it elsewhere")
    if out.is_dir():
        raise UserError(f"{flag} {out} is a folder; give a file name")
    if os.path.lexists(out) and not overwrite:
        what = "is a symbolic link" if out.is_symlink() else "exists"
        raise UserError(f"{flag} {out} {what}; add --overwrite to replace it"
                        + (" (the link itself is replaced, not the file it points to)" if out.is_symlink() else ""))
    return out


def is_remote(path: str | Path) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local path: Ray's pyarrow filesystem owns it."""
    return "://" in str(path)
