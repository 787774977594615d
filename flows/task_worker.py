"""`python -m flows.task_worker`: a Prefect task worker for the tunings of `tune-models`.

Started on any number of machines that see the repo, the stores and the Prefect server, task
workers take the `tune_task` runs that `tune-models --task-workers` (or `python -m flows.experiment
--task-workers`) submits, one at a time each (a tuning keeps both cores of a machine busy, see the
docs' performance page). Each task run is named by its dataset and records its worker. The worker
is `flows.prefect_private.OneRunInHand`: it holds no tuning it cannot start.
"""

from __future__ import annotations

import asyncio

from prefect.task_worker import StopTaskWorker

from flows.experiment import tune_task
from flows.prefect_private import OneRunInHand


async def serve() -> None:
    await OneRunInHand(tune_task, limit=1).astart()  # Prefect builds a task worker inside an event loop


def main() -> None:
    try:
        asyncio.run(serve())
    except (KeyboardInterrupt, StopTaskWorker):  # Ctrl-C, or SIGTERM (Prefect stops the worker by raising)
        pass
    except BaseExceptionGroup as group:  # the same, from inside the worker's task group
        _, unexpected = group.split((KeyboardInterrupt, StopTaskWorker, asyncio.CancelledError))
        if unexpected is not None:
            raise unexpected from None


if __name__ == "__main__":
    main()
