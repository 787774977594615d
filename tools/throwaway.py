"""Throwaway engines on loopback for the scale-out test and benchmark: a PostgreSQL cluster in a
temp dir (initdb, pg_ctl: the server binaries of Debian's `postgresql`) and an `mlflow server`
on it with proxied artifacts, optionally with MLflow's basic authentication. Each is a context
manager that stops what it started."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import mlflow_users  # noqa: E402  (a script beside this one)

BIN = Path(sys.executable).parent
_CLUSTERS: dict[str, list[str]] = {}  # a cluster's URL prefix: its pg_ctl command (restart, stop, start)
ADMINS: dict[str, tuple[str, str]] = {}  # an authenticated server's URL: its admin's name and password


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        raise FileNotFoundError(f"{name} not found: `apt-get install postgresql`")
    return str(found)


def _as_postgres_user(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root (CI runs as root).
    return ["runuser", "-u", "nobody", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres(databases: tuple[str, ...] = ("optuna", "mlflow"), password: str | None = None) -> Iterator[str]:
    """A cluster on 127.0.0.1 and a free port, with `databases`; yields its SQLAlchemy URL prefix
    (without the password: with one, clients give it, PGPASSWORD or in their URL)."""
    import psycopg2

    base = Path(tempfile.mkdtemp(prefix="equations-pg-"))
    os.chmod(base, 0o777)
    data, port = base / "data", free_port()
    init = [pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    if password:  # every connection must then give it (scram-sha-256), over TCP as through the socket
        (base / "pw").write_text(password + "\n")
        os.chmod(base / "pw", 0o644)
        init = [*init[:-2], "-A", "scram-sha-256", "--pwfile", str(base / "pw")]
    subprocess.run(_as_postgres_user(init), check=True, capture_output=True)
    (base / "pw").unlink(missing_ok=True)
    ctl = [pg_bin("pg_ctl"), "-D", str(data), "-o", f"-p {port} -h 127.0.0.1 -k {base}", "-l", str(base / "log")]
    subprocess.run(_as_postgres_user([*ctl, "-w", "start"]), check=True, capture_output=True)
    try:
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", password=password
        )
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            for database in databases:
                cursor.execute(f"CREATE DATABASE {database}")
        connection.close()
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
        _CLUSTERS[url] = ctl
        yield url
    finally:
        subprocess.run(_as_postgres_user([*ctl, "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def pg_ctl(url: str, action: str) -> None:
    """`pg_ctl restart|stop|start` of the cluster `postgres()` yielded `url` for (fast shutdown)."""
    ctl = _CLUSTERS[url]
    subprocess.run(_as_postgres_user([*ctl, "-m", "fast", "-w", action]), check=True, capture_output=True)


def _auth_config(base: Path, admin_password: str) -> dict[str, str]:
    """MLflow's basic-auth app: its users in SQLite beside the server, READ for any authenticated
    user unless granted more, nothing for anonymous requests. Returns the server's environment."""
    (base / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{base / 'basic_auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(base / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # fmt: skip


@contextlib.contextmanager
def mlflow_server(backend_url: str, timeout_s: float = 180, env: dict[str, str] | None = None,
                  users: dict[str, str] | None = None, artifacts: Path | None = None) -> Iterator[str]:  # fmt: skip
    """`mlflow server` with its runs in `backend_url` and proxied artifacts in a temp dir; yields its
    URL. `env` adds to its environment (PGPASSWORD: the database password off its command line).
    With `users` (name: password), MLflow's basic authentication is on and they exist (created by
    its admin, whose credentials are in `ADMINS[url]`). `artifacts`: where its artifacts go."""
    import httpx

    base = Path(tempfile.mkdtemp(prefix="equations-mlflow-"))
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_url, "--serve-artifacts",
               "--artifacts-destination", (artifacts or base / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1]]  # fmt: skip
    env = dict(env or {})
    if users is not None:
        admin = ("admin", secrets.token_urlsafe(18))
        command += ["--app-name", "basic-auth"]
        env |= _auth_config(base, admin[1])
    with open(base / "server.log", "w") as log:
        server = subprocess.Popen(command, cwd=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=os.environ | env)  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"mlflow server did not start: see {base / 'server.log'}")
                time.sleep(0.5)
            if users is not None:
                mlflow_users.create_users(url, admin, users)
                ADMINS[url] = admin
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            shutil.rmtree(base, ignore_errors=True)
