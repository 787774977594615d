"""Opening the MLflow tracking store and the Optuna storage: safely at once, with clear errors.

- **Many processes at once.** The first use of a fresh SQLite file creates its schema: MLflow runs
  its alembic migrations, Optuna creates its tables. Two processes doing that at once collide
  (`table _alembic_tmp_experiments already exists`, `UNIQUE constraint failed`). So the first use
  of a SQLite store happens under a file lock beside it (`<file>.lock`); later uses find the
  schema there and only wait for the lock, milliseconds. Server databases (PostgreSQL) and HTTP
  tracking servers need no lock: their own transactions serialise schema creation.
- **Write-ahead log.** A SQLite store is switched to WAL mode on first use (`journaled`; the mode
  is kept in the file): a commit then appends to `<file>-wal` instead of writing and deleting a
  rollback journal, and readers (the MLflow UI, optuna-dashboard) no longer block the stages'
  writers. A tuning commits a few hundred times per dataset; the Feynman table's flow, with the
  fewer reads of the same commit, took 9 % less wall time (docs/performance.md).
- **Clear errors.** A missing folder, an unwritable file, a schema written by a newer MLflow or
  Optuna: `StoreError`, one line naming the URL and what is wrong, instead of a driver traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import FaultError, InputError, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

SQLITE = "sqlite:///"
LOCK_TIMEOUT_S = 120  # the first MLflow migration on a slow disk takes seconds, not minutes
SQLITE_BUSY_TIMEOUT_S = 60  # concurrent writers wait for each other instead of failing at once


class StoreError(FaultError):
    """A tracking store or study storage that cannot be opened or used."""


@dataclass(frozen=True)
class Stores:
    """Where a tuning's record goes: the MLflow tracking store and experiment, the Optuna storage."""

    tracking_uri: str
    experiment: str
    optuna_url: str


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL; None for other URLs and in-memory databases."""
    if not url.startswith(SQLITE) or url.removeprefix(SQLITE) in ("", ":memory:"):
        return None
    return Path(url.removeprefix(SQLITE).split("?", 1)[0])


@contextlib.contextmanager
def first_use(url: str, what: str) -> Iterator[None]:
    """Hold the store's lock (SQLite files only) and turn any failure into a `StoreError`."""
    path = sqlite_path(url)
    try:
        if path is None:
            yield
            return
        if not path.parent.is_dir():
            raise StoreError(f"{what} {redact(url)}: folder {path.parent} does not exist")
        from filelock import FileLock, Timeout

        try:
            with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
                yield
                journaled(path)
        except Timeout:
            raise StoreError(
                f"{what} {redact(url)}: {path}.lock held by another process for {LOCK_TIMEOUT_S} s"
            ) from None
    except StoreError:
        raise
    except Exception as exc:  # the drivers' errors: sqlalchemy, alembic, MlflowException, RuntimeError
        raise StoreError(f"{what} {redact(url)}: {describe(exc)}") from exc


def journaled(path: Path) -> None:
    """Put the SQLite file at `path` in write-ahead-log mode, if it is not already. Only where
    SQLite allows it (not on a read-only file, nor on filesystems without shared memory, where the
    store keeps its rollback journal): the mode makes commits cheaper, it changes no record."""
    import sqlite3

    if not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


# Database drivers SQLAlchemy imports for a URL, and the extra of pyproject.toml that installs each.
DRIVERS = {"psycopg2": "postgres", "psycopg": "postgres"}


def describe(exc: BaseException) -> str:
    """The reason in one line, with what to do where we know it."""
    text = redact(" ".join(str(exc).split())) or type(exc).__name__
    lowered = text.lower()
    if missing := missing_driver(exc):
        return (
            f"its driver {missing} is not installed: pip install 'equation-pipeline[{DRIVERS[missing]}]' "
            "(psycopg2; write the URL postgresql+psycopg2://...)"
        )
    if plugin := re.search(r"can't load plugin: sqlalchemy.dialects:([\w.]+)", lowered):
        return (
            f"unsupported URL scheme {plugin.group(1)}://: write postgresql+psycopg2://USER@HOST/DB (or sqlite:///PATH)"
        )
    if schema := re.search(r"found version (\w+), but expected (\w+)", text):
        return _mlflow_schema(*schema.groups())
    if "readonly database" in lowered or "permission denied" in lowered:
        return "not writable (read-only file or folder)"
    if "unable to open database file" in lowered:
        return "cannot open the database file (missing folder or no permission)"
    if "can't locate revision" in lowered or "no longer compatible" in lowered or "newer" in lowered:
        return f"the schema was written by a newer version; upgrade mlflow/optuna or use another store ({text[:160]})"
    if "file is not a database" in lowered or "malformed" in lowered:
        return "not an SQLite database (corrupt or another kind of file)"
    return text if len(text) <= 240 else text[:240] + "..."


def missing_driver(exc: BaseException | None) -> str | None:
    """The driver whose import failed, anywhere in the chain of causes (Optuna and MLflow wrap it)."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name in DRIVERS:
            return exc.name
        exc = exc.__cause__ or exc.__context__
    return None


def _mlflow_schema(found: str, expected: str) -> str:
    import mlflow

    versions = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    if any(versions.glob(f"{found}_*.py")):
        return f"schema {found} is older than this MLflow's ({expected}): back it up, then `mlflow db upgrade <uri>`"
    return (
        f"schema {found} is newer than this MLflow {mlflow.__version__} knows ({expected}): it was written by a "
        "newer MLflow; upgrade mlflow, or point tracking.mlflow_uri at another store"
    )


# MLflow 3's UI opens an experiment on its GenAI overview unless it is told the experiment's kind.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "Can a neural network solve linear and nonlinear equations? One parent run per (dataset, model "
        "family), named `<dataset>/<family>`, holding the best trial's model, its scores (`val_mse` "
        "against the noise floor `floor_mse`) and, for the linear families, the equation read back from "
        "the weights. Nested under it, one run per Optuna trial with its per-epoch curves. The run named "
        "`report` holds the comparison report (reports/summary.md)."
    ),
}


def mlflow_experiment(
    tracking_uri: str, experiment: str, artifact_location: str | None = None
) -> tuple[MlflowClient, str]:
    """An `MlflowClient` of the store and the id of `experiment` in it, created if missing. The
    client is made under the lock: making it is what creates (migrates) a new store's schema."""
    from mlflow import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        reach_server(tracking_uri)
    with first_use(tracking_uri, "MLflow tracking store"):
        client = MlflowClient(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise StoreError(
                    f"MLflow tracking store {redact(tracking_uri)}: experiment {experiment!r} is deleted; restore it "
                    f"(`mlflow experiments restore --experiment-id {found.experiment_id}`) or choose another "
                    "tracking.experiment"
                )
            experiment_id = found.experiment_id
        else:
            try:
                experiment_id = mlflow_write(tracking_uri)(client.create_experiment, experiment, artifact_location)
            except Exception as exc:  # a tracking server: another process created it meanwhile
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        tags = client.get_experiment(experiment_id).tags
        for key, value in EXPERIMENT_TAGS.items():
            if key not in tags:  # a user's own description is theirs
                client.set_experiment_tag(experiment_id, key, value)
        return client, experiment_id


def reach_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a tracking server nobody answers at, or that refuses our credentials,
    instead of after MLflow's retries (minutes); and bound those retries by `wait_s()` for the
    rest of the run: its client retries with backoff 2, 4, 8, ... s (MLflow's default: 7 times,
    over four minutes)."""
    import math

    import httpx

    bound = wait_s()
    retries = max(1, math.ceil(math.log2(bound / 2 + 1))) if bound else 0
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2")
    # MLflow prints "View run ... at: URL" for every run it ends on a server: a hundred lines a
    # tuning, beside our own line per trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        answer = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {describe(exc)[:160]}"
        raise StoreError(f"MLflow tracking server {redact(uri)}: unreachable ({why}); is it running, and is "
                         "MLFLOW_TRACKING_URI right?") from None  # fmt: skip
    if answer.status_code != 200:
        raise StoreError(f"MLflow tracking server {redact(uri)}: /health answered HTTP {answer.status_code}")


def artifact_location(tracking_uri: str) -> str | None:
    """With a local SQLite store, artifacts beside the database, wherever the process runs
    (MLflow's default, ./mlruns, follows the working directory); elsewhere the server's choice."""
    database = sqlite_path(tracking_uri)
    return (database.parent / "mlruns").resolve().as_uri() if database else None


WAIT_ENV = "EQUATIONS_STORE_WAIT_S"  # how long a store may be unreachable before the command fails
WAIT_S = 60.0


class Retry:
    """A store call retried with backoff while `transient` says the store is unreachable (a
    restart, an outage), for up to `bound_s`; then a `StoreError` naming the store and the cause.
    Other errors pass. The caller makes the call safe to repeat."""

    def __init__(self, url: str, what: str, bound_s: float, transient: Callable[[BaseException], bool]) -> None:
        self.url, self.what, self.bound_s, self.transient = url, what, bound_s, transient

    def __call__(self, call: Callable, *args: object, **kwargs: object) -> object:
        start, delay = None, 0.5
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                if not self.transient(exc):
                    raise
                now = time.monotonic()
                if start is None:
                    start = now
                    self._say(f"unreachable ({describe(exc)[:160]}): retrying for up to {self.bound_s:.0f} s")
                if now - start >= self.bound_s:
                    raise StoreError(f"{self.what} {redact(self.url)}: unreachable for {self.bound_s:.0f} s: "
                                     f"{describe(exc)[:200]}") from None  # fmt: skip
                time.sleep(min(delay, self.bound_s - (now - start)))
                delay = min(2 * delay, 8.0)
                continue
            if start is not None:
                self._say(f"reachable again after {time.monotonic() - start:.0f} s")
            return result

    def _say(self, message: str) -> None:
        print(f"{self.what} {redact(self.url)}: {message}", file=sys.stderr, flush=True)


def mlflow_write(tracking_uri: str) -> Callable[..., object]:
    """How to send a write that MLflow does not repeat itself: a tracking server whose database
    restarts answers TEMPORARILY_UNAVAILABLE (HTTP 503), and MLflow (since 3.18) retries such an
    answer only to writes that are safe to repeat, not to creating a run, an experiment or a
    dataset input (the write may have committed). The caller makes its write safe to repeat; on
    a server it is then retried for up to `wait_s()`. Local stores raise at once."""
    if not tracking_uri.startswith(("http://", "https://")):
        return lambda call, *args, **kwargs: call(*args, **kwargs)
    return Retry(tracking_uri, "MLflow tracking server", wait_s(), server_busy)


def server_busy(exc: BaseException) -> bool:
    """An answer of a tracking server whose store is unreachable, or of a proxy before it."""
    if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
        return True
    return re.search(r"failed with error code 50[234]\b", str(exc)) is not None


def wait_s() -> float:
    """The bound on waiting out an unreachable store: $EQUATIONS_STORE_WAIT_S, else a minute."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise StoreWaitError(f"{WAIT_ENV}={raw!r}: expected seconds, a number from 0 to 86400")
    return value


class StoreWaitError(InputError):
    """A bad value of EQUATIONS_STORE_WAIT_S."""
