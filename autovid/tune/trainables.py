"""Ray Tune trainables: thin adapters around the engine sessions (one Tune iteration = one epoch).

A trial's config is `{"base": <resolved ExperimentConfig as JSON>, "<dotted.key>": <sampled value>, ...}`
(plus `"genotype"` for retraining): the base travels with the trial, so workers on other machines need
no config files, and the sampled keys are exactly the ones Optuna and MLflow see.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from autovid.config import ExperimentConfig, ObjectiveConfig, validate_config
from autovid.data.backends import DECODER_BACKEND_PARAM
from autovid.data.backends import resolve as resolve_decoder
from autovid.engine.checkpoint import load_state, save_state
from autovid.engine.session import SearchRun, SearchSession, Session, TrainRun, TrainSession
from autovid.nas.genotype import Genotype
from autovid.tune.workers import ReplicatedSession

STATE_FILE = "state.pt"
BASE_KEY = "base"
GENOTYPE_KEY = "genotype"


def trial_overrides(trial_config: dict[str, Any]) -> dict[str, Any]:
    """The sampled dotted keys of a trial config (everything but the base config and the genotype)."""
    return {k: v for k, v in trial_config.items() if k not in (BASE_KEY, GENOTYPE_KEY)}


def resolve_trial_config(trial_config: dict[str, Any]) -> ExperimentConfig:
    """The validated experiment config a trial runs with: base config plus its sampled values."""
    base = validate_config(trial_config[BASE_KEY], source="trial base config")
    return base.with_overrides(trial_overrides(trial_config), source="trial hyperparameters")


def resolved_params(trial_config: dict[str, Any]) -> dict[str, Any]:
    """Flat, fully resolved config of a trial (what MLflow records as the run's params)."""
    flat = resolve_trial_config(trial_config).flat()
    flat[DECODER_BACKEND_PARAM] = resolve_decoder(flat["data.decoder"])  # `auto` as resolved on the driver
    if trial_config.get(GENOTYPE_KEY):
        flat["genotype"] = trial_config[GENOTYPE_KEY]
    return flat


def objective_value(metrics: dict[str, Any], objective: ObjectiveConfig, *, accuracy_key: str, cost_key: str) -> float:
    """What the outer search maximises: accuracy, or accuracy minus `weight` per doubling of cost above
    `reference` (a soft constraint in the spirit of MnasNet's accuracy/latency trade-off)."""
    accuracy = float(metrics[accuracy_key])
    if objective.kind == "accuracy":
        return accuracy
    cost = float(metrics[cost_key])
    return accuracy - objective.weight * max(0.0, math.log2(max(cost, 1.0) / objective.reference))


def _limit_threads(cfg: ExperimentConfig) -> None:
    # A trial owns `resources.cpu` cores; more intra-op threads than that oversubscribe the node and make
    # small 3D convolutions several times slower when trials run side by side.
    torch.set_num_threads(max(1, int(cfg.tune.resources.cpu)))


class _SessionTrainable(tune.Trainable):
    """Shared checkpointing: the whole session state in one file (weights, α, optimizers, RNG, epoch).

    With ``tune.resources.workers`` > 1 the session runs data-parallel on that many Ray actors
    (``ReplicatedSession``); the trial itself then only drives them and writes rank 0's checkpoints."""

    kind: str
    session: Session

    def setup(self, config: dict[str, Any]) -> None:
        self.session_trial = self.trial_id  # the trial this actor's session belongs to (see reset_config)
        self.cfg = resolve_trial_config(config)
        _limit_threads(self.cfg)
        if self.cfg.tune.resources.workers > 1:
            self.session = ReplicatedSession(self.kind, self.cfg, config.get(GENOTYPE_KEY))
        else:
            self.session = self.build_session(config)

    def build_session(self, config: dict[str, Any]) -> Session:
        raise NotImplementedError

    def cleanup(self) -> None:
        if isinstance(self.session, ReplicatedSession):
            self.session.close()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """This actor takes new work: PBT's exploit of its own trial, or another trial (tune.reuse_actors, PBT).

        The same trial with only new learning rates (an exploit: they are all PBT mutates) keeps its session and
        takes the rates; Tune then loads the donor's checkpoint into it. Anything else gets a new session:
        nothing of the previous trial survives (the network and α may differ in shape), and a trial that resumes
        is then restored from its own checkpoint by Tune."""
        cfg = resolve_trial_config(new_config)
        rates = {"search.w_lr": cfg.search.w_lr, "search.alpha_lr": cfg.search.alpha_lr}
        same_trial = self.trial_id == self.session_trial and self.cfg.with_overrides(rates, source="reset") == cfg
        if same_trial and isinstance(self.session, (SearchSession, ReplicatedSession)):
            self.session.set_learning_rates(w_lr=cfg.search.w_lr, alpha_lr=cfg.search.alpha_lr)
            self.cfg = cfg
            return True
        self.cleanup()
        self.setup(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        save_state(self.session.state_dict(), Path(checkpoint_dir) / STATE_FILE)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        state = load_state(Path(str(checkpoint)) / STATE_FILE)
        self.session.load_state_dict(state)
        self.after_restore()

    def after_restore(self) -> None:
        """Hook run after a checkpoint was loaded into the session."""


class SearchTrainable(_SessionTrainable):
    """One DARTS (or random weight-sharing) search as a Tune trial."""

    kind = "search"
    session: SearchRun

    def build_session(self, config: dict[str, Any]) -> SearchSession:
        return SearchSession(self.cfg)

    def step(self) -> dict[str, Any]:
        metrics = self.session.step()
        metrics["objective"] = objective_value(
            metrics,
            self.cfg.tune.objective,
            accuracy_key="val/acc",
            cost_key=f"genotype/{self.cfg.tune.objective.cost}",
        )
        metrics["node_id"] = ray.get_runtime_context().get_node_id()  # where the trial ran (cluster placement)
        if self.session.should_stop(metrics):
            metrics["done"] = True
        return metrics

    def after_restore(self) -> None:
        """PBT exploit in a fresh actor: the donor's optimizer state carries the donor's learning rates, while
        this trial's config holds the explored ones. Put those back (a plain resume finds them equal)."""
        s = self.cfg.search
        if self.session.learning_rates() != (s.w_lr, s.alpha_lr):
            self.session.set_learning_rates(w_lr=s.w_lr, alpha_lr=s.alpha_lr)



class TrainTrainable(_SessionTrainable):
    """Retraining one architecture from scratch (a genotype, or a registered network) as a Tune trial."""

    kind = "train"
    session: TrainRun

    def build_session(self, config: dict[str, Any]) -> TrainSession:
        genotype_json = config.get(GENOTYPE_KEY)
        return TrainSession(self.cfg, Genotype.from_json(genotype_json) if genotype_json else None)

    def step(self) -> dict[str, Any]:
        metrics = self.session.step()
        metrics["objective"] = objective_value(
            metrics, self.cfg.tune.objective, accuracy_key=f"{self.session.eval_prefix}/acc",
            cost_key=self.cfg.tune.objective.cost,
        )
        if self.session.done:
            metrics["done"] = True
        return metrics
