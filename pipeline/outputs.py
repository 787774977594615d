"""Where the `tune` stage writes for one (dataset, model family): the DVC outputs of dvc.yaml.

- `<models>/<dataset>-<family>/`: the model directory (`pipeline.model_files`), its figures and,
  for the linear families, the files that say what it learnt;
- `<metrics>/<dataset>-<family>.json`: its scores (a DVC metrics file);
- `<plots>/{loss,predictions,slice}/<dataset>-<family>.csv`: the plot tables of `dvc plots`.

What goes into them is `pipeline.artifacts`'; `compare` reads them back through this module.

They are written first to hidden places beside their own (`staged`) and moved into place
(`publish`) only once the run's record is complete: a tuning that fails, however late, leaves the
previous outputs as they were (`discard` removes what it staged).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

PLOT_KINDS = ("loss_curve", "predictions", "slice")


@dataclass(frozen=True)
class TuneOutputs:
    """Where stage `tune` writes: dvc.yaml's outs for one (dataset, model)."""

    model_dir: Path  # weights, spec, readable artifacts (a DVC-cached directory)
    metrics: Path  # JSON scores (a DVC metrics file)
    loss_curve: Path  # CSV epoch, train_loss, val_loss (a DVC plot)
    predictions: Path  # CSV y_true, y_pred on validation (a DVC plot)
    slice: Path  # CSV t, y_true, y_pred along the diagonal x_i = t, far beyond training (a DVC plot)

    def paths(self) -> list[Path]:
        return [Path(getattr(self, f.name)) for f in fields(self)]

    def staged(self) -> TuneOutputs:
        """The same outputs at hidden places beside these (`.<name>.tmp`): where they are written."""
        return replace(self, **{f.name: _hidden(Path(getattr(self, f.name))) for f in fields(self)})


def _hidden(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def publish(staged: TuneOutputs, final: TuneOutputs) -> None:
    """Move each staged output over its final place (a rename each, in one file system)."""
    for source, target in zip(staged.paths(), final.paths(), strict=True):
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(source, target)


def discard(staged: TuneOutputs) -> None:
    for path in staged.paths():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class OutputDirs:
    """The three folders the `tune` stages write into (dvc.yaml: models, metrics, plots)."""

    models: Path
    metrics: Path
    plots: Path

    def of(self, dataset: str, family: str) -> TuneOutputs:
        """The files of one (dataset, model), named `<dataset>-<model>`."""
        key = f"{dataset}-{family}"
        plots_dir = Path(self.plots)
        return TuneOutputs(
            model_dir=Path(self.models) / key,
            metrics=Path(self.metrics) / f"{key}.json",
            loss_curve=plots_dir / "loss" / f"{key}.csv",
            predictions=plots_dir / "predictions" / f"{key}.csv",
            slice=plots_dir / "slice" / f"{key}.csv",
        )


def write_metrics(path: Path, metrics: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({k: v for k, v in metrics.items() if v is not None}, indent=2) + "\n")


def read_metrics(path: Path) -> dict:
    return json.loads(Path(path).read_text())
