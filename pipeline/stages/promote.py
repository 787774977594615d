"""`python -m pipeline promote`: register each dataset's best model; move `champion` if it is better.

Takes the latest finished tuning of every (dataset, family) in MLflow (after `dvc repro`), picks
each dataset's best family as the report does and registers it as `<experiment>-<dataset>`; the
alias `champion` moves only to a lower val_mse, and a model identical to the champion adds no
version. Not a DVC stage: promotion changes the registry, not the repo's outputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline import registry
from pipeline.config import Params
from pipeline.reference import target


def promote(params: Params, tuned: dict[str, dict[str, dict]], progress: Callable = print) -> list[registry.Decision]:
    """Register each dataset's best model (`tuned[dataset][family]`: what `tune` returned, metrics,
    `run_id` and `model_uri`)."""
    from mlflow import MlflowClient

    client = MlflowClient(params.tracking.mlflow_tracking_uri())
    decisions = []
    for dataset, by_family in tuned.items():
        name = f"{params.tracking.experiment}-{dataset}"
        config = params.datasets[dataset]
        about = (
            f"The best model for dataset `{dataset}` (`{target(config.inputs)} = {config.equation}`), chosen as the "
            "report chooses: the simplest family that reaches the noise floor, else the lowest val_mse. "
            "`champion` points at the version with the lowest val_mse so far. Load it without pickle: "
            f"`python -m pipeline predict --model models:/{name}@champion --row=...`."
        )
        decision = registry.promote_best(client, name, by_family, about)
        progress(f"[{dataset}] {decision.family}: {decision.reason}")
        decisions.append(decision)
    return decisions


def latest_results(params: Params) -> dict[str, dict[str, dict]]:
    """The latest finished parent run of each (dataset, family) of params.yaml."""
    from pipeline.tracking import Tracker

    tracker = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment)
    return registry.latest_results(tracker.client, tracker.experiment_id, list(params.datasets))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")


def main(args: argparse.Namespace, params: Params) -> None:
    promote(params, latest_results(params))
