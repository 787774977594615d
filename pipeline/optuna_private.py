"""Optuna's private corners, all in this module: what its public API cannot do for us yet.

Tested against optuna 5.0 (pyproject pins `optuna>=5.0,<5.1`); `tests/test_private_apis.py` fails
loudly if any name used here disappears. Each use says why, and what would replace it.

- `trial_id`: the storage's id of an asked trial. Heartbeats under ask-and-tell are recorded with
  `storage.record_heartbeat(trial_id)` (Optuna itself only beats inside `Study.optimize`), and the
  id of a `Trial` is the private `_trial_id`. Would be replaced by a public `Trial.id`, or by
  heartbeats that Optuna records for asked trials itself.
- `storage_of`: the study's storage (`Study._storage`), for those heartbeats.
- `record_curve`: a trial's per-epoch values in one transaction. `trial.report` writes one value
  per transaction (about 1 ms each on SQLite, 40 s for the default tunings) and refuses a finished
  trial; the rows go into Optuna's own table (`TrialIntermediateValueModel`, the one the pruners
  and optuna-dashboard read). Would be replaced by a public bulk `report`.
- `record_user_attrs`: user attributes of a trial that may have finished already (the recorder
  process learns a trial's MLflow run id while or after it trains; `set_user_attr` refuses a
  finished trial). Would be replaced by a public way to annotate finished trials.
- `reset_session`: after Ctrl-C or SIGTERM. Optuna's storage rolls its session back on an
  `Exception` but not on a `KeyboardInterrupt` (SIGTERM becomes one, see `pipeline.cli`): a signal
  that lands inside a write leaves the thread's session in its transaction, holding SQLite's write
  lock, and every later call fails, so the trials of the batch could not be told FAIL. Removing
  the scoped session (`RDBStorage.scoped_session`) rolls it back. Would be replaced by Optuna
  rolling back on any exception.
"""

from __future__ import annotations

import functools
import json

import optuna
from optuna.storages._rdb.models import TrialIntermediateValueModel, TrialUserAttributeModel


def trial_id(trial: optuna.Trial) -> int:
    return trial._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def reset_session(study: optuna.Study) -> None:
    """Roll back and drop this thread's storage session (relational storages; a no-op elsewhere)."""
    storage = storage_of(study)
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        backend.scoped_session.remove()


def record_curve(study: optuna.Study, trial: optuna.Trial, values: list[float]) -> None:
    """A trial's intermediate values, as `trial.report` would store them, in one transaction
    (relational storages); elsewhere one by one through the storage."""
    storage = storage_of(study)
    backend = getattr(storage, "_backend", storage)  # under Optuna's cache wrapper, when there is one
    if not values:
        return
    if isinstance(backend, optuna.storages.RDBStorage):
        rows = []
        for step, value in enumerate(values):
            stored, kind = TrialIntermediateValueModel.intermediate_value_to_stored_repr(float(value))
            rows.append(
                {"trial_id": trial_id(trial), "step": step, "intermediate_value": stored,
                 "intermediate_value_type": kind}
            )  # fmt: skip
        with backend.engine.begin() as connection:
            connection.execute(TrialIntermediateValueModel.__table__.insert(), rows)
        return
    for step, value in enumerate(values):
        storage.set_trial_intermediate_value(trial_id(trial), step, float(value))


@functools.cache
def _rdb(url: str) -> optuna.storages.RDBStorage:
    from pipeline import stores

    return stores.optuna_storage(url)


def record_user_attrs(storage_url: str, trial_id: int, attrs: dict) -> None:
    """User attributes of a trial, running or finished, written into Optuna's own table."""
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    with _rdb(storage_url).engine.begin() as connection:
        connection.execute(TrialUserAttributeModel.__table__.insert(), rows)
