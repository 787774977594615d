"""Deployments with schedules, defined once and used two ways.

    python -m flows.serve                          # this process serves them (one machine)
    python -m flows.deploy --work-pool equations   # register them on a process work pool (more machines)

- `experiment/nightly`: the whole pipeline every night at 02:00 UTC (cron); trigger it by hand for
  a run now (`prefect deployment run experiment/nightly`, or "Run" in the UI).
- `generate-datasets/on-demand`: only the datasets.

Never two experiments at once: they would write the same DVC outputs. So there is one experiment
deployment, scheduled and triggered alike, with a concurrency limit of 1: the Prefect server holds
a global concurrency limit for it and a run that finds the slot taken waits, AwaitingConcurrencySlot
then Scheduled, until the run before it ends. (Two deployments of one flow cannot share a limit
safely: `serve` re-registers each deployment at start-up and would reset a shared limit.)

`serve` keeps schedules active when this process stops (`pause_on_shutdown=False`): they live in
the Prefect server, and a restarted `python -m flows.serve` picks them up again.
"""

from __future__ import annotations

import os

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.experiment import experiment, generate_datasets

NIGHTLY_CRON = os.environ.get("EXPERIMENT_CRON", "0 2 * * *")

# (flow, deployment name, options shared by serve and deploy)
DEPLOYMENTS = [
    (
        experiment,
        "nightly",
        {
            "cron": NIGHTLY_CRON,
            # One experiment at a time: runs triggered while one is going wait for it (ENQUEUE).
            "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            "parameters": {"repo": ".", "params_file": "params.yaml", "max_concurrency": 2},
            "description": "Re-tune every (dataset, model) nightly or when triggered; promotes a better champion.",
            "tags": ["equations", "nightly"],
        },
    ),
    (generate_datasets, "on-demand", {"tags": ["equations"]}),
]


def main() -> None:
    serve(*[flow.to_deployment(name=name, **options) for flow, name, options in DEPLOYMENTS], pause_on_shutdown=False)


if __name__ == "__main__":
    main()
