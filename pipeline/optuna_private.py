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
- `study_id`: the storage's id of a study (`Study._study_id`), to write trials into it
  (`store_trials`) without `optuna.load_study`, which would read every trial of it.
- `store_trials`: finished trials into a study in one transaction, rows written into Optuna's own
  tables (`optuna.storages._rdb.models`) as its storage writes them. `Study.add_trials` takes a
  transaction per trial and a query per step of its curve: 211 ms of CPU a trial for a batch of 20
  MLP trials (200-400 epochs) on SQLite, against 1.8 ms (and 11.6 ms with a transaction per trial).
  Would be replaced by a bulk `add_trials`.
- `reset_session`: after Ctrl-C or SIGTERM. Optuna's storage rolls its session back on an
  `Exception` but not on a `KeyboardInterrupt` (SIGTERM becomes one, see `pipeline.cli`): a signal
  that lands inside a write leaves the thread's session in its transaction, holding SQLite's write
  lock, and every later call fails, so the trials of the batch could not be told FAIL. Removing
  the scoped session (`RDBStorage.scoped_session`) rolls it back. Would be replaced by Optuna
  rolling back on any exception.
- `retrying_storage`: the storage's calls retried while the database is unreachable (see there).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable

import optuna
import sqlalchemy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial


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
        _insert(backend, models.TrialIntermediateValueModel, _curve_rows(trial_id(trial), enumerate(values)))
        return
    for step, value in enumerate(values):
        storage.set_trial_intermediate_value(trial_id(trial), step, float(value))


def study_id(study: optuna.Study) -> int:
    return study._study_id


def store_trials(storage: optuna.storages.BaseStorage, study_id: int, trials: list[FrozenTrial]) -> None:
    """Finished `trials` into the study `study_id`, which must hold exactly the trials numbered
    before the first of them: their numbers are kept. Relational storages get them all in one
    transaction, as `RDBStorage.create_new_trial(template_trial=...)` would write each (a trial
    row, then its parameters, value, attributes and curve), retried as the storage's calls are."""
    backend = getattr(storage, "_backend", storage)  # past Optuna's cache wrapper, when there is one
    if not isinstance(backend, optuna.storages.RDBStorage):
        for trial in trials:
            storage.create_new_trial(study_id, template_trial=trial)
        return

    def write() -> None:
        with backend.engine.begin() as connection:
            if _stored_already(connection, study_id, trials):
                return
            rows: dict[type, list[dict]] = {model: [] for model in _TRIAL_TABLES}
            for trial in trials:
                row = {"number": trial.number, "study_id": study_id, "state": trial.state,
                       "datetime_start": trial.datetime_start,
                       "datetime_complete": trial.datetime_complete}  # fmt: skip
                new_id = connection.execute(models.TrialModel.__table__.insert(), row).inserted_primary_key[0]
                for model, more in _trial_rows(new_id, trial).items():
                    rows[model] += more
            for model, batch in rows.items():
                if batch:
                    connection.execute(model.__table__.insert(), batch)

    getattr(backend, "retry", _once)(write)


_TRIAL_TABLES = (models.TrialParamModel, models.TrialValueModel, models.TrialUserAttributeModel,
                 models.TrialSystemAttributeModel, models.TrialIntermediateValueModel)  # fmt: skip


def _stored_already(connection: object, study_id: int, trials: list[FrozenTrial]) -> bool:
    """False if `trials` follow the study's; True if the study ends with these very trials (same
    numbers and start times: a try whose commit went through but whose answer the lost connection
    did not bring back); else a ValueError."""
    table = models.TrialModel.__table__
    query = sqlalchemy.select(sqlalchemy.func.count()).select_from(table).where(table.c.study_id == study_id)
    held = connection.execute(query).scalar_one()
    numbers = [trial.number for trial in trials]
    if numbers == list(range(held, held + len(trials))):
        return False
    if numbers == list(range(held - len(trials), held)):
        query = sqlalchemy.select(table.c.number, table.c.datetime_start).where(
            table.c.study_id == study_id, table.c.number.in_(numbers)
        )
        if dict(connection.execute(query).all()) == {trial.number: trial.datetime_start for trial in trials}:
            return True
    raise ValueError(f"Optuna study {study_id} holds {held} trials: trials numbered {numbers} cannot follow them")


def _trial_rows(trial_id: int, trial: FrozenTrial) -> dict[type, list[dict]]:
    """A finished trial's rows beside its own, by table, as Optuna's storage writes them."""
    values = [] if trial.values is None else trial.values
    stored = [models.TrialValueModel.value_to_stored_repr(value) for value in values]
    return {
        models.TrialParamModel: [
            {"trial_id": trial_id, "param_name": name, "param_value": trial.distributions[name].to_internal_repr(value),
             "distribution_json": optuna.distributions.distribution_to_json(trial.distributions[name])}
            for name, value in trial.params.items()
        ],
        models.TrialValueModel: [
            {"trial_id": trial_id, "objective": objective, "value": value, "value_type": kind}
            for objective, (value, kind) in enumerate(stored)
        ],
        models.TrialUserAttributeModel: _attribute_rows(trial_id, trial.user_attrs),
        models.TrialSystemAttributeModel: _attribute_rows(trial_id, trial.system_attrs),
        models.TrialIntermediateValueModel: _curve_rows(trial_id, sorted(trial.intermediate_values.items())),
    }  # fmt: skip


def _attribute_rows(trial_id: int, attrs: dict) -> list[dict]:
    return [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]


def _curve_rows(trial_id: int, steps: Iterable[tuple[int, float]]) -> list[dict]:
    """Rows of Optuna's table of per-step values (the one pruners and optuna-dashboard read)."""
    rows = []
    for step, value in steps:
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(float(value))
        rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
    return rows


def _insert(storage: optuna.storages.RDBStorage, model: type, rows: list[dict]) -> None:
    """Rows into one of Optuna's tables, in one transaction, retried as the storage's calls are."""

    def insert() -> None:
        with storage.engine.begin() as connection:
            connection.execute(model.__table__.insert(), rows)

    getattr(storage, "retry", _once)(insert)


def _once(call: Callable, *args: object, **kwargs: object) -> object:
    return call(*args, **kwargs)


# What `_CachedStorage` (the wrapper `optuna.create_study` puts around an RDBStorage) calls on it,
# beside the public methods of `BaseStorage` and `BaseHeartbeat`: the retries must cover them too.
_BACKEND_CALLS = ("_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param")


def retrying_storage(storage: optuna.storages.RDBStorage, retry: Callable[..., object]) -> optuna.storages.RDBStorage:
    """`storage` whose every call goes through `retry(call, *args, **kwargs)` (a database that
    restarts or goes away for a while is waited out). Optuna has no hook for this: its own retry is
    only around heartbeat-failed trials. Only the outermost call of a thread retries (methods call
    each other), so one wait is bounded once. Would be replaced by a retry option of RDBStorage."""
    names = {n for base in (optuna.storages.BaseStorage, BaseHeartbeat)
             for n, f in vars(base).items() if callable(f) and not n.startswith("_")} | set(_BACKEND_CALLS)  # fmt: skip
    local = threading.local()
    for name in names:
        method = getattr(storage, name)

        def call(*args: object, _method: Callable = method, **kwargs: object) -> object:
            if getattr(local, "inside", False):
                return _method(*args, **kwargs)
            local.inside = True
            try:
                return retry(_method, *args, **kwargs)
            finally:
                local.inside = False

        setattr(storage, name, call)
    storage.retry = retry  # for the rows written beside its methods (`_insert`)
    return storage
