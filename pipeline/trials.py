"""The trials of a study asked together: trained as one stack, pruned each on its own reports,
told as each ends, and none left RUNNING by an error or an interruption.

`tune.tune` (one process) and `shared_study.join` (workers on a shared study) run their batches
here. The caller hears of each trial through `Hooks`, which is where tracking hooks in: this
module knows nothing of MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline import optuna_private, takeover
from pipeline.interrupts import signals_deferred
from pipeline.space import suggest, trial_params
from pipeline.takeover import TrialTakenOver
from pipeline.train import History, Member, Tensors, Trained, fit

if TYPE_CHECKING:
    from pipeline.tune import TuningJob


@dataclass
class TrialOutcome:
    number: int
    params: dict
    history: History
    state: str  # "COMPLETE" | "PRUNED" | "DIVERGED" | "FAIL" (interrupted)


TrialCallback = Callable[[TrialOutcome], None]
# on_ask(asked trials) -> attrs(number) or None: user attributes each trial gets (a worker: the id of
# its MLflow run). The one-process stage returns None: its recorder process writes them with the
# batch (`on_batch`), so that training never waits for it.
BatchCallback = Callable[[list[FrozenTrial]], None]
AskCallback = Callable[[list[optuna.Trial]], Callable[[int], dict] | None]


@dataclass(frozen=True)
class Hooks:
    """Where the caller (the recorder, a worker) hears of the trials: as they are asked, as they end."""

    on_trial: TrialCallback | None = None
    on_ask: AskCallback | None = None
    # Asked between batches of a shared study: a reason to stop (the stage that wanted the trials
    # is gone), or None to go on.
    stop: Callable[[], str | None] | None = None
    # `tune`'s finished trials, a batch at a time in number order, for the study's storage: the
    # stage's recorder writes them (with each one's MLflow run id). None: `tune` writes them itself.
    on_batch: BatchCallback | None = None


def announcing(hooks: Hooks) -> tuple[Hooks, set[int]]:
    """`hooks` whose `on_ask` notes the numbers of the trials it was called for, and that set."""
    announced: set[int] = set()
    if hooks.on_ask is None:
        return hooks, announced
    on_ask = hooks.on_ask

    def announce(trials: list[optuna.Trial]) -> Callable[[int], dict] | None:
        # One step for Ctrl-C and SIGTERM: stopped between two trials' announcements, the rest
        # would be marked announced with no run opened, and their failure recorded into nothing.
        with signals_deferred():
            attrs = on_ask(trials)
            announced.update(trial.number for trial in trials)
        return attrs

    return replace(hooks, on_ask=announce), announced


def interrupted(study: optuna.Study, trials: list[optuna.Trial], announced: set[int], hooks: Hooks) -> None:
    """Tell FAIL the asked trials an interruption left RUNNING (it came before their batch trained,
    so `_Batch.fail_unfinished` never saw them) and report each through `on_trial`, announcing first
    those `on_ask` never saw: Optuna and the record (MLflow) then hold the same failed trials."""
    failed = _fail_running(study, trials)
    if hooks.on_trial is None:
        return
    try:
        fresh = [trial for trial in failed if trial.number not in announced]
        if fresh and hooks.on_ask is not None:
            hooks.on_ask(fresh)
        for trial in failed:
            hooks.on_trial(TrialOutcome(trial.number, dict(trial.params), History(), "FAIL"))
    except Exception:  # the record is a courtesy here; the next run's cleanup ends what is left
        pass


def _fail_running(study: optuna.Study, trials: list[optuna.Trial]) -> list[optuna.Trial]:
    """Tell FAIL those of `trials` still RUNNING; return them."""
    try:
        optuna_private.reset_session(study)  # the signal may have landed inside a write
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    except Exception:  # the storage is gone: leave them to the next run's cleanup (liveness)
        return []
    failed = []
    for trial in trials:
        if trial.number in running:
            try:
                tell_fail(study, trial)
                failed.append(trial)
            except Exception:  # leave the rest to the next run's cleanup
                pass
    return failed


def tell_fail(study: optuna.Study, trial: optuna.Trial, attempts: int = 5) -> None:
    """Tell FAIL, retrying a busy store a few times: an interruption comes at any moment, also
    while another process holds SQLite's write lock, and a trial left RUNNING waits for cleanup."""
    for attempt in range(attempts):
        try:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def run_batch(
    study: optuna.Study, trials: list[optuna.Trial], job: TuningJob, data: Tensors, hooks: Hooks, shared: bool = False
) -> list[tuple[Member, Trained]]:
    """Train asked trials as one stack, telling each as it ends; none is left RUNNING on an error.

    A trial that retries a failed one (a worker died) trains from the failed trial's seed. A
    `shared` study (workers) gives each trial its `on_ask` attributes before training rather than
    as it ends (a worker that dies mid-batch leaves trials whose MLflow runs can then still be found
    and ended), and reads each trial's state before telling it (another worker may have taken it
    over meanwhile); a study of this process alone needs neither."""
    with signals_deferred(), takeover.writing(study, trials):  # the parameters: each a write into the trial
        numbers = retried_numbers(study, trials)
        members = [suggest(trial, job.space, job.spec, job.seed + n) for trial, n in zip(trials, numbers, strict=True)]
    attrs = hooks.on_ask(trials) if hooks.on_ask else None
    with signals_deferred():
        batch_run = _Batch(study, trials, hooks.on_trial, attrs, shared)
    try:
        for trial in trials if shared else ():
            batch_run.attach(trial)
        results = fit(members, data, batch_run.stop, batch_run.done)
    except BaseException:  # an error, Ctrl-C or SIGTERM: no trial of the batch is left RUNNING
        batch_run.fail_unfinished()
        raise
    return list(zip(members, results, strict=True))


def retried_numbers(study: optuna.Study, trials: list[optuna.Trial]) -> list[int]:
    """For each trial, the number of the trial it retries (its worker died), or its own number."""
    retry = optuna.storages.RetryFailedTrialCallback.retried_trial_number
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)} if trials else {}
    return [trial.number if (n := retry(frozen[trial.number])) is None else n for trial in trials]


class _Batch:
    """A batch of running trials: pruned on their reports, told as soon as each one is over.

    Pruning decisions are made on an in-memory copy of the study. The pruner needs each running
    trial's reports and the finished trials' curves; asking the study's own storage for them costs
    about 4 ms an epoch on SQLite, more than the training step itself. The copy gives the same
    decisions (it holds the same finished trials), and each curve goes to its real trial in one
    write when the trial ends.
    """

    def __init__(
        self,
        study: optuna.Study,
        trials: list[optuna.Trial],
        on_trial: TrialCallback | None,
        attrs: Callable[[int], dict] | None = None,
        shared: bool = False,
    ) -> None:
        self.study, self.trials, self.on_trial, self.attrs = study, trials, on_trial, attrs
        self.shared = shared  # other processes write into the study: a trial may be taken over
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
        with signals_deferred():
            # A fresh read of the trial (with its attributes) costs a few ms, 1 % of a tuning's CPU:
            # only where another process may have failed it.
            if self.shared and not takeover.still_running(self.study, trial):
                raise TrialTakenOver(f"trial {trial.number} was retried by another worker")
            self.attach(trial)
            with takeover.writing(self.study, [trial]):
                state = _tell(self.study, trial, trained, self.reported[member])
        if state == TrialState.FAIL:  # failed elsewhere after the check above (this worker paused in between)
            raise TrialTakenOver(f"trial {trial.number} was retried by another worker")
        self.told.add(member)
        if self.on_trial is not None:
            self.on_trial(TrialOutcome(trial.number, trial_params(trial), trained.history, trained.state))

    def attach(self, trial: optuna.Trial) -> None:
        with signals_deferred(), takeover.writing(self.study, [trial]):
            for key, value in (self.attrs(trial.number) if self.attrs else {}).items():
                if trial.user_attrs.get(key) != value:
                    trial.set_user_attr(key, value)

    def fail_unfinished(self) -> None:
        """Tell FAIL every trial not yet told, with the curve it had reached (it was interrupted);
        all of them first, then `on_trial` for each, so that an error there leaves none RUNNING."""
        optuna_private.reset_session(self.study)  # the signal may have landed inside a write
        # A trial some other worker failed and retried meanwhile is theirs now: nothing goes into it.
        untold = [m for m in range(len(self.trials)) if m not in self.told]
        unfinished = [m for m in untold if takeover.still_running(self.study, self.trials[m])]
        for member in unfinished:
            trial = self.trials[member]
            try:  # the attributes and the curve are a courtesy; leaving no trial RUNNING is not
                self.attach(trial)
                optuna_private.record_curve(self.study, trial, self.reported[member])
            except Exception:
                pass
            tell_fail(self.study, trial)
        for member in unfinished if self.on_trial is not None else ():
            trial, history = self.trials[member], History(self.trained[member], self.reported[member])
            self.on_trial(TrialOutcome(trial.number, trial_params(trial), history, "FAIL"))


def _tell(study: optuna.Study, trial: optuna.Trial, trained: Trained, reported: list[float]) -> TrialState:
    """Record the trial's per-epoch reports, then its end: COMPLETE, or PRUNED (pruned or diverged).
    Return the state the storage holds: FAIL when another worker had failed the trial already."""
    optuna_private.record_curve(study, trial, reported)
    if trained.state == "COMPLETE":
        return study.tell(trial, trained.history.final_val, skip_if_finished=True).state
    return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True).state
