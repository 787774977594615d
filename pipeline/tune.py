"""Optuna tuning of one model family on one dataset; every trial trains through `train.fit`.

The study lives in the storage URL the caller passes (SQLite by default, PostgreSQL when trials
run on several machines). A trial whose loss turns NaN or infinite is pruned, never fatal to the
study. The caller observes each finished trial through `on_trial`, which is where tracking hooks in:
this module knows nothing of MLflow.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna

from pipeline.models import ModelSpec, build_model
from pipeline.train import Diverged, History, Tensors, TrainSettings, fit, init_seed


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


@dataclass(frozen=True)
class StudySettings:
    n_trials: int
    sampler_seed: int = 0
    pruner: str = "median"  # "median" | "none"
    n_startup_trials: int = 3
    n_warmup_steps: int = 10


@dataclass
class TrialOutcome:
    number: int
    params: dict
    history: History
    state: str  # "COMPLETE" | "PRUNED" | "DIVERGED"


@dataclass
class TuneResult:
    best_params: dict
    best_value: float
    best_trial: int
    model: object  # the best trial's trained model (torch.nn.Module)
    spec: ModelSpec
    settings: TrainSettings
    history: History
    n_complete: int
    n_pruned: int
    seconds: float


TrialCallback = Callable[[TrialOutcome], None]


def suggest(trial: optuna.Trial, space: SearchSpace, spec: ModelSpec, seed: int) -> tuple[ModelSpec, TrainSettings]:
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
    return spec, TrainSettings(lr=lr, epochs=epochs, batch_size=batch_size, optimizer=optimizer, seed=seed)


def _choose(trial: optuna.Trial, name: str, choices: tuple):
    # A single choice is a fixed setting, not a search dimension: keep it out of the sampler.
    if len(choices) == 1:
        trial.set_user_attr(name, choices[0])
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps
    )


def create_study(name: str, storage: str, settings: StudySettings) -> optuna.Study:
    """A fresh study: a rerun replaces the old one, so its result depends on the params alone."""
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
        pruner=make_pruner(settings),
    )


def tune(
    study: optuna.Study,
    spec: ModelSpec,
    data: Tensors,
    space: SearchSpace,
    n_trials: int,
    seed: int = 0,
    on_trial: TrialCallback | None = None,
) -> TuneResult:
    """Run `n_trials` trials of `study`; return the best trial's trained model."""
    best: dict = {}
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        trial_spec, settings = suggest(trial, space, spec, seed + trial.number)
        init_seed(settings.seed)
        model = build_model(trial_spec, data.X_train.shape[1]).to(data.X_train.device)
        seen = History()  # what a pruned trial got through, for its tracking run

        def report(epoch: int, train_loss: float, val_loss: float) -> None:
            seen.train_loss.append(train_loss)
            seen.val_loss.append(val_loss)
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            history = fit(model, data, settings, on_epoch=report)
        except Diverged as exc:
            _notify(on_trial, trial, exc.history, "DIVERGED")
            raise optuna.TrialPruned(str(exc)) from None
        except optuna.TrialPruned:
            _notify(on_trial, trial, seen, "PRUNED")
            raise
        value = history.final_val
        if not best or value < best["value"]:
            best.update(value=value, model=copy.deepcopy(model), spec=trial_spec, settings=settings, history=history)
        _notify(on_trial, trial, history, "COMPLETE")
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller's on_trial reports progress
    study.optimize(objective, n_trials=n_trials, catch=())
    if not best:
        raise RuntimeError(f"study {study.study_name!r}: no trial completed (all pruned or diverged)")
    states = [t.state for t in study.trials]
    return TuneResult(
        best_params=study.best_trial.params | study.best_trial.user_attrs,
        best_value=best["value"],
        best_trial=study.best_trial.number,
        model=best["model"],
        spec=best["spec"],
        settings=best["settings"],
        history=best["history"],
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        seconds=time.perf_counter() - start,
    )


def _notify(on_trial: TrialCallback | None, trial: optuna.Trial, history: History, state: str) -> None:
    if on_trial is not None:
        params = trial.params | {k: v for k, v in trial.user_attrs.items()}
        on_trial(TrialOutcome(trial.number, params, history, state))
