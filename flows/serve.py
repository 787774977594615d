"""Deployments with schedules, defined once and used two ways.

    python -m flows.serve                          # this process serves them (one machine)
    python -m flows.deploy --work-pool equations   # register them on a process work pool (more machines)

- `experiment/nightly`: the whole pipeline every night at 02:00 UTC (cron), never two at once.
- `experiment/on-demand`: the same flow with no schedule, for runs triggered by hand.
- `generate-datasets/on-demand`: only the datasets.

`serve` keeps schedules active when this process stops (`pause_on_shutdown=False`): they live in
the Prefect server, and a restarted `python -m flows.serve` picks them up again.
"""

from __future__ import annotations

import os

from prefect import serve

from flows.experiment import experiment, generate_datasets

NIGHTLY_CRON = os.environ.get("EXPERIMENT_CRON", "0 2 * * *")

# (flow, deployment name, options shared by serve and deploy)
DEPLOYMENTS = [
    (
        experiment,
        "nightly",
        {
            "cron": NIGHTLY_CRON,
            "concurrency_limit": 1,  # a slow night never overlaps the next one
            "parameters": {"repo": ".", "params_file": "params.yaml", "max_concurrency": 2},
            "description": "Nightly re-tune of every (dataset, model); promotes a better champion.",
            "tags": ["equations", "nightly"],
        },
    ),
    (experiment, "on-demand", {"concurrency_limit": 1, "tags": ["equations"]}),
    (generate_datasets, "on-demand", {"tags": ["equations"]}),
]


def main() -> None:
    serve(*[flow.to_deployment(name=name, **options) for flow, name, options in DEPLOYMENTS], pause_on_shutdown=False)


if __name__ == "__main__":
    main()
