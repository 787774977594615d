"""Prefect's private corners, all in this module: a task worker that holds no run it cannot start.

Tested against prefect 3.9 (pyproject pins `prefect>=3.9,<3.10`); `tests/test_private_apis.py`
fails loudly if a name used here disappears.

Why: Prefect's own task-worker loop acknowledges the next scheduled run as soon as it has started
the last one, then waits for capacity with that run in hand. With `limit=1` a busy worker keeps a
tuning that an idle worker could run (seen in CI: two workers, both tunings on one, one after the
other). `OneRunInHand` subscribes only while it has capacity and takes one run per subscription;
closing the socket hands back a run the server sent meanwhile (the server puts a run it could not
deliver on its retry queue, where the next free worker takes it).

Private names used: `TaskWorker._subscribe_to_task_scheduling` (overridden), `._limiter`,
`._acquire_token`, `._runs_task_group`, `._safe_submit_scheduled_task_run`. What would replace
them: a public "prefetch" or "acknowledge only with capacity" option of `TaskWorker`.
"""

from __future__ import annotations

from prefect.client.schemas.objects import TaskRun
from prefect.client.subscriptions import Subscription
from prefect.logging import get_logger
from prefect.settings import get_current_settings
from prefect.task_worker import TaskWorker

logger = get_logger("flows.task_worker")


class OneRunInHand(TaskWorker):
    """A task worker that never holds a run it cannot start yet."""

    async def _subscribe_to_task_scheduling(self) -> None:
        url = get_current_settings().api.url
        if url is None:
            raise ValueError("PREFECT_API_URL must point at a Prefect server for task workers")
        logger.info("Subscribing to runs of tune_task, %s at a time", self.limit)
        while True:
            await self._until_free()
            task_run = await self._take_one(url)
            logger.info("Received task run: %s - %s", task_run.id, task_run.name)
            if await self._acquire_token(task_run.id):
                assert self._runs_task_group is not None, "the task worker was not started"
                self._runs_task_group.start_soon(self._safe_submit_scheduled_task_run, task_run)

    async def _until_free(self) -> None:
        if self._limiter is not None:
            async with self._limiter:  # returns the slot at once: `_acquire_token` takes it for the run
                pass

    async def _take_one(self, url: str) -> TaskRun:
        subscription = Subscription(
            TaskRun, "/task_runs/subscriptions/scheduled", self.task_keys, client_id=self.client_id, base_url=url
        )
        try:
            return await anext(subscription)
        finally:
            try:
                await subscription.websocket.close()
            except RuntimeError:  # never connected (interrupted while connecting)
                pass
