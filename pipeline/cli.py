"""Command line of the pipeline: `python -m pipeline COMMAND --help`.

dvc.yaml calls these commands with every path spelled out. Each command lives in its own module
under `pipeline/stages/` and only that module is imported, so a stage's process loads (and
dvc.yaml lists) the code that stage runs and no more. Each command validates params.yaml first,
so a bad value stops it with one clear message before any work or any write. Errors are one line
on stderr: exit 2 for bad input (params, data files, arguments), 1 for a fault while running (a
store, a tampered model); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path
from types import FrameType

from pipeline.config import load_params
from pipeline.errors import FaultError, InputError, redact

# name: (module, one line of help). The module has `add_arguments(parser)` and `main(args, params)`.
COMMANDS = {
    "validate": ("pipeline.stages.validate", "check params.yaml; write --out if it is valid"),
    "generate": ("pipeline.stages.generate", "draw one dataset from its equation"),
    "tune": ("pipeline.stages.tune", "tune model families on one dataset with Optuna, tracked in MLflow"),
    "worker": ("pipeline.stages.worker", "join a tuning started elsewhere (no repo, no params.yaml needed)"),
    "compare": ("pipeline.stages.compare", "compare every (dataset, model) and write the report"),
    "promote": ("pipeline.stages.promote", "register each dataset's best model; move `champion` if it is better"),
    "cleanup": ("pipeline.stages.cleanup", "end runs and trials left RUNNING by dead processes"),
    "predict": ("pipeline.stages.predict", "predict with a logged model, loaded without pickle"),
    "fingerprint": ("pipeline.stages.fingerprint", "hash the code files a stage runs (dvc.yaml's code- stages)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Can a neural network solve linear and nonlinear equations? Pipeline stages.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A stage killed with SIGTERM unwinds like Ctrl-C, so its MLflow runs end FAILED, not RUNNING.
    signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        params = load_params(args.params) if getattr(module, "NEEDS_PARAMS", True) else None
        module.main(args, params)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted (its open MLflow runs end FAILED, its unfinished trials FAIL)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code, message = describe(exc)
        print(f"error: {redact(message)}", file=sys.stderr)
        return code
    return 0


def _command_in(argv: list[str]) -> str | None:
    """The command word of `argv`, past the global options, if it names a command."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params")
    pre.add_argument("--debug", action="store_true")
    _, rest = pre.parse_known_args(argv)
    return rest[0] if rest and rest[0] in COMMANDS else None


def describe(exc: Exception) -> tuple[int, str]:
    """Exit code and one line: 2 for bad input, 1 for anything else (its type named)."""
    if isinstance(exc, (InputError, FileNotFoundError)):
        return 2, str(exc)
    if isinstance(exc, FaultError):
        return 1, str(exc)
    text = " ".join(str(exc).split())
    return 1, f"{type(exc).__name__}: {text[:300]} (rerun with --debug for the traceback)"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
