"""Stage `compare`: every (dataset, model) result side by side, the verdicts, the report.

Reads what the `tune` stages wrote (metrics, the linear families' equations and recovery, the
plot tables) and writes `reports/`: `summary.md` (verdicts and table), `comparison.json`,
`comparison.png` and one figure per dataset. The report is also one MLflow run (`role=report`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from pipeline import plots, reference, report, terms
from pipeline.config import Params
from pipeline.data import DatasetSpec
from pipeline.families import FAMILIES
from pipeline.outputs import PLOT_KINDS, OutputDirs, TuneOutputs, read_metrics
from pipeline.stages import specs


def compare(
    params: Params, dirs: OutputDirs, out_dir: Path, tags: dict[str, str] | None = None, progress: Callable = print
) -> dict:
    """Collect every (dataset, model) result and write the report to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    images = ["comparison.png"]
    for dataset in params.datasets:
        results[dataset] = _dataset_results(params, dirs, dataset, out_dir / f"{dataset}.png")
        images.append(f"{dataset}.png")
    _remove_stale_plots(params, dirs, progress)
    report.plot_comparison(out_dir / "comparison.png", results)
    (out_dir / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write_summary(out_dir / "summary.md", results, images)
    _log_report(params, out_dir, tags or {})
    progress(f"report written to {out_dir / 'summary.md'}")
    return results


def _dataset_results(params: Params, dirs: OutputDirs, dataset: str, figure: Path) -> dict[str, dict]:
    """Each family's entry for one dataset; its figure (every family on the same axes) into `figure`."""
    spec = specs.dataset_spec(params, dataset)
    truth = reference.true_coefficients(spec.equation)
    by_family, predictions, slices = {}, {}, {}
    for family in FAMILIES:
        outputs = dirs.of(dataset, family)
        by_family[family] = _entry(params, outputs, spec, family, truth)
        table = plots.read_table(outputs.predictions)
        predictions[family] = (table["y_true"], table["y_pred"])
        slices[family] = plots.read_table(outputs.slice)
    report.plot_dataset(figure, dataset, predictions, slices, (spec.ood_low, spec.ood_high))
    return by_family


def _entry(params: Params, outputs: TuneOutputs, spec: DatasetSpec, family: str, truth: dict | None) -> dict:
    dataset = spec.name
    if not outputs.metrics.exists():
        raise FileNotFoundError(f"{outputs.metrics}: missing; run the tune stage for {dataset} first")
    entry = read_metrics(outputs.metrics)
    equation = outputs.model_dir / "equation.txt"
    entry["equation"] = equation.read_text().strip() if equation.exists() else None
    entry["true_equation"] = reference.format_equation(truth) if truth else f"y = {spec.equation.text}"
    entry |= _context(params, dataset, family, truth)
    found = outputs.model_dir / "recovery.json"
    if found.exists():
        entry["recovery"] = json.loads(found.read_text())
        degree = params.models.cross.degree
        entry["recovery"]["suggestions"] = [reference.suggestion(t, degree) for t in entry["recovery"]["outside"]]
    return entry


def _remove_stale_plots(params: Params, dirs: OutputDirs, progress: Callable) -> None:
    """Plot tables of datasets no longer in params.yaml: DVC leaves the outputs of stages that are
    gone, and `dvc plots show` would still draw them."""
    current = {getattr(dirs.of(d, f), kind) for d in params.datasets for f in FAMILIES for kind in PLOT_KINDS}
    for folder in {path.parent for path in current}:
        for table in sorted(Path(folder).glob("*.csv")):
            if table not in current:
                table.unlink()
                progress(f"removed {table}: its dataset is no longer in params.yaml")


def _context(params: Params, dataset: str, family: str, truth: dict | None) -> dict:
    """What the verdicts need to know of a dataset beside the scores: rows, features, noise, shape."""
    cfg = params.datasets[dataset]
    n_train = cfg.n_samples - max(1, round(cfg.n_samples * cfg.val_fraction))  # as `data.generate` splits
    n_terms = len(specs.terms_for(params, cfg.n_features)) if family == "cross" else 0
    linear = truth is not None and all(name == terms.CONSTANT or terms.degree_of(name) == 1 for name in truth)
    return {
        "n_train": n_train,
        "n_inputs": cfg.n_features,
        "n_model_features": cfg.n_features + n_terms if family != "mlp" else None,
        "noise": cfg.noise,
        # Linear in its inputs: straight-line extrapolation is then exactly right.
        "linear_truth": linear,
    }


def _log_report(params: Params, out_dir: Path, tags: dict[str, str]) -> None:
    """The report as one MLflow run (tag role=report) beside the parent runs it summarises."""
    from pipeline.tracking import Tracker, commit_tags

    tracker = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment, tags=commit_tags() | tags)
    with tracker.run("report", {"role": "report"}) as run_id:
        tracker.log_artifacts(run_id, sorted(out_dir.iterdir()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-dir", type=Path, required=True, help="directory of the tune stages' metrics")
    parser.add_argument("--models-dir", type=Path, required=True, help="directory of the tune stages' model dirs")
    parser.add_argument("--plots-dir", type=Path, required=True, help="directory of the tune stages' plot tables")
    parser.add_argument("--out", type=Path, required=True, help="report directory to write")


def main(args: argparse.Namespace, params: Params) -> None:
    compare(params, OutputDirs(args.models_dir, args.metrics_dir, args.plots_dir), args.out)
