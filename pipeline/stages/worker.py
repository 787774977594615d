"""`python -m pipeline worker`: join a tuning started elsewhere (no repo, no params.yaml needed).

Downloads the job and the dataset from the parent MLflow run, joins its Optuna study and trains
batches of its trials until the study holds its n_trials finished trials (`pipeline.workers`).
"""

from __future__ import annotations

import argparse

NEEDS_PARAMS = False  # it brings its own settings: no params.yaml where it runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")
    parser.add_argument("--parent", required=True, help="the tuning's MLflow parent run id")
    parser.add_argument("--tracking-uri", required=True, help="the MLflow tracking URI (a server, beyond one machine)")
    parser.add_argument("--storage", required=True, help="the Optuna storage URL of the study (PostgreSQL)")


def main(args: argparse.Namespace, params: None) -> None:
    from pipeline import workers

    workers.work(args.parent, args.tracking_uri, args.storage)
