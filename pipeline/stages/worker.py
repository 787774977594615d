"""`python -m pipeline worker`: join a tuning started elsewhere (no repo, no params.yaml needed).

Downloads the job and the dataset from the parent MLflow run, joins its Optuna study and trains
batches of its trials until the study holds its n_trials finished trials (`pipeline.workers`).
"""

from __future__ import annotations

import argparse
import os

from pipeline.errors import InputError

NEEDS_PARAMS = False  # it brings its own settings: no params.yaml where it runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")
    parser.add_argument("--parent", required=True, help="the tuning's MLflow parent run id")
    # Both default to the environment, where credentials belong: a command line is visible to any
    # user (`ps`) and lands in shell histories.
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the MLflow tracking URI (a server, beyond one machine; default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--storage",
        default=os.environ.get("OPTUNA_STORAGE"),
        help="the Optuna storage URL of the study, PostgreSQL (default: $OPTUNA_STORAGE; its password may "
        "also come from PGPASSWORD or PGPASSFILE)",
    )


def main(args: argparse.Namespace, params: None) -> None:
    from pipeline import workers

    for option, value, variable in (("--tracking-uri", args.tracking_uri, "MLFLOW_TRACKING_URI"),
                                    ("--storage", args.storage, "OPTUNA_STORAGE")):  # fmt: skip
        if not value:
            raise WorkerArgumentError(f"{option}: not given and {variable} is not set")
    workers.work(args.parent, args.tracking_uri, args.storage)


class WorkerArgumentError(InputError):
    """A worker started without a store to join."""
