"""What the `tune` stage writes for one (dataset, model family), into the places `pipeline.outputs`
names: the model directory (`pipeline.model_files`) with its figures and, for the linear families,
the files that say what it learnt; the metrics; the plot tables.

It writes where it is told: the stage passes the staged places (`TuneOutputs.staged`) and moves
them into place once the run's record is complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import evaluation, model_files, plots
from pipeline.outputs import TuneOutputs, write_metrics

if TYPE_CHECKING:
    from pipeline.data import Dataset, DatasetSpec
    from pipeline.tune import TuneResult


@dataclass(frozen=True)
class Scored:
    """A tuning's best model with what was measured of it: the content of its outputs."""

    result: TuneResult  # the model, its spec, settings and curves
    metrics: dict  # the scores (the DVC metrics file)
    recovered: evaluation.Recovered | None  # linear families: the equation read back
    timings: dict = field(default_factory=dict)  # seconds: MLflow only, they differ on every run


def write(outputs: TuneOutputs, scored: Scored, dataset: Dataset, data_spec: DatasetSpec) -> list[Path]:
    """Write the stage outputs of one family; returns the files of its model directory."""
    result = scored.result
    title = f"{data_spec.name}/{result.spec.family}"
    y_val_pred = evaluation.predict(result.model, dataset.X_val)
    slice_columns = evaluation.slice_table(result.model, data_spec)
    staging = Path(outputs.model_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model_files.write(staging, result.model, result.member, dataset.n_features)
    plots.plot_loss_curve(staging / "loss_curve.png", result.history.train_loss, result.history.val_loss, title)
    plots.plot_predictions(staging / "predictions.png", {title: (dataset.y_val, y_val_pred)}, title)
    plots.plot_slice(staging / "slice.png", {title: slice_columns}, title, evaluation.slice_bands(data_spec))
    if scored.recovered is not None:
        for name, text in evaluation.readable(scored.recovered, data_spec).items():
            (staging / name).write_text(text)
    _write_tables(outputs, result, {"y_true": dataset.y_val, "y_pred": y_val_pred}, slice_columns)
    write_metrics(outputs.metrics, scored.metrics)
    return sorted(staging.iterdir())


def _write_tables(outputs: TuneOutputs, result: TuneResult, predictions: dict, slice_columns: dict) -> None:
    history = result.history
    loss = {"epoch": range(len(history.val_loss)), "train_loss": history.train_loss, "val_loss": history.val_loss}
    plots.write_table(outputs.loss_curve, loss)
    plots.write_table(outputs.predictions, predictions)
    plots.write_table(outputs.slice, slice_columns)
