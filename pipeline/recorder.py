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
import multiprocessing.util
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pipeline import threads


class Recorder:
    """`with Recorder() as recorder: future = recorder.submit(fn, *args)`; leaving waits for every
    job submitted through it.

    The worker process is this process's, started on first use and kept for the next `Recorder`
    (a flow's worker process tunes dataset after dataset: the worker's imports and store set-up,
    seconds of CPU, are paid once); it is shut down when this process exits."""

    def __init__(self) -> None:
        self._jobs: list[Future] = []

    def __enter__(self) -> Recorder:
        return self

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        try:
            future = _pool().submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # the last worker died (killed): a new one for this tuning
            _POOL.clear()
            future = _pool().submit(fn, *args, **kwargs)
        self._jobs.append(future)
        return future

    def __exit__(self, *exc: object) -> None:
        wait(self._jobs)


_POOL: list[ProcessPoolExecutor] = []  # this process's recorder worker, once started


def _pool() -> ProcessPoolExecutor:
    if not _POOL:
        # spawn, not fork: the parent holds torch threads and open SQLite connections.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_prepare_worker)
        # Shut down at exit, before anything joins child processes: a process that is itself a
        # multiprocessing worker (Prefect's process pool) joins its children first thing on exit,
        # and would wait forever for an idle recorder. multiprocessing runs its finalizers then,
        # highest priority first: this one before those of the pool's own queues (priority 10),
        # which stop the thread that would carry the shutdown message.
        multiprocessing.util.Finalize(pool, pool.shutdown, kwargs={"wait": True}, exitpriority=100)
        _POOL.append(pool)
    return _POOL[0]


def _prepare_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # One thread for the math here (least squares, scoring, saving): the other core is training.
    threads.limit(1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A trainer killed with SIGKILL cannot shut the pool down; without this the worker would wait
    # for work forever. Its unfinished runs are ended KILLED by the next run's cleanup.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
