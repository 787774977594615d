"""Deployments with schedules, served by this process: `python -m flows.serve`.

- `experiment/nightly`: the whole pipeline every night at 02:00 UTC (cron), never two at once.
- `experiment/on-demand`: the same flow with no schedule, for runs triggered by hand.
- `generate-datasets/on-demand`: only the datasets.

Schedules are stored by the Prefect server and stay active when this process stops
(`pause_on_shutdown=False`): a restart of the server process picks them up again.
For several machines, deploy the same flows to a process work pool instead (see README).
"""

from __future__ import annotations

import os

from prefect import serve

from flows.experiment import experiment, generate_datasets

NIGHTLY_CRON = os.environ.get("EXPERIMENT_CRON", "0 2 * * *")


def deployments() -> list:
    return [
        experiment.to_deployment(
            name="nightly",
            cron=NIGHTLY_CRON,
            concurrency_limit=1,  # a slow night never overlaps the next one
            parameters={"repo": ".", "params_file": "params.yaml", "max_concurrency": 2},
            description="Nightly re-tune of every (dataset, model); promotes a better champion.",
            tags=["equations", "nightly"],
        ),
        experiment.to_deployment(name="on-demand", concurrency_limit=1, tags=["equations"]),
        generate_datasets.to_deployment(name="on-demand", tags=["equations"]),
    ]


def main() -> None:
    serve(*deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
