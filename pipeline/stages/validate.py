"""Stage `validate`: params.yaml checked, before any other stage can remove its outputs.

DVC removes a stage's outputs before it runs the stage, so every stage depends on this one's
output: a params.yaml mistake stops `dvc repro` here, with the key and the value. The output is
the same text whenever params.yaml is valid, so it never makes another stage rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import Params

VALID = (
    "params.yaml is valid.\n"
    "Written by the `validate` stage, which every other stage depends on: DVC runs it first, so a\n"
    "params.yaml mistake stops `dvc repro` before any stage's outputs are removed.\n"
)


def validate(params: Params, out: Path) -> None:
    """`params` were validated when they were loaded; record that in `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_text() != VALID:  # unchanged: not even its mtime moves
        out.write_text(VALID)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="file to write when params.yaml is valid (the DVC stage's out)")


def main(args: argparse.Namespace, params: Params) -> None:
    # load_params has already checked everything; reaching here means the file is valid.
    if args.out is not None:
        validate(params, args.out)
    print(f"{args.params}: valid ({len(params.datasets)} datasets)")
