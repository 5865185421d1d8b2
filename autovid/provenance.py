"""What produced a figure: the source commit, a hash of the resolved config and a hash of the data's manifest."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from autovid.config import ExperimentConfig

# Keys that name or place a run without changing what it computes: two runs differing only here share a hash.
_NOT_HASHED = ("name", "storage_path", "tracking", "data.cache_dir")
# The manifest columns that say which videos, labels and splits a run saw (not where the files sit on disk).
_MANIFEST_IDENTITY = ("label", "class_name", "split", "num_frames", "status")


def git_commit(repo_dir: str | Path | None = None) -> str:
    """`git rev-parse HEAD` of the autovid source tree (or `repo_dir`), "unknown" when unavailable."""
    out = _git(["rev-parse", "HEAD"], repo_dir)
    return out if out is not None and re.fullmatch(r"[0-9a-f]{40}", out) else "unknown"


def git_dirty(repo_dir: str | Path | None = None) -> bool:
    """Whether tracked autovid sources differ from the commit (figures from such a tree say so)."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], repo_dir)
    return bool(out)


def config_hash(cfg: ExperimentConfig) -> str:
    """12 hex digits of the resolved config, without the keys that only name or place the run."""
    flat = {k: v for k, v in cfg.flat().items() if not any(k == n or k.startswith(n + ".") for n in _NOT_HASHED)}
    return _digest(json.dumps(flat, sort_keys=True, default=str))


def manifest_hash(manifest: pd.DataFrame) -> str:
    """12 hex digits of the videos a manifest lists: file names with label, class, split, frames and status
    (paths are reduced to their last two parts, class folder and file, so the hash survives a move)."""
    names = manifest["path"].astype(str).map(lambda p: "/".join(Path(p).parts[-2:]))
    table = pd.concat([names.rename("path"), manifest[list(_MANIFEST_IDENTITY)].astype(str)], axis=1)
    rows = sorted(map(tuple, table.itertuples(index=False, name=None)))
    return _digest(json.dumps(rows))


def provenance(cfg: ExperimentConfig, manifest: pd.DataFrame) -> dict[str, str]:
    """``{"commit", "config", "manifest"}`` for a report's first line; the commit carries "+uncommitted" when
    the source tree has changes the commit does not hold."""
    commit = git_commit()
    if commit != "unknown" and git_dirty():
        commit += "+uncommitted"
    return {"commit": commit, "config": config_hash(cfg), "manifest": manifest_hash(manifest)}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _git(args: list[str], repo_dir: str | Path | None) -> str | None:
    import autovid

    cwd = Path(repo_dir) if repo_dir is not None else Path(autovid.__file__).resolve().parent
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
