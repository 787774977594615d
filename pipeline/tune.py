"""Optuna tuning of one model family on one dataset, many trials at a time.

Trials are asked in batches through Optuna's ask-and-tell interface, trained together by the one
`train.fit` (a batch is a stack of members, `pipeline.trials`), and told back. The sampler is told
to expect that (TPE with `constant_liar=True`, so trials asked together spread out instead of
piling onto one point). Each trial is pruned on its own per-epoch reports; a trial whose loss
turns NaN or infinite is pruned too, never fatal to the study. The caller hears of each trial
through `trials.Hooks`, which is where tracking hooks in: this module knows nothing of MLflow.

The study lives in the storage the caller passes (SQLite by default, PostgreSQL when trials run
on several machines: `pipeline.shared_study`). A study of one process (`tune`) runs in memory and
goes into that storage a batch at a time: see `tune`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from pipeline import optuna_private
from pipeline.interrupts import signals_deferred
from pipeline.models import ModelSpec
from pipeline.space import FloatSpace, IntSpace, SearchSpace, trial_params
from pipeline.train import History, Member, Tensors, Trained, TrainSettings
from pipeline.trials import BatchCallback, Hooks, announcing, interrupted, run_batch

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class StudySettings:
    n_trials: int
    sampler_seed: int = 0
    pruner: str = "median"  # "median" | "none"
    n_startup_trials: int = 3
    n_warmup_steps: int = 10


@dataclass
class TuneResult:
    best_params: dict
    best_value: float
    best_trial: int
    model: nn.Module  # the best trial's trained model
    spec: ModelSpec
    settings: TrainSettings
    history: History
    n_complete: int
    n_pruned: int
    seconds: float

    @property
    def member(self) -> Member:
        return Member(self.spec, self.settings)


@dataclass(frozen=True)
class TuningJob:
    """One tuning of one model family: what a worker receives as JSON (`to_json`, `from_json`)."""

    spec: ModelSpec  # the family and its features; the MLP's width and depth unless searched
    space: SearchSpace
    settings: StudySettings  # the budget (n_trials), sampler seed and pruner
    batch: int = 16  # trials asked, trained and told together
    device: str = "cpu"
    threads: int = 1
    standardize: bool = False  # train on standardised features and target (`train.Tensors`)

    @property
    def n_trials(self) -> int:
        return self.settings.n_trials

    @property
    def seed(self) -> int:
        """Trial number t trains from seed `seed + t`, whatever batch it falls in."""
        return self.settings.sampler_seed

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, job: dict) -> TuningJob:
        space = job["space"]
        return cls(
            spec=ModelSpec(**(job["spec"] | {k: tuple(job["spec"][k]) for k in ("terms", "variables", "log_inputs")})),
            space=SearchSpace(
                lr=FloatSpace(**space["lr"]),
                epochs=IntSpace(**space["epochs"]),
                batch_size=tuple(space["batch_size"]),
                optimizer=tuple(space["optimizer"]),
                width=tuple(space["width"]) if space["width"] else None,
                depth=tuple(space["depth"]) if space["depth"] else None,
            ),
            settings=StudySettings(**job["settings"]),
            batch=int(job["batch"]),
            device=str(job["device"]),
            threads=int(job["threads"]),
            standardize=bool(job.get("standardize", False)),
        )


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps
    )


def create_study(
    name: str, storage: str | optuna.storages.BaseStorage, settings: StudySettings, attrs: dict[str, str] | None = None
) -> optuna.Study:
    """A new study named `name` (unique per tuning run: earlier studies are kept, never reused),
    with `attrs` as its user attributes. A fresh study and a seeded sampler: the result depends on
    the params alone, however many studies the storage holds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller reports progress
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # set_metric_names
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        # constant_liar: trials asked before earlier ones are told see those as bad guesses.
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed, constant_liar=True),
        pruner=make_pruner(settings),
    )
    study.set_metric_names(["val_mse"])  # optuna-dashboard shows it instead of "Objective 0"
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    return study


def tune(study: optuna.Study, job: TuningJob, data: Tensors, hooks: Hooks | None = None) -> TuneResult:
    """Run the job's `n_trials` trials of `study`, `batch` at a time; return the best trial's model.

    The trials are asked, trained and told on a study in memory with `study`'s sampler and pruner,
    and each batch goes into `study` once all its trials are over (`hooks.on_batch`, or here):
    nobody else writes into a study of one process, and on SQLite its storage's ask, parameters,
    tell and the reads the sampler makes around them cost 20 to 90 ms of CPU a trial more than
    writing each batch in one go (`benchmarks/study_in_memory.py`). The sampler and the pruner see
    the same trials either way, so the trials, their numbers and values are the same. An
    interruption writes the trials of the batch it stopped, told FAIL, as well.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller's hooks report progress
    start = time.perf_counter()
    best: tuple[float, Member, Trained] | None = None
    asked: list[optuna.Trial] = []
    hooks, announced = announcing(hooks or Hooks())
    work = optuna.create_study(direction="minimize", sampler=study.sampler, pruner=study.pruner)  # in memory
    store = _Store(study, work, hooks.on_batch)
    try:
        for first in range(0, job.n_trials, job.batch):
            with signals_deferred():
                asked += (trials := [work.ask() for _ in range(min(job.batch, job.n_trials - first))])
            for member, trained in run_batch(work, trials, job, data, hooks):
                value = trained.history.final_val
                if trained.state == "COMPLETE" and (best is None or value < best[0]):
                    best = (value, member, trained)
            store.batch()
    except BaseException:  # interrupted between asking and training too: none of ours left RUNNING
        interrupted(work, asked, announced, hooks)
        with contextlib.suppress(Exception):  # the storage may be what failed: the first error is the one to see
            store.batch()
        raise
    if best is None:
        raise RuntimeError(f"study {study.study_name!r}: no trial completed (all pruned or diverged)")
    return _result(work, best, time.perf_counter() - start)


class _Store:
    """The trials of `tune`'s study in memory that are over, into the study's own storage."""

    def __init__(self, study: optuna.Study, work: optuna.Study, on_batch: BatchCallback | None) -> None:
        self.study, self.work, self.on_batch, self.stored = study, work, on_batch, 0

    def batch(self) -> None:
        """Hand on every finished trial not handed on yet, in number order, stopping at one still running."""
        trials = self.work.get_trials(deepcopy=True)[self.stored :]  # copies: they travel to another process
        finished = next((i for i, t in enumerate(trials) if not t.state.is_finished()), len(trials))
        if not finished:
            return
        with signals_deferred():  # no signal inside a storage write (`pipeline.interrupts`)
            if self.on_batch is not None:
                self.on_batch(trials[:finished])
            else:
                storage = optuna_private.storage_of(self.study)
                optuna_private.store_trials(storage, optuna_private.study_id(self.study), trials[:finished])
            self.stored += finished


def _result(study: optuna.Study, best: tuple[float, Member, Trained], seconds: float) -> TuneResult:
    value, member, trained = best
    states = [t.state for t in study.get_trials(deepcopy=False)]  # `study.trials` copies every curve
    return TuneResult(
        best_params=trial_params(study.best_trial),
        best_value=value,
        best_trial=study.best_trial.number,
        model=trained.model,
        spec=member.spec,
        settings=member.settings,
        history=trained.history,
        n_complete=states.count(TrialState.COMPLETE),
        n_pruned=states.count(TrialState.PRUNED),
        seconds=seconds,
    )
