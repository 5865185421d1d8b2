"""Results written whole or not at all: a temporary file beside the target, synced, then renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace `path` with `text` so that a crash or a full disk leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """`frame.to_csv(path, index=False)`, atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """`write_text_atomic` for binary content (PNG figures)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
