"""The two kinds of error a command reports in one line (see `pipeline.cli`).

- `InputError`: what the user gave is wrong (params.yaml, an equation, a data file, an argument):
  exit code 2, nothing was written.
- `FaultError`: something failed while running (a store, a tampered model): exit code 1.

Each module raises its own subclass, so that callers can tell them apart; the CLI needs only
these two to pick the exit code.
"""

import re

_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@\s/]+)@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (`postgresql://u:***@host/db`):
    what is printed, raised, tagged or logged never carries a store's password."""
    return _CREDENTIALS.sub(r"\g<head>:***@", text)


class InputError(ValueError):
    """Bad input, named with its key or file and its value."""


class FaultError(RuntimeError):
    """A fault while running, said in one line."""
