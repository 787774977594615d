"""The cleanup that starts every tuning, on a real SQLite Optuna store: RUNNING trials of studies
whose owner died are failed once, and a study already looked at is not read again."""

from __future__ import annotations

import subprocess

import optuna
from optuna.trial import TrialState

from pipeline import liveness
from pipeline.study_storage import ENDED, fail_orphans, mark_ended


def dead_owner() -> dict[str, str]:
    """The owner attributes of a process of this host that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return liveness.owner() | {liveness.PID: str(child.pid), liveness.STARTED: "1"}


def study_with_running_trials(storage: str, name: str, owner: dict[str, str], running: int) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage)
    for key, value in owner.items():
        study.set_user_attr(key, value)
    for _ in range(running):
        study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    return study


def test_orphaned_trials_are_failed_once_and_ended_studies_are_skipped(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    dead, alive = dead_owner(), liveness.owner()
    orphaned = study_with_running_trials(storage, "orphaned", dead, running=3)
    for i in range(20):  # earlier tunings of a dead process, each with no trial left running
        study_with_running_trials(storage, f"done {i}", dead, running=0)
    live = study_with_running_trials(storage, "live", alive, running=2)  # this process: not judged
    ended = study_with_running_trials(storage, "ended", dead, running=0)
    mark_ended(ended)

    assert fail_orphans(storage) == 3
    assert [t.state for t in orphaned.trials] == [TrialState.FAIL] * 3
    assert [t.state for t in live.trials] == [TrialState.RUNNING] * 2
    marked = {s.study_name for s in storage.get_all_studies() if s.user_attrs.get(ENDED)}
    assert marked == {"orphaned", "ended", *(f"done {i}" for i in range(20))}  # not "live"

    # A study marked ended is not read again (a trial left RUNNING there now is its owner's
    # business, not the cleanup's); a new orphaned study is.
    ended.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    newer = study_with_running_trials(storage, "newer", dead, running=1)
    assert fail_orphans(storage) == 1
    assert [t.state for t in newer.trials] == [TrialState.FAIL]
    assert [t.state for t in ended.trials] == [TrialState.RUNNING]
    assert fail_orphans(storage) == 0
