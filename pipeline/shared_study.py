"""One Optuna study shared by tuning workers on any number of machines, with an exact trial count.

The storage has heartbeats and Optuna's `RetryFailedTrialCallback` (`worker_storage`): the trials
of a worker that dies stop beating, `fail_stale_trials` fails them and the callback queues each
again, so the study ends with exactly `n_trials` finished trials. Each worker asks trials in
batches and trains a batch as one stack, as `tune.tune` does; a trial asked beyond the count (two
workers asking at once) is told FAIL at once, marked `surplus`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings

import optuna
from optuna.trial import TrialState

from pipeline import optuna_private
from pipeline.takeover import TrialTakenOver
from pipeline.train import Member, Tensors, Trained
from pipeline.trials import Hooks, announcing, interrupted, run_batch
from pipeline.tune import TuningJob

Best = tuple[int, Member, Trained]  # (trial number, member, what became of it)


def worker_storage(url: str, heartbeat_s: int = 5, grace_s: int = 20, retries: int = 3) -> optuna.storages.RDBStorage:
    """An RDB storage that several workers share: heartbeats, and a stale trial retried."""
    # Heartbeats with ask-and-tell are "experimental" to Optuna; they are what it offers for this.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    from pipeline import study_storage

    return study_storage.optuna_storage(
        url,
        existing=True,  # a worker joins a study: a database without one is a wrong URL, said as such
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries),
    )


def join(
    study: optuna.Study, job: TuningJob, data: Tensors, hooks: Hooks | None = None, poll_s: float = 1.0
) -> Best | None:
    """Work on a study that other processes (on any machine) work on too, until it holds exactly
    the job's `n_trials` finished trials; return this worker's best trial, if it completed any."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mine: list[optuna.Trial] = []
    hooks, announced = announcing(hooks or Hooks())
    try:
        return _work(study, job, data, hooks, mine, poll_s)
    except BaseException:
        interrupted(study, mine, announced, hooks)
        raise


def _work(study: optuna.Study, job: TuningJob, data: Tensors, hooks: Hooks, mine: list, poll_s: float) -> Best | None:
    best: Best | None = None
    while True:
        if hooks.stop is not None and (reason := hooks.stop()):
            raise StudyAbandoned(reason)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= job.n_trials:
            return best
        room = job.n_trials - finished - running
        asked = _ask(study, min(job.batch, room), job.n_trials, mine) if room > 0 else []
        if not asked:
            time.sleep(poll_s)  # the last trials are running elsewhere: they finish, or fail and come back
            continue
        try:
            with _Heartbeat(study, asked):
                results = run_batch(study, asked, job, data, hooks, shared=True)
        except TrialTakenOver as exc:
            exc.best = best  # the trials this worker completed before still count
            raise
        for trial, (member, trained) in zip(asked, results, strict=True):
            better = best is None or trained.history.final_val < best[2].history.final_val
            if trained.state == "COMPLETE" and better:
                best = (trial.number, member, trained)


class StudyAbandoned(RuntimeError):
    """The stage that wanted the study's trials is gone: working on would be for nobody."""


def _ask(study: optuna.Study, count: int, n_trials: int, mine: list) -> list[optuna.Trial]:
    storage = optuna_private.storage_of(study)
    asked = []
    for _ in range(count):
        trial = study.ask()
        mine.append(trial)
        storage.record_heartbeat(optuna_private.trial_id(trial))  # beating from the start: a crash is noticed
        earlier = study.get_trials(deepcopy=False)
        if sum(t.number < trial.number and t.state != TrialState.FAIL for t in earlier) >= n_trials:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # failed elsewhere meanwhile
                trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            break
        asked.append(trial)
    return asked


class _Heartbeat:
    """Record a heartbeat for each running trial every `interval` seconds, from a thread."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        self.storage = optuna_private.storage_of(study)
        self.ids = [optuna_private.trial_id(t) for t in trials]
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

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
