"""Stage `compare`: every (dataset, model) result side by side, the verdicts, the report.

Reads what the `tune` stages wrote (metrics, the linear families' equations and recovery, the
plot tables) and writes `reports/`: `summary.md` (verdicts and table), `comparison.json`,
`comparison.png` and one figure per dataset. The report is also one MLflow run (`role=report`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from pipeline import evaluation, plots, reference, report, summary, terms
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
    results: dict[str, dict[str, dict]] = {}
    figures = []
    for dataset in params.datasets:
        results[dataset], figure = _dataset_results(params, dirs, dataset)
        figures.append(figure)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once every input is read: a missing one writes nothing
    _remove_stale_plots(params, dirs, progress)
    images = ["comparison.png", *report.plot_datasets(out_dir, figures, progress)]
    report.plot_comparison(out_dir / "comparison.png", results)
    (out_dir / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    summary.write_summary(out_dir, results, images)
    _log_report(params, out_dir, tags or {}, progress)
    progress(f"report written to {out_dir / 'summary.md'}")
    return results


def _dataset_results(params: Params, dirs: OutputDirs, dataset: str) -> tuple[dict[str, dict], report.DatasetFigure]:
    """Each family's entry for one dataset, and its figure (every family on the same axes)."""
    spec = specs.dataset_spec(params, dataset)
    truth = reference.true_coefficients(spec.equation, spec.positive)
    by_family, predictions, slices, bands = {}, {}, {}, evaluation.slice_bands(spec)
    digest = hashlib.md5(repr((dataset, bands, _FIGURE_CODE)).encode())
    for family in FAMILIES:
        outputs = dirs.of(dataset, family)
        by_family[family] = _entry(params, outputs, spec, family, truth)
        table = plots.read_table(outputs.predictions)
        predictions[family] = (table["y_true"], table["y_pred"])
        slices[family] = plots.read_table(outputs.slice)
        for path in (outputs.predictions, outputs.slice):
            digest.update(path.read_bytes())
    figure = report.DatasetFigure(dataset, digest.hexdigest(), predictions, slices, bands)
    return by_family, figure


# The code that draws a figure is part of what it is drawn from: a change of style redraws them all.
_FIGURE_CODE = hashlib.md5(Path(plots.__file__).read_bytes() + Path(report.__file__).read_bytes()).hexdigest()


def _entry(params: Params, outputs: TuneOutputs, spec: DatasetSpec, family: str, truth: dict | None) -> dict:
    dataset = spec.name
    if not outputs.metrics.exists():
        raise FileNotFoundError(f"{outputs.metrics}: missing; run the tune stage for {dataset} first")
    entry = read_metrics(outputs.metrics)
    equation = outputs.model_dir / "equation.txt"
    entry["equation"] = equation.read_text().strip() if equation.exists() else None
    variables = spec.equation.variables
    written = f"{reference.target(variables)} = {spec.equation.text}"
    entry["true_equation"] = reference.format_equation(truth, variables) if truth else written
    entry |= _context(params, dataset, entry, truth)
    found = outputs.model_dir / "recovery.json"
    if found.exists():
        entry["recovery"] = recovery = json.loads(found.read_text())
        cross = params.models.cross
        now = reference.Library(cross.degree, tuple(cross.functions), tuple(cross.powers))
        recovery["suggestions"] = [reference.suggestion(t, now, variables) for t in recovery["outside"]]
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


def _context(params: Params, dataset: str, entry: dict, truth: dict | None) -> dict:
    """What the verdicts need to know of a dataset beside the scores: rows, features, noise, shape."""
    cfg = params.datasets[dataset]
    n_train = cfg.n_samples - max(1, round(cfg.n_samples * cfg.val_fraction))  # as `data.generate` splits
    inputs = cfg.inputs
    linear = truth is not None and all(name == terms.CONSTANT or terms.degree_of(name, inputs) == 1 for name in truth)
    return {
        "n_train": n_train,
        "n_inputs": len(inputs),
        # A linear family's parameters: one weight per feature (inputs and terms) and a bias.
        "n_model_features": int(entry["n_parameters"]) - 1 if "optimum_mse" in entry else None,
        "noise": cfg.noise,
        "noise_relative": cfg.noise_relative,
        # Linear in its inputs: straight-line extrapolation is then exactly right.
        "linear_truth": linear,
    }


def _log_report(params: Params, out_dir: Path, tags: dict[str, str], progress: Callable) -> None:
    """The report as one MLflow run (tag role=report) beside the parent runs it summarises."""
    from pipeline.tracking import Tracker, commit_tags, runs_link, ui_base

    uri = params.tracking.mlflow_tracking_uri()
    tracker = Tracker(uri, params.tracking.experiment, tags=commit_tags() | tags)
    tracker.save_views(list(params.datasets))
    # Its description links each dataset's parent runs (relative links: any host of the UI), as
    # many as MLflow's 8,000 characters of a tag hold.
    note = "The report: `summary.md` and the figures, under Artifacts. Parent runs by dataset:"
    for n, dataset in enumerate(params.datasets):
        link = f" [{dataset}]({runs_link('', tracker.experiment_id, dataset).lstrip('/')})"
        if len(note) + len(link) > 7_900:
            note += f" and {len(params.datasets) - n} more (their parent runs: filter on tags.dataset)."
            break
        note += link
    with tracker.run("report", {"role": "report", "mlflow.note.content": note}) as run_id:
        tracker.log_artifacts(run_id, sorted(out_dir.iterdir()))
    progress(f"MLflow, the parent runs best first: {runs_link(ui_base(uri), tracker.experiment_id)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-dir", type=Path, required=True, help="directory of the tune stages' metrics")
    parser.add_argument("--models-dir", type=Path, required=True, help="directory of the tune stages' model dirs")
    parser.add_argument("--plots-dir", type=Path, required=True, help="directory of the tune stages' plot tables")
    parser.add_argument("--out", type=Path, required=True, help="report directory to write")


def main(args: argparse.Namespace, params: Params) -> None:
    compare(params, OutputDirs(args.models_dir, args.metrics_dir, args.plots_dir), args.out)
