"""Ctrl-C and SIGTERM held back while a block runs that must not be cut in two.

A tuning stopped by a signal tells its running trials FAIL before it exits (`pipeline.trials`). That
needs the study's storage in a usable state: a signal that lands inside a call into it (SQLAlchemy's
Python code, mid-transaction) leaves that connection holding SQLite's lock, kept alive by the
exception's traceback, and telling the trials FAIL then waits on it forever, or gives up and leaves
them RUNNING. Measured before this: four of six `tune` processes stopped with SIGTERM right after
their batch was asked hung so. So every call into the storage outside training runs deferred, and
the signal is raised again as soon as it returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back until the block ends, then raised again for their own handlers.
    Their Python handlers are swapped, not the signals masked: a signal sent to the process reaches
    whichever thread does not mask it, and Python runs the handlers in the main thread only (here
    too: elsewhere this defers nothing). Blocks nest."""
    hold = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, hold):
        yield  # (None: a handler set outside Python, which could not be put back)
        return
    caught: list[int] = []
    held = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in hold}
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
