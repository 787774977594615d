"""`python -m pipeline predict`: predictions of a logged model, loaded without pickle.

The model's files are checked against the SHA-256 recorded when it was logged and its weights
read with `weights_only=True` (`pipeline.loading`); one prediction is printed per input row. Rows
give the model's inputs in order (`--row=1,2,3`) or by name (`--row G=1,m1=2,m2=3,r=2`); a CSV
file may start with a header that names them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError, Params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID")
    parser.add_argument(
        "--row", action="append", default=[],
        help="inputs comma-separated, in order (--row=-1,2,...) or by name (--row G=1,r=2,...); repeatable",
    )  # fmt: skip
    parser.add_argument("--csv", type=Path, help="file of input rows, comma-separated; a header line names them")


def main(args: argparse.Namespace, params: Params) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: the predictions only

    from pipeline.evaluation import predict
    from pipeline.loading import load_model

    if not args.row and args.csv is None:
        raise ConfigError("predict: give input rows with --row (values in order, or name=value) or --csv FILE")
    model = load_model(args.model, params.tracking.mlflow_tracking_uri())
    names = list(model.variables)
    X = np.array(_rows(args, names), dtype=np.float64)
    for value in predict(model, X):
        print(f"{value:.6g}")


def _rows(args: argparse.Namespace, names: list[str]) -> list[list[float]]:
    rows = [_row(text, names, f"--row {text!r}") for text in args.row]
    if args.csv is not None:
        if not args.csv.is_file():
            raise FileNotFoundError(f"--csv {args.csv}: not found")
        lines = [line for line in args.csv.read_text().splitlines() if line.strip()]
        header = [part.strip() for part in lines[0].split(",")] if lines else []
        if header and all(part in names for part in header):  # a header naming the inputs
            lines = [",".join(f"{n}={v}" for n, v in zip(header, line.split(","), strict=False)) for line in lines[1:]]
        rows += [_row(line, names, f"{args.csv} line {n}") for n, line in enumerate(lines, 1)]
    return rows


def _row(text: str, names: list[str], where: str) -> list[float]:
    """One row of inputs: values in the model's order, or name=value pairs in any order."""
    parts = [part.strip() for part in text.split(",")]
    expected = f"the model takes {len(names)} inputs: {', '.join(names)}"
    try:
        if all("=" in part for part in parts):
            pairs = dict(part.split("=", 1) for part in parts)
            if set(pairs) != set(names):
                raise ConfigError(f"{where}: {expected}; got {', '.join(pairs)}")
            return [float(pairs[name]) for name in names]
        values = [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"{where}: expected numbers, in order or as name=value ({expected})") from None
    if len(values) != len(names):
        raise ConfigError(f"{where}: {expected} (in this order, or as name=value); got {len(values)} values")
    return values
