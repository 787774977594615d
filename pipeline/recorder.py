"""A second process that records a tuning while the first one trains.

Training a stack is single-threaded Python and kernel launches; writing its record (one MLflow
run per trial with its curves, about 45 ms each on SQLite, then plots, artifacts and the logged
model, seconds more) is single-threaded Python too. Threads would only take turns on the GIL, so
the record goes to one worker process, in the order it was submitted, and the two run side by side
on two cores. The worker ignores Ctrl-C and SIGTERM: when the trainer is interrupted, the worker
still finishes what it was given, including marking the runs FAILED.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


class Recorder:
    """`with Recorder() as recorder: future = recorder.submit(fn, *args)`; leaving waits for every job."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Recorder:
        # spawn, not fork: the parent holds torch threads and open SQLite connections.
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_prepare_worker)
        return self

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)


def _prepare_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # One thread for the little torch work here (scoring, saving): the other core is training.
    os.environ["OMP_NUM_THREADS"] = "1"
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A trainer killed with SIGKILL cannot shut the pool down; without this the worker would wait
    # for work forever. Its unfinished runs are ended KILLED by the next run's cleanup.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
