"""`python -m flows.task_worker`: a Prefect task worker for the tunings of `tune-models`.

Started on any number of machines that see the repo, the stores and the Prefect server, task
workers take the `tune_task` runs that `tune-models --task-workers` (or `python -m flows.experiment
--task-workers`) submits, one at a time each (`limit=1`: a tuning keeps both cores of a machine
busy, see README "Prefect's cost"). Each task run is named by its dataset and records its worker.
"""

from __future__ import annotations

from prefect.task_worker import serve

from flows.experiment import tune_task


def main() -> None:
    serve(tune_task, limit=1)


if __name__ == "__main__":
    main()
