"""The search space of a tuning and how one trial draws a point of it.

A point is a `Member` of the one training loop: the family's architecture (the MLP's width and
depth may be searched) and its training settings. A setting with a single choice is kept out of
the sampler (it is no dimension to search) and stored on the trial as a user attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import optuna

from pipeline.models import ModelSpec
from pipeline.train import Member, TrainSettings

CHOICES = ("batch_size", "optimizer", "width", "depth")  # single-choice settings kept as user attrs


@dataclass(frozen=True)
class FloatSpace:
    low: float
    high: float
    log: bool = True


@dataclass(frozen=True)
class IntSpace:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    lr: FloatSpace
    epochs: IntSpace
    batch_size: tuple[int, ...] = (32,)
    optimizer: tuple[str, ...] = ("sgd",)
    width: tuple[int, ...] | None = None
    depth: tuple[int, ...] | None = None


def suggest(trial: optuna.Trial, space: SearchSpace, spec: ModelSpec, seed: int) -> Member:
    """Draw one point of the search space as a model spec and training settings."""
    lr = trial.suggest_float("lr", space.lr.low, space.lr.high, log=space.lr.log)
    epochs = trial.suggest_int("epochs", space.epochs.low, space.epochs.high, log=space.epochs.log)
    batch_size = _choose(trial, "batch_size", space.batch_size)
    optimizer = _choose(trial, "optimizer", space.optimizer)
    if spec.family == "mlp":
        spec = replace(
            spec,
            width=_choose(trial, "width", space.width or (spec.width,)),
            depth=_choose(trial, "depth", space.depth or (spec.depth,)),
        )
    return Member(spec, TrainSettings(lr=lr, epochs=epochs, batch_size=batch_size, optimizer=optimizer, seed=seed))


def trial_params(trial: optuna.Trial | optuna.trial.FrozenTrial) -> dict:
    """A trial's settings: what the sampler suggested, and the single choices kept as attributes."""
    return trial.params | {key: value for key, value in trial.user_attrs.items() if key in CHOICES}


def _choose(trial: optuna.Trial, name: str, choices: tuple) -> int | str:
    # A single choice is a fixed setting, not a search dimension: keep it out of the sampler.
    if len(choices) == 1:
        trial.set_user_attr(name, choices[0])
        return choices[0]
    return trial.suggest_categorical(name, list(choices))
