"""Session checkpoints on disk: tensors and plain containers only, loaded without unpickling any code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from autovid.errors import UserError


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write a session's ``state_dict()`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts.

    A file that would need arbitrary Python objects unpickled (a malicious or foreign pickle, or a checkpoint
    written by something else) is refused with a one-line UserError naming it, before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a pickle at all (torch wraps every unpickling failure alike)
            raise UserError(f"{path}: not an autovid checkpoint (unreadable pickle)") from None
        raise UserError(f"{path}: refused: it holds Python objects beyond tensors and plain containers, and "
                        "loading it would run code from the file (autovid checkpoints never need that)") from None
    except Exception as exc:  # truncated or not a torch file at all
        raise UserError(f"{path}: not an autovid checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "kind" not in state:
        raise UserError(f"{path}: not an autovid checkpoint (no 'kind' entry)")
    return state
