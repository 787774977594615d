"""Optuna tuning of one model family on one dataset, many trials at a time.

Trials are asked in batches through Optuna's ask-and-tell interface, trained together by the one
`train.fit` (a batch is a stack of members), and told back. The sampler is told to expect that
(TPE with `constant_liar=True`, so trials asked together spread out instead of piling onto one
point). Each trial is pruned on its own per-epoch reports; a trial whose loss turns NaN or
infinite is pruned too, never fatal to the study. The caller sees each finished trial through
`on_trial`, which is where tracking hooks in: this module knows nothing of MLflow.

The study lives in the storage URL the caller passes (SQLite by default, PostgreSQL when trials
run on several machines).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from pipeline.models import ModelSpec
from pipeline.train import History, Member, Tensors, Trained, TrainSettings, fit


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
    state: str  # "COMPLETE" | "PRUNED" | "DIVERGED" | "FAIL" (interrupted)


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
# on_ask(asked trials) -> attrs(number) or None: user attributes each trial gets (a worker: the id of
# its MLflow run). The one-process stage returns None: its recorder process writes them instead
# (`record_user_attrs`), so that training never waits for it.
AskCallback = Callable[[list[optuna.Trial]], Callable[[int], dict] | None]
CHOICES = ("batch_size", "optimizer", "width", "depth")  # single-choice settings kept as user attrs


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


def create_study(name: str, storage, settings: StudySettings, attrs: dict[str, str] | None = None) -> optuna.Study:
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


def fail_orphans(storage) -> int:
    """Tell FAIL every RUNNING trial of a study whose owner process is gone (see `liveness`).

    A tuning killed with SIGKILL cannot tell its trials; this is what its next run does first.
    Returns how many trials it failed."""
    from pipeline import liveness

    failed = 0
    for study in storage.get_all_studies():
        if not liveness.is_gone(study.user_attrs):
            continue
        for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def tune(
    study: optuna.Study,
    spec: ModelSpec,
    data: Tensors,
    space: SearchSpace,
    n_trials: int,
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    batch: int = 16,
    on_ask: AskCallback | None = None,
) -> TuneResult:
    """Run `n_trials` trials of `study`, `batch` at a time; return the best trial's trained model.

    Trial number t trains from seed `seed + t`, whatever batch it falls in.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller's on_trial reports progress
    start = time.perf_counter()
    best: tuple[float, Member, Trained] | None = None
    asked: list[optuna.Trial] = []
    announced: set[int] = set()
    on_ask = _announcing(on_ask, announced)
    try:
        for first in range(0, n_trials, batch):
            trials = []
            for _ in range(min(batch, n_trials - first)):
                trials.append(study.ask())
                asked.append(trials[-1])
            for member, trained in _run_batch(study, trials, spec, data, space, seed, on_trial, on_ask):
                value = trained.history.final_val
                if trained.state == "COMPLETE" and (best is None or value < best[0]):
                    best = (value, member, trained)
    except BaseException:  # interrupted between asking and training too: none of ours left RUNNING
        _interrupted(study, asked, announced, on_ask, on_trial)
        raise
    if best is None:
        raise RuntimeError(f"study {study.study_name!r}: no trial completed (all pruned or diverged)")
    value, member, trained = best
    states = [t.state for t in study.trials]
    return TuneResult(
        best_params=study.best_trial.params | {k: v for k, v in study.best_trial.user_attrs.items() if k in CHOICES},
        best_value=value,
        best_trial=study.best_trial.number,
        model=trained.model,
        spec=member.spec,
        settings=member.settings,
        history=trained.history,
        n_complete=states.count(TrialState.COMPLETE),
        n_pruned=states.count(TrialState.PRUNED),
        seconds=time.perf_counter() - start,
    )


def _announcing(on_ask: AskCallback | None, announced: set[int]) -> AskCallback | None:
    """`on_ask`, noting in `announced` the numbers of the trials it was called for."""
    if on_ask is None:
        return None

    def announce(trials: list[optuna.Trial]):
        announced.update(trial.number for trial in trials)
        return on_ask(trials)

    return announce


def _interrupted(study, trials, announced: set[int], on_ask, on_trial) -> None:
    """Tell FAIL the asked trials an interruption left RUNNING (it came before their batch trained,
    so `_Batch.fail_unfinished` never saw them) and report each through `on_trial`, announcing first
    those `on_ask` never saw: Optuna and the record (MLflow) then hold the same failed trials."""
    failed = _fail_running(study, trials)
    if on_trial is None:
        return
    try:
        fresh = [trial for trial in failed if trial.number not in announced]
        if fresh and on_ask is not None:
            on_ask(fresh)
        for trial in failed:
            on_trial(TrialOutcome(trial.number, dict(trial.params), History(), "FAIL"))
    except Exception:  # the record is a courtesy here; the next run's cleanup ends what is left
        pass


def _fail_running(study: optuna.Study, trials: list[optuna.Trial]) -> list[optuna.Trial]:
    """Tell FAIL those of `trials` still RUNNING; return them."""
    failed = []
    for trial in trials:
        try:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                study.tell(trial, state=TrialState.FAIL)
                failed.append(trial)
        except Exception:  # leave the rest to the next run's cleanup (liveness)
            pass
    return failed


def _run_batch(
    study, trials, spec, data, space, seed, on_trial, on_ask, eager: bool = False
) -> list[tuple[Member, Trained]]:
    """Train asked trials as one stack, telling each as it ends; none is left RUNNING on an error.

    A trial that retries a failed one (a worker died) trains from the failed trial's seed. `eager`
    gives each trial its `on_ask` attributes before training rather than as it ends: a worker that
    dies mid-batch leaves trials whose MLflow runs can then still be found (and ended)."""
    numbers = [retried_from(study, trial) for trial in trials]
    members = [suggest(trial, space, spec, seed + number) for trial, number in zip(trials, numbers, strict=True)]
    attrs = on_ask(trials) if on_ask else None
    batch_run = _Batch(study, trials, on_trial, attrs)
    for trial in trials if eager else ():
        batch_run.attach(trial)
    try:
        results = fit(members, data, batch_run.stop, batch_run.done)
    except BaseException:  # an error, Ctrl-C or SIGTERM: no trial of the batch is left RUNNING
        batch_run.fail_unfinished()
        raise
    return list(zip(members, results, strict=True))


def retried_from(study: optuna.Study, trial: optuna.Trial) -> int:
    """The number of the trial `trial` retries (its worker died), or its own number."""
    # What RetryFailedTrialCallback.retried_trial_number reads, without loading the whole trial.
    original = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    return trial.number if original is None else original


def join(
    study: optuna.Study,
    spec: ModelSpec,
    data: Tensors,
    space: SearchSpace,
    n_trials: int,
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    batch: int = 16,
    on_ask: AskCallback | None = None,
    poll_s: float = 1.0,
) -> tuple[int, Member, Trained] | None:
    """Work on a study that other processes (on any machine) work on too, until it holds exactly
    `n_trials` finished trials; return this worker's best (trial number, member, trained), if it
    completed any.

    The storage must have heartbeats and Optuna's `RetryFailedTrialCallback` (`worker_storage`):
    the trials of a worker that dies stop beating, `fail_stale_trials` fails them and the callback
    queues each again, so the count stays exact. Trials are asked in batches as in `tune`; a trial
    asked beyond the count (two workers asking at once) is told FAIL at once, marked `surplus`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best: tuple[int, Member, Trained] | None = None
    mine: list[optuna.Trial] = []
    announced: set[int] = set()
    on_ask = _announcing(on_ask, announced)
    try:
        return _join(study, spec, data, space, n_trials, seed, on_trial, batch, on_ask, poll_s, best, mine)
    except BaseException:
        _interrupted(study, mine, announced, on_ask, on_trial)
        raise


def _join(study, spec, data, space, n_trials, seed, on_trial, batch, on_ask, poll_s, best, mine):
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= n_trials:
            return best
        room = n_trials - finished - running
        asked = _ask(study, min(batch, room), n_trials, mine) if room > 0 else []
        if not asked:
            time.sleep(poll_s)  # the last trials are running elsewhere: they finish, or fail and come back
            continue
        with _Heartbeat(study, asked):
            results = _run_batch(study, asked, spec, data, space, seed, on_trial, on_ask, eager=True)
        for trial, (member, trained) in zip(asked, results, strict=True):
            better = best is None or trained.history.final_val < best[2].history.final_val
            if trained.state == "COMPLETE" and better:
                best = (trial.number, member, trained)


def _ask(study: optuna.Study, count: int, n_trials: int, mine: list) -> list[optuna.Trial]:
    asked = []
    for _ in range(count):
        trial = study.ask()
        mine.append(trial)
        study._storage.record_heartbeat(trial._trial_id)  # beating from the start: a crash is noticed
        earlier = study.get_trials(deepcopy=False)
        if sum(t.number < trial.number and t.state != TrialState.FAIL for t in earlier) >= n_trials:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        asked.append(trial)
    return asked


class _Heartbeat:
    """Record a heartbeat for each running trial every `interval` seconds, from a thread."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]):
        import threading

        self.storage, self.ids = study._storage, [t._trial_id for t in trials]
        self.interval = self.storage.get_heartbeat_interval() or 5
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a trial already told; the next beat tries the others again
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def worker_storage(url: str, heartbeat_s: int = 5, grace_s: int = 20, retries: int = 3):
    """An RDB storage that several workers share: heartbeats, and a stale trial retried."""
    # Heartbeats with ask-and-tell are "experimental" to Optuna; they are what it offers for this.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries),
    )


class _Batch:
    """A batch of running trials: pruned on their reports, told as soon as each one is over.

    Pruning decisions are made on an in-memory copy of the study. The pruner needs each running
    trial's reports and the finished trials' curves; asking the study's own storage for them costs
    about 4 ms an epoch on SQLite, more than the training step itself. The copy gives the same
    decisions (it holds the same finished trials), and each curve goes to its real trial in one
    write when the trial ends.
    """

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial], on_trial: TrialCallback | None, attrs=None):
        self.study, self.trials, self.on_trial, self.attrs = study, trials, on_trial, attrs
        self.shadow = optuna.create_study(direction="minimize", pruner=study.pruner)
        self.shadow.add_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        self.shadow_trials = [self.shadow.ask() for _ in trials]
        self.reported: list[list[float]] = [[] for _ in trials]
        self.trained: list[list[float]] = [[] for _ in trials]
        self.told: set[int] = set()

    def stop(self, member: int, epoch: int, train_loss: float, val_loss: float) -> bool:
        self.shadow_trials[member].report(val_loss, epoch)
        self.reported[member].append(val_loss)
        self.trained[member].append(train_loss)
        return self.shadow_trials[member].should_prune()

    def done(self, member: int, trained: Trained) -> None:
        trial = self.trials[member]
        self.attach(trial)
        _tell(self.study, trial, trained, self.reported[member])
        self.told.add(member)
        if self.on_trial is not None:
            params = trial.params | {k: v for k, v in trial.user_attrs.items() if k in CHOICES}
            self.on_trial(TrialOutcome(trial.number, params, trained.history, trained.state))

    def attach(self, trial: optuna.Trial) -> None:
        for key, value in (self.attrs(trial.number) if self.attrs else {}).items():
            if trial.user_attrs.get(key) != value:
                trial.set_user_attr(key, value)

    def fail_unfinished(self) -> None:
        """Tell FAIL every trial not yet told, with the curve it had reached (it was interrupted);
        all of them first, then `on_trial` for each, so that an error there leaves none RUNNING."""
        unfinished = [member for member in range(len(self.trials)) if member not in self.told]
        for member in unfinished:
            trial = self.trials[member]
            try:
                self.attach(trial)
            except Exception:  # the attributes are a courtesy; leaving no trial RUNNING is not
                pass
            _record_curve(self.study, trial._trial_id, self.reported[member])
            self.study.tell(trial, state=TrialState.FAIL)
        for member in unfinished if self.on_trial is not None else ():
            trial, history = self.trials[member], History(self.trained[member], self.reported[member])
            params = trial.params | {k: v for k, v in trial.user_attrs.items() if k in CHOICES}
            self.on_trial(TrialOutcome(trial.number, params, history, "FAIL"))


def _tell(study: optuna.Study, trial: optuna.Trial, trained: Trained, reported: list[float]) -> None:
    """Record the trial's per-epoch reports, then its end: COMPLETE, or PRUNED (pruned or diverged)."""
    _record_curve(study, trial._trial_id, reported)
    if trained.state == "COMPLETE":
        study.tell(trial, trained.history.final_val)
    else:
        study.tell(trial, state=TrialState.PRUNED)


@functools.cache
def _rdb(url: str):
    from pipeline import stores

    return stores.optuna_storage(url)


def record_user_attrs(storage_url: str, trial_id: int, attrs: dict) -> None:
    """User attributes of a trial, running or finished (Optuna's API refuses to change a finished
    one), written into Optuna's own table, as `_record_curve` writes curves. For the recorder
    process, which learns a trial's MLflow run id while or after the trial trains."""
    import json

    backend = _rdb(storage_url)
    from optuna.storages._rdb.models import TrialUserAttributeModel as Row

    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    with backend.engine.begin() as connection:
        connection.execute(Row.__table__.insert(), rows)


def _record_curve(study: optuna.Study, trial_id: int, values: list[float]) -> None:
    """A trial's intermediate values, as `trial.report` would store them, in one transaction.

    `trial.report` is one transaction per value (about 1 ms each on SQLite, 40 s for the default
    tunings). Optuna has no public bulk call, so for its relational storage this inserts the rows
    of its own table (the one optuna-dashboard and the pruners read); elsewhere it reports one by one.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    if not values:
        return
    if isinstance(backend, optuna.storages.RDBStorage):
        from optuna.storages._rdb.models import TrialIntermediateValueModel as Row

        rows = []
        for step, value in enumerate(values):
            stored, kind = Row.intermediate_value_to_stored_repr(float(value))
            rows.append(
                {"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind}
            )
        with backend.engine.begin() as connection:
            connection.execute(Row.__table__.insert(), rows)
        return
    for step, value in enumerate(values):
        study._storage.set_trial_intermediate_value(trial_id, step, float(value))
