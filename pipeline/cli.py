"""Command line of the pipeline: `python -m pipeline COMMAND --help`.

dvc.yaml calls these commands with every path spelled out. Each command validates params.yaml
first, so a bad value stops it with one clear message before any work or any write. Errors are
one line on stderr: exit 2 for bad input (params, data files, arguments), 1 for a fault while
running (a store, a tampered model); `--debug` shows the traceback instead.
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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check params.yaml; write --out if it is valid")
    validate.add_argument("--out", type=Path, help="file to write when params.yaml is valid (the DVC stage's out)")

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
    tune.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the trials in N worker processes here (0: only in workers started elsewhere); "
        "the study's storage should then be PostgreSQL",
    )

    worker = commands.add_parser(
        "worker",
        help="join a tuning started elsewhere (no repo, no params.yaml needed)",
        description="Downloads the job and the dataset from the parent MLflow run, joins its Optuna study and "
        "trains batches of its trials until the study holds its n_trials finished trials.",
    )
    worker.add_argument("--parent", required=True, help="the tuning's MLflow parent run id")
    worker.add_argument("--tracking-uri", required=True, help="the MLflow tracking URI (a server, beyond one machine)")
    worker.add_argument("--storage", required=True, help="the Optuna storage URL of the study (PostgreSQL)")

    compare = commands.add_parser("compare", help="compare every (dataset, model) and write the report")
    compare.add_argument("--metrics-dir", type=Path, required=True, help="directory of the tune stages' metrics")
    compare.add_argument("--models-dir", type=Path, required=True, help="directory of the tune stages' model dirs")
    compare.add_argument("--plots-dir", type=Path, required=True, help="directory of the tune stages' plot tables")
    compare.add_argument("--out", type=Path, required=True, help="report directory to write")

    commands.add_parser(
        "promote",
        help="register each dataset's best model; move `champion` if it is better",
        description="Takes the latest finished tuning of every (dataset, family) in MLflow (after `dvc repro`), "
        "picks each dataset's best family as the report does and registers it as `<experiment>-<dataset>`; "
        "the alias `champion` moves only to a lower val_mse, and a model identical to the champion adds no version.",
    )

    commands.add_parser(
        "cleanup",
        help="end runs and trials left RUNNING by dead processes",
        description="MLflow runs whose process died (SIGKILL, a crash of the machine) end KILLED and their Optuna "
        "trials FAIL. Only processes of this host are judged; live ones are left alone. `tune` does this first.",
    )

    predict = commands.add_parser(
        "predict",
        help="predict with a logged model, loaded without pickle",
        description="Load a logged model (its files checked against the SHA-256 recorded when it was logged, its "
        "weights read with weights_only=True) and print one prediction per input row.",
    )
    predict.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID")
    predict.add_argument(
        "--row", action="append", default=[], help="inputs x0,x1,... comma-separated, as --row=-1,2,...; repeatable"
    )
    predict.add_argument("--csv", type=Path, help="file of input rows, comma-separated, no header")
    return parser


def main(argv: list[str] | None = None) -> int:
    # A stage killed with SIGTERM unwinds like Ctrl-C, so its MLflow runs end FAILED, not RUNNING.
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "worker":  # it brings its own settings: no params.yaml where it runs
            from pipeline import workers

            workers.work(args.parent, args.tracking_uri, args.storage)
            return 0
        params = load_params(args.params)
        _check_names(params, args)
        COMMANDS[args.command](params, args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted (its open MLflow runs end FAILED, its unfinished trials FAIL)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code, message = _describe(exc)
        print(f"error: {message}", file=sys.stderr)
        return code
    return 0


def _describe(exc: Exception) -> tuple[int, str]:
    """Exit code and one line: 2 for bad input, 1 for anything else (its type named)."""
    from pipeline.equations import EquationError
    from pipeline.loading import ModelIntegrityError
    from pipeline.stores import StoreError

    if isinstance(exc, (ConfigError, DataError, EquationError, FileNotFoundError)):
        return 2, str(exc)
    if isinstance(exc, (StoreError, ModelIntegrityError)):
        return 1, str(exc)
    text = " ".join(str(exc).split())
    return 1, f"{type(exc).__name__}: {text[:300]} (rerun with --debug for the traceback)"


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _check_names(params: Params, args: argparse.Namespace) -> None:
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset not in params.datasets:
        raise ConfigError(f"--dataset {dataset!r}: not in params.yaml datasets {sorted(params.datasets)}")


def _generate(params: Params, args) -> None:
    from pipeline import stages

    stages.generate(params, args.dataset, args.out, args.meta)


def _validate(params: Params, args) -> None:
    from pipeline import stages

    # load_params has already checked everything; reaching here means the file is valid.
    if args.out is not None:
        stages.validate(params, args.out)
    print(f"{args.params}: valid ({len(params.datasets)} datasets)")


def _tune(params: Params, args) -> None:
    from pipeline import stages

    if not args.data.exists():
        raise FileNotFoundError(f"--data {args.data}: not found; run `dvc repro generate@{args.dataset}` first")
    outputs = {  # in the order given, each once
        family: stages.TuneOutputs.under(args.models_dir, args.metrics_dir, args.plots_dir, args.dataset, family)
        for family in args.models
    }
    stages.tune(
        params, args.dataset, args.data, outputs, expected_md5=stages.locked_md5(args.data), workers=args.workers
    )


def _compare(params: Params, args) -> None:
    from pipeline import stages

    stages.compare(params, args.metrics_dir, args.models_dir, args.plots_dir, args.out)


def _promote(params: Params, args) -> None:
    from pipeline import stages

    stages.promote(params, stages.latest_results(params))


def _cleanup(params: Params, args) -> None:
    from pipeline import stages

    stages.cleanup(params)


def _predict(params: Params, args) -> None:
    import os

    import numpy as np

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: the predictions only

    from pipeline.loading import load_model
    from pipeline.stages import predict

    rows = [_floats(row, f"--row {row!r}") for row in args.row]
    if args.csv is not None:
        if not args.csv.is_file():
            raise FileNotFoundError(f"--csv {args.csv}: not found")
        lines = [line for line in args.csv.read_text().splitlines() if line.strip()]
        rows += [_floats(line, f"{args.csv} line {n}") for n, line in enumerate(lines, 1)]
    if not rows:
        raise ConfigError("predict: give input rows with --row x0,x1,... or --csv FILE")
    model = load_model(args.model, params.tracking.mlflow_tracking_uri())
    X = np.array(rows, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.n_features:
        raise ConfigError(f"predict: the model takes {model.n_features} inputs per row, got {X.shape[-1]}")
    for value in predict(model, X):
        print(f"{value:.6g}")


def _floats(text: str, where: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{where}: expected comma-separated numbers") from None


COMMANDS = {
    "validate": _validate,
    "generate": _generate,
    "tune": _tune,
    "compare": _compare,
    "promote": _promote,
    "cleanup": _cleanup,
    "predict": _predict,
}
