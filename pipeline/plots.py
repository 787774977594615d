"""The plot tables (CSV for `dvc plots`) and the figures of one model: loss curves, predicted
against true, the fit far beyond the training range.

Matplotlib runs on the Agg backend: no display is needed, in CI or on a server.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def write_table(path: Path, columns: dict[str, Sequence[float]]) -> None:
    """Equal-length columns as a CSV that `dvc plots show` renders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        for row in zip(*columns.values(), strict=True):
            writer.writerow([f"{value:.8g}" for value in row])


def read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def plot_loss_curve(path: Path, train_loss: list[float], val_loss: list[float], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = range(len(train_loss))
    ax.plot(epochs, train_loss, label="train")
    ax.plot(epochs, val_loss, label="validation")
    ax.set_yscale("log")  # losses span many decades on the exact-fit problems
    ax.set(xlabel="epoch", ylabel="MSE", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save_fixed(fig, path)


def predictions_axes(ax: Axes, series: dict[str, tuple]) -> None:
    """Predicted against true: the notebook's scatter, one colour per model."""
    low = min(float(np.min(y_true)) for y_true, _ in series.values())
    high = max(float(np.max(y_true)) for y_true, _ in series.values())
    ax.plot([low, high], [low, high], color="black", lw=1, label="y = prediction")
    for label, (y_true, y_pred) in series.items():
        ax.scatter(y_true, y_pred, s=8, alpha=0.6, label=label)
    ax.set(xlabel="true y (validation)", ylabel="predicted y", title="Predicted vs true")
    ax.legend(fontsize=8)


# Where a slice is inside the training inputs, where it is out of range, and what its t means.
SliceBands = tuple[tuple[float, float], tuple[float, float], str]
SHORTHAND_BANDS: SliceBands = ((-2.0, 2.0), (3.0, 5.0), "t (every input x_i = t)")


def slice_axes(ax: Axes, series: dict[str, dict], bands: SliceBands = SHORTHAND_BANDS) -> None:
    """The fitted function along a line through the inputs, far beyond the training inputs."""
    inside, beyond, xlabel = bands
    first = next(iter(series.values()))
    ax.axvspan(*inside, color="green", alpha=0.08, label="training inputs")
    ax.axvspan(*beyond, color="red", alpha=0.08, label="out-of-range test inputs")
    ax.plot(first["t"], first["y_true"], color="black", lw=2.5, label="true equation")
    for label, columns in series.items():
        ax.plot(columns["t"], columns["y_pred"], lw=1.2, ls="--", label=label)
    ax.set(xlabel=xlabel, ylabel="y", title="Inside and outside the training range")
    ax.legend(fontsize=8)


def plot_predictions(path: Path, series: dict[str, tuple], title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    predictions_axes(ax, series)
    fig.suptitle(title)
    _save_fixed(fig, path)


def plot_slice(path: Path, series: dict[str, dict], title: str, bands: SliceBands = SHORTHAND_BANDS) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    slice_axes(ax, series, bands)
    fig.suptitle(title)
    _save_fixed(fig, path)


def save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _save_fixed(fig: Figure, path: Path) -> None:
    """One axes with room in inches for its tick labels, axis labels and titles. `tight_layout`
    measures all that by laying the figure out once more: a third of what a figure costs, and
    three figures a model, nine a dataset, add up at a table's hundred datasets."""
    width, height = fig.get_size_inches()
    top = 0.75 if fig.get_suptitle() else 0.4  # a figure title above the axes' own
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - top / height)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
