"""`python -m pipeline predict`: predictions of a logged model, loaded without pickle.

The model's files are checked against the SHA-256 recorded when it was logged and its weights
read with `weights_only=True` (`pipeline.loading`); one prediction is printed per input row.
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
        "--row", action="append", default=[], help="inputs x0,x1,... comma-separated, as --row=-1,2,...; repeatable"
    )
    parser.add_argument("--csv", type=Path, help="file of input rows, comma-separated, no header")


def main(args: argparse.Namespace, params: Params) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: the predictions only

    from pipeline.evaluation import predict
    from pipeline.loading import load_model

    rows = _rows(args)
    model = load_model(args.model, params.tracking.mlflow_tracking_uri())
    X = np.array(rows, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.n_features:
        raise ConfigError(f"predict: the model takes {model.n_features} inputs per row, got {X.shape[-1]}")
    for value in predict(model, X):
        print(f"{value:.6g}")


def _rows(args: argparse.Namespace) -> list[list[float]]:
    rows = [_floats(row, f"--row {row!r}") for row in args.row]
    if args.csv is not None:
        if not args.csv.is_file():
            raise FileNotFoundError(f"--csv {args.csv}: not found")
        lines = [line for line in args.csv.read_text().splitlines() if line.strip()]
        rows += [_floats(line, f"{args.csv} line {n}") for n, line in enumerate(lines, 1)]
    if not rows:
        raise ConfigError("predict: give input rows with --row x0,x1,... or --csv FILE")
    return rows


def _floats(text: str, where: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{where}: expected comma-separated numbers") from None
