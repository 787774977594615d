"""The two kinds of error a command reports in one line (see `pipeline.cli`).

- `InputError`: what the user gave is wrong (params.yaml, an equation, a data file, an argument):
  exit code 2, nothing was written.
- `FaultError`: something failed while running (a store, a tampered model): exit code 1.

Each module raises its own subclass, so that callers can tell them apart; the CLI needs only
these two to pick the exit code.
"""


class InputError(ValueError):
    """Bad input, named with its key or file and its value."""


class FaultError(RuntimeError):
    """A fault while running, said in one line."""
