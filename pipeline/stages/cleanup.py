"""`python -m pipeline cleanup`: end runs and trials left RUNNING by dead processes.

MLflow runs whose process died (SIGKILL, a crash of the machine) end KILLED and their Optuna
trials FAIL. Only processes of this host are judged; live ones are left alone. `tune` does this
first, on the stores it uses.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline import liveness, study_storage
from pipeline.config import Params


def cleanup(params: Params, progress: Callable = print) -> tuple[list[str], int]:
    """Returns the ended run ids and the number of failed trials."""
    from pipeline.tracking import Tracker

    runs = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment).end_orphans()
    trials = study_storage.fail_orphans(study_storage.optuna_storage(params.tracking.optuna_storage_url()))
    progress(liveness.describe_cleanup(runs, trials) or "cleanup: nothing left RUNNING by a dead process")
    return runs, trials


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")


def main(args: argparse.Namespace, params: Params) -> None:
    cleanup(params)
