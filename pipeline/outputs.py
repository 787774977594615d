"""Where the `tune` stage writes for one (dataset, model family): the DVC outputs of dvc.yaml.

- `<models>/<dataset>-<family>/`: the model directory (`pipeline.model_files`), its figures and,
  for the linear families, the files that say what it learnt;
- `<metrics>/<dataset>-<family>.json`: its scores (a DVC metrics file);
- `<plots>/{loss,predictions,slice}/<dataset>-<family>.csv`: the plot tables of `dvc plots`.

What goes into them is `pipeline.artifacts`'; `compare` reads them back through this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
