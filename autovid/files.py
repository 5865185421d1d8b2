"""Results written whole or not at all (a temporary file beside the target, synced, renamed), and local vs remote paths."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Replace `path` with `data` so that a crash or a full disk leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
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


def is_remote(path: str | Path) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local path: Ray's pyarrow filesystem owns it."""
    return "://" in str(path)
