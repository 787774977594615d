"""Which process owns a run, and whether it is still alive.

Every MLflow run and Optuna study a stage opens carries its owner: host, pid and the process's
start time (a pid alone can be reused by a later process). A process killed with SIGKILL cannot
close its runs; the next stage that opens the same stores (or `python -m pipeline cleanup`) finds
RUNNING runs and trials whose owner is gone and ends them KILLED / FAIL. Owners on other hosts are
never judged: a live run elsewhere is indistinguishable from a dead one from here.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

HOST, PID, STARTED = "owner.host", "owner.pid", "owner.started"


@cache
def _host() -> str:
    return socket.gethostname()


def started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS): fall back to whether the pid exists
        return "" if _pid_exists(pid) else None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner() -> dict[str, str]:
    """This process as an owner: the tags/attributes to put on what it opens."""
    pid = os.getpid()
    return {HOST: _host(), PID: str(pid), STARTED: started(pid) or ""}


def is_gone(tags: dict) -> bool:
    """True only when the owner is known, on this host, and no longer running."""
    if tags.get(HOST) != _host() or not str(tags.get(PID, "")).isdigit():
        return False
    now = started(int(tags[PID]))
    return now is None or (bool(tags.get(STARTED)) and bool(now) and now != tags[STARTED])


def describe_cleanup(runs: list[str], trials: int) -> str | None:
    """What a cleanup did, in one line, or None if it found nothing to end."""
    if not runs and not trials:
        return None
    return (
        f"cleanup: {len(runs)} MLflow run(s) ended KILLED and {trials} Optuna trial(s) failed: "
        "their processes died without ending them"
    )
