"""A worker's trial taken over: failed (and retried) by another worker while this one was away.

Workers share a study (`pipeline.shared_study`); a worker paused, or cut off, past the heartbeat
grace finds, when it comes back, that another worker failed its running trials as stale (Optuna's
`fail_stale_trials`) and queued them again. Its result is then no longer wanted, and the worker
stops cleanly; what it must not do is fail with Optuna's refusal to write into a finished trial,
which may come at any write of its batch (the parameters, the attributes, the tell).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from pipeline import optuna_private


class TrialTakenOver(RuntimeError):
    """A trial of this process was failed (and retried) elsewhere while this process was away. Its
    result is no longer wanted. `best`: what the worker had completed before (set by
    `shared_study`), whose model is still wanted."""

    best: object = None


@contextmanager
def writing(study: optuna.Study, trials: list[optuna.Trial]) -> Iterator[None]:
    """Writes into running `trials`. Optuna refuses one into a trial that is over: when another
    worker failed it, that is `TrialTakenOver`, the worker's clean stop."""
    try:
        yield
    except optuna.exceptions.UpdateFinishedTrialError:
        failed = next((t for t in trials if stored_state(study, t) == TrialState.FAIL), None)
        if failed is None:
            raise
        raise TrialTakenOver(f"trial {failed.number} was retried by another worker") from None


def still_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the storage still holds the trial RUNNING (a fresh read: another worker may have failed it)."""
    return stored_state(study, trial) in (TrialState.RUNNING, None)


def stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState | None:
    """The trial's state in the storage, read afresh; None when the storage cannot be reached."""
    try:
        return optuna_private.storage_of(study).get_trial(optuna_private.trial_id(trial)).state
    except Exception:  # unreachable: the callers assume the trial is still theirs
        return None
