"""Command line of the pipeline: `python -m pipeline {generate,tune,compare} --help`.

dvc.yaml calls these commands with every path spelled out. Each command validates params.yaml
first, so a bad value stops it with one clear message before any work or any write.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pipeline.config import FAMILIES, ConfigError, Params, load_params
from pipeline.data import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Can a neural network solve linear and nonlinear equations? Pipeline stages.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="draw one dataset from its equation")
    gen.add_argument("--dataset", required=True, help="a key under `datasets:` in params.yaml")
    gen.add_argument("--out", type=Path, required=True, help="arrays file to write (.npz)")
    gen.add_argument("--meta", type=Path, required=True, help="metadata file to write (.json)")

    tune = commands.add_parser(
        "tune",
        help="tune model families on one dataset with Optuna, tracked in MLflow",
        description="Tune each model family on one dataset. Writes, per family, <models-dir>/<dataset>-<model>/, "
        "<metrics-dir>/<dataset>-<model>.json and <plots-dir>/{loss,predictions,slice}/<dataset>-<model>.csv.",
    )
    tune.add_argument("--dataset", required=True, help="a key under `datasets:` in params.yaml")
    tune.add_argument(
        "--models", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="model families (default: all)"
    )
    tune.add_argument("--data", type=Path, required=True, help="arrays file written by `generate`")
    tune.add_argument("--models-dir", type=Path, required=True, help="directory for weights and readable artifacts")
    tune.add_argument("--metrics-dir", type=Path, required=True, help="directory for the metrics files (.json)")
    tune.add_argument("--plots-dir", type=Path, required=True, help="directory for the plot tables (.csv)")

    compare = commands.add_parser("compare", help="compare every (dataset, model) and write the report")
    compare.add_argument("--metrics-dir", type=Path, required=True, help="directory of the tune stages' metrics")
    compare.add_argument("--models-dir", type=Path, required=True, help="directory of the tune stages' model dirs")
    compare.add_argument("--plots-dir", type=Path, required=True, help="directory of the tune stages' plot tables")
    compare.add_argument("--out", type=Path, required=True, help="report directory to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    # A stage killed with SIGTERM unwinds like Ctrl-C, so its MLflow runs end FAILED, not RUNNING.
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        _check_names(params, args)
        COMMANDS[args.command](params, args)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _check_names(params: Params, args: argparse.Namespace) -> None:
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset not in params.datasets:
        raise ConfigError(f"--dataset {dataset!r}: not in params.yaml datasets {sorted(params.datasets)}")


def _generate(params: Params, args) -> None:
    from pipeline import stages

    stages.generate(params, args.dataset, args.out, args.meta)


def _tune(params: Params, args) -> None:
    from pipeline import stages

    if not args.data.exists():
        raise FileNotFoundError(f"--data {args.data}: not found; run `dvc repro generate@{args.dataset}` first")
    outputs = {  # in the order given, each once
        family: stages.TuneOutputs.under(args.models_dir, args.metrics_dir, args.plots_dir, args.dataset, family)
        for family in args.models
    }
    stages.tune(params, args.dataset, args.data, outputs)


def _compare(params: Params, args) -> None:
    from pipeline import stages

    stages.compare(params, args.metrics_dir, args.models_dir, args.plots_dir, args.out)


COMMANDS = {"generate": _generate, "tune": _tune, "compare": _compare}
