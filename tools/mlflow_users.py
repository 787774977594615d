"""Once, as the admin of an MLflow tracking server with basic authentication: the pipeline's users
and its experiment (docs/distributed.md, step 2b). MLflow's own auth client does the work.

    python tools/mlflow_users.py --tracking-uri http://10.0.0.5:5000

Every password is typed at a prompt (never an argument: `ps` shows command lines to every user).
Makes user `equations` (the stage: it manages the experiment, registers champions) and user
`equations-worker` (the workers: they write the experiment's runs; they cannot change the stage's
registered models), and the experiment `equations`. Any other account the server has can read (`default_permission`).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator

STAGE, WORKER, EXPERIMENT = "equations", "equations-worker", "equations"


@contextlib.contextmanager
def as_user(user: tuple[str, str]) -> Iterator[None]:
    """MLflow's client credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) set for the block."""
    values = {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_users(uri: str, admin: tuple[str, str], users: dict[str, str]) -> None:
    from mlflow.server import get_app_client

    with as_user(admin):
        auth = get_app_client("basic-auth", tracking_uri=uri)
        for name, password in users.items():
            auth.create_user(name, password)


def make_experiment(uri: str, admin: tuple[str, str], name: str = EXPERIMENT) -> str:
    """The experiment (found or made), managed by the stage's user and written by the workers'."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    with as_user(admin):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        auth = get_app_client("basic-auth", tracking_uri=uri)
        auth.grant_user_permission(STAGE, "experiment", experiment_id, "MANAGE")
        auth.grant_user_permission(WORKER, "experiment", experiment_id, "EDIT")
    return experiment_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the server, e.g. http://10.0.0.5:5000")
    parser.add_argument("--admin", default="admin", help="the server's admin user (default: %(default)s)")
    args = parser.parse_args()
    admin = (args.admin, getpass.getpass(f"password of MLflow admin {args.admin!r}: "))
    users = {name: getpass.getpass(f"new password for {name!r} (12+ characters): ") for name in (STAGE, WORKER)}
    create_users(args.tracking_uri, admin, users)
    experiment_id = make_experiment(args.tracking_uri, admin)
    print(f"users {STAGE!r} and {WORKER!r}; experiment {EXPERIMENT!r} ({experiment_id}): {STAGE} manages it, "
          f"{WORKER} writes its runs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
