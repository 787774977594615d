"""`python -m pipeline predict`: predictions of a logged model, loaded without pickle.

The model's files are checked against the SHA-256 recorded when it was logged and its weights
read with `weights_only=True` (`pipeline.loading`); one prediction is printed per input row. Rows
give the model's inputs in order (`--row=1,2,3`) or by name (`--row G=1,m1=2,m2=3,r=2`); a CSV
file may start with a header that names them. With `--equation`, a linear-family model predicts
with the equation read back from it (its `coefficients.json`, checked the same way), not with the
network's own weights.
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
    parser.add_argument(
        "--equation", action="store_true",
        help="predict with the equation read back from a linear-family model, not with the network's weights",
    )  # fmt: skip


def main(args: argparse.Namespace, params: Params) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: the predictions only

    from pipeline.evaluation import predict
    from pipeline.loading import load_model

    if not args.row and args.csv is None:
        raise ConfigError("predict: give input rows with --row (values in order, or name=value) or --csv FILE")
    model = load_model(args.model, params.tracking.mlflow_tracking_uri(), equation=args.equation)
    names = list(model.variables)
    X = np.array(_rows(args, names), dtype=np.float64)
    for value in predict(model, X):
        print(f"{value:.6g}")


def _rows(args: argparse.Namespace, names: list[str]) -> list[list[float]]:
    rows = [_row(text, names, f"--row {text!r}") for text in args.row]
    if args.csv is not None:
        rows += _csv_rows(args.csv, names)
    return rows


def _csv_rows(path: Path, names: list[str]) -> list[list[float]]:
    """The rows of a CSV file, each named by its line number; a first line that is not numbers is
    a header naming the inputs, in any order."""
    if not path.is_file():
        raise FileNotFoundError(f"--csv {path}: not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"--csv {path}: not a text file (UTF-8)") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and not all(_is_number(part) for part in lines[0][1].split(",")):
        (at, first), lines = lines[0], lines[1:]
        header = [part.strip() for part in first.split(",")]
        if problem := _names_problem(header, names):
            raise ConfigError(f"--csv {path} line {at}, the header: {problem} (the model takes {', '.join(names)})")
        split = [(n, line.split(",")) for n, line in lines]
        if short := next(((n, len(values)) for n, values in split if len(values) != len(header)), None):
            raise ConfigError(f"--csv {path} line {short[0]}: {short[1]} values under a header of {len(header)}")
        lines = [(n, ",".join(f"{h}={v}" for h, v in zip(header, values, strict=True))) for n, values in split]
    if not lines:
        raise ConfigError(f"--csv {path}: no input rows")
    return [_row(line, names, f"--csv {path} line {n}") for n, line in lines]


def _row(text: str, names: list[str], where: str) -> list[float]:
    """One row of inputs: values in the model's order, or name=value pairs in any order."""
    parts = [part.strip() for part in text.split(",")]
    expected = f"the model takes {len(names)} inputs: {', '.join(names)}"
    if all("=" in part for part in parts):
        pairs = [[side.strip() for side in part.split("=", 1)] for part in parts]
        if problem := _names_problem([name for name, _ in pairs], names):
            raise ConfigError(f"{where}: {problem} ({expected})")
        given = dict(pairs)
        values, labels = [given[name] for name in names], names
    else:
        values, labels = parts, [f"value {k}" for k in range(1, len(parts) + 1)]
        if len(values) != len(names):
            raise ConfigError(f"{where}: {expected} (in this order, or as name=value); got {len(values)} values")
    for label, value in zip(labels, values, strict=True):
        if not _is_number(value) or not np.isfinite(float(value)):
            raise ConfigError(f"{where}: {label} = {value!r} is not a finite number ({expected})")
    return [float(value) for value in values]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _names_problem(given: list[str], names: list[str]) -> str | None:
    """What is wrong with the input names of a row or header, or None."""
    twice = sorted({name for name in given if given.count(name) > 1})
    unknown = [name for name in given if name not in names]
    missing = [name for name in names if name not in given]
    if twice:
        return f"{', '.join(twice)} given twice"
    if unknown:
        return f"no input named {', '.join(unknown)}" + (f"; missing {', '.join(missing)}" if missing else "")
    if missing:
        return f"missing {', '.join(missing)}"
    return None
