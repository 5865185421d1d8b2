"""Re-evaluate a trained network from its checkpoint (multi-clip testing), outside any Tune run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autovid.config import validate_config
from autovid.engine.checkpoint import load_state
from autovid.engine.session import TrainSession
from autovid.errors import UserError
from autovid.nas.genotype import Genotype


def evaluate_checkpoint(path: Path, *, test_clips: int | None = None) -> dict[str, Any]:
    """Load a retrain checkpoint (`state.pt`), rebuild its network and data, evaluate on the test split."""
    if path.is_dir():
        path = path / "state.pt"
    state = load_state(path)
    if state.get("kind") != "train":
        raise UserError(f"{path}: not a retrain checkpoint (search checkpoints hold a supernet)")
    cfg = validate_config(state["config"], source=str(path))
    if test_clips is not None:
        cfg = cfg.with_overrides({"data.test_clips": test_clips}, source="--clips")
    genotype = Genotype.from_json(state["genotype"]) if state.get("genotype") else None
    session = TrainSession(cfg, genotype)
    session.model.load_state_dict(state["model"])
    result = session.evaluate()
    result["epoch"] = state["epoch"]
    result["class_names"] = state.get("class_names")
    return result
