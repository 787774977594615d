"""Opening the Optuna storage: its tables under the lock on first use (`stores.first_use`), and
waiting out a database that restarts or goes away for a while.

A server database (PostgreSQL) checks each pooled connection before use (`pool_pre_ping`: a
connection a restart cut is replaced, not used) and every storage call is retried with backoff
while the database cannot be reached, for up to `stores.wait_s()` (a minute unless
EQUATIONS_STORE_WAIT_S says otherwise), saying so on stderr as it waits; then one `StoreError`
naming the storage and the cause. Also the cleanup of studies whose owner died (`fail_orphans`).
Its own module, apart from `stores`: generating and comparing
need the MLflow side only, and must not depend on this code (dvc.yaml's deps).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline import liveness, optuna_private, stores
from pipeline.errors import redact
from pipeline.stores import StoreError, Stores, describe

if TYPE_CHECKING:
    import optuna


def prepare(where: Stores) -> None:
    """Open both stores once (creating their schema under a lock if they are new): a clear
    `StoreError` now rather than in the middle of a tuning, and no racing schema creation later."""
    stores.mlflow_experiment(where.tracking_uri, where.experiment, stores.artifact_location(where.tracking_uri))
    optuna_storage(where.optuna_url)


def optuna_storage(url: str, existing: bool = False, **options: object) -> optuna.storages.RDBStorage:
    """Optuna's storage for `url`, its tables created under the lock on first use (`existing`: the
    tables must be there already, as for a worker joining a study: a wrong database name is then
    an error, not a new empty schema). `options` go to `RDBStorage` (heartbeats). A server
    database's connections are checked before use and its calls retried while it is unreachable
    (`stores.Retry`)."""
    import optuna

    with stores.first_use(url, "Optuna storage"):
        sqlite = url.startswith("sqlite:")
        # pool_pre_ping: a pooled connection that a database restart cut is replaced, not used.
        engine = {"connect_args": {"timeout": stores.SQLITE_BUSY_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, skip_table_creation=existing, **options)
            if existing:
                storage.get_all_studies()
        except Exception as exc:
            if existing and not unreachable(exc) and not stores.missing_driver(exc):
                raise StoreError(f"Optuna storage {redact(url)}: holds no Optuna studies ({describe(exc)[:120]}); "
                                 "is it the database the tuning stage uses?") from None  # fmt: skip
            raise
        if sqlite:
            return storage
        retry = stores.Retry(url, "Optuna storage", stores.wait_s(), unreachable)
        return optuna_private.retrying_storage(storage, retry)


def unreachable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says the database could not be reached or the connection
    was lost, as opposed to a statement it refused."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    while exc is not None:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError) and _CONNECTION.search(str(exc.orig)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# What drivers say of a lost or refused connection (psycopg2: "could not connect to server",
# "server closed the connection unexpectedly", "terminating connection due to administrator
# command", "the database system is shutting down"), unlike OperationalErrors of a statement
# (SQLite's "no such table").
_CONNECTION = re.compile(r"connect|could not|shutting down|starting up|timed? ?out|ssl syscall", re.IGNORECASE)


# A study attribute: its owner saw every trial ended (or, for a study whose owner died, the next
# run's cleanup did). `fail_orphans` skips such studies, or the cleanup that starts every tuning
# would read the trials of every study the stores ever held: at a table's hundred datasets,
# hundreds of studies, seconds per tuning.
ENDED = "tuning_ended"


def mark_ended(study: optuna.Study) -> None:
    study.set_user_attr(ENDED, True)


def fail_orphans(storage: optuna.storages.BaseStorage) -> int:
    """Tell FAIL every RUNNING trial of a study whose owner process is gone (see `liveness`).

    A tuning killed with SIGKILL cannot tell its trials; this is what its next run does first.
    Returns how many trials it failed."""
    import optuna
    from optuna.trial import TrialState

    failed = 0
    for frozen in storage.get_all_studies():
        if frozen.user_attrs.get(ENDED) or not liveness.is_gone(frozen.user_attrs):
            continue
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
        mark_ended(study)
    return failed
