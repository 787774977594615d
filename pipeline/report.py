"""Plots and tables a person reads without MLflow: loss curves, predicted against true, fits far
beyond the training range, the comparison chart and the Markdown summary with its verdicts.

Matplotlib runs on the Agg backend: no display is needed, in CI or on a server.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from pipeline.config import FAMILIES  # simplest first: in a tie the verdict picks the simpler family

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


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
    _save(fig, path)


def _predictions_axes(ax, series: dict[str, tuple]) -> None:
    """Predicted against true: the notebook's scatter, one colour per model."""
    low = min(float(np.min(y_true)) for y_true, _ in series.values())
    high = max(float(np.max(y_true)) for y_true, _ in series.values())
    ax.plot([low, high], [low, high], color="black", lw=1, label="y = prediction")
    for label, (y_true, y_pred) in series.items():
        ax.scatter(y_true, y_pred, s=8, alpha=0.6, label=label)
    ax.set(xlabel="true y (validation)", ylabel="predicted y", title="Predicted vs true")
    ax.legend(fontsize=8)


def _slice_axes(ax, series: dict[str, dict], ood: tuple[float, float] | None) -> None:
    """The fitted function along x_i = t for every i, far beyond the training inputs."""
    first = next(iter(series.values()))
    ax.axvspan(-2, 2, color="green", alpha=0.08, label="95% of training inputs")
    if ood is not None:
        ax.axvspan(*ood, color="red", alpha=0.08, label="out-of-range test inputs")
    ax.plot(first["t"], first["y_true"], color="black", lw=2.5, label="true equation")
    for label, columns in series.items():
        ax.plot(columns["t"], columns["y_pred"], lw=1.2, ls="--", label=label)
    ax.set(xlabel="t (every input x_i = t)", ylabel="y", title="Inside and outside the training range")
    ax.legend(fontsize=8)


def plot_predictions(path: Path, series: dict[str, tuple], title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    _predictions_axes(ax, series)
    fig.suptitle(title)
    _save(fig, path)


def plot_slice(path: Path, series: dict[str, dict], title: str, ood: tuple[float, float] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    _slice_axes(ax, series, ood)
    fig.suptitle(title)
    _save(fig, path)


def plot_dataset(path: Path, dataset: str, predictions: dict, slices: dict, ood: tuple[float, float]) -> None:
    """Both views of one dataset, every model family on the same axes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    _predictions_axes(left, predictions)
    _slice_axes(right, slices, ood)
    fig.suptitle(f"{dataset}: every model family")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_comparison(path: Path, results: dict[str, dict[str, dict]]) -> None:
    """val_mse and ood_mse of every (dataset, model), side by side on a log scale."""
    labels, val, ood = [], [], []
    for dataset, by_model in results.items():
        for family in FAMILIES:
            if family in by_model:
                labels.append(f"{dataset}\n{family}")
                val.append(max(by_model[family]["val_mse"], 1e-16))
                ood.append(max(by_model[family]["ood_mse"], 1e-16))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4.5), dpi=100)
    positions = range(len(labels))
    ax.bar([p - 0.2 for p in positions], val, width=0.4, label="validation (in range)")
    ax.bar([p + 0.2 for p in positions], ood, width=0.4, label="out of range")
    ax.set_yscale("log")
    ax.set_xticks(list(positions), labels, fontsize=8)
    ax.set(ylabel="MSE (floored at 1e-16)", title="In-range vs out-of-range error")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend()
    _save(fig, path)


def summary_table(results: dict[str, dict[str, dict]]) -> str:
    header = (
        "| dataset | model | val_mse | optimum_mse | gap | gap % | ood_mse | coef_error | train s "
        "| recovered equation | true equation |"
    )
    lines = [header, "|" + "---|" * 11]
    for dataset, by_model in results.items():
        for family in FAMILIES:
            if family not in by_model:
                continue
            m = by_model[family]
            ratio = m.get("gap_ratio")
            lines.append(
                f"| {dataset} | {family} | {_num(m['val_mse'])} | {_num(m['optimum_mse'])} | {_num(m['gap'])} "
                f"| {'-' if ratio is None else f'{100 * ratio:.1f}'} | {_num(m['ood_mse'])} "
                f"| {_num(m.get('coef_error'))} | {m.get('train_seconds', 0):.1f} "
                f"| {m.get('equation') or '(an MLP: no equation)'} | {m.get('true_equation', '')} |"
            )
    return "\n".join(lines)


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def verdict(dataset: str, by_model: dict[str, dict], rel_tol: float = 0.1) -> str:
    """One sentence, from the numbers, on which family is the right tool for `dataset`."""
    best_val = min(m["val_mse"] for m in by_model.values())
    # The simplest family whose error is within rel_tol of the best (or within float noise of 0).
    right = next(f for f in FAMILIES if f in by_model and by_model[f]["val_mse"] <= best_val * (1 + rel_tol) + 1e-8)
    chosen = by_model[right]
    sentence = f"**{dataset}**: `{right}` is the right tool (val_mse {_num(chosen['val_mse'])}"
    others = [f"{f} {_num(by_model[f]['val_mse'])}" for f in FAMILIES if f in by_model and f != right]
    sentence += f"; {', '.join(others)})" if others else ")"
    if right != "mlp" and "mlp" in by_model:
        mlp_ood = by_model["mlp"]["ood_mse"]
        ratio = mlp_ood / max(chosen["ood_mse"], 1e-12)
        if ratio > 10 and mlp_ood > 1e-2:  # only when the MLP is materially wrong out of range
            sentence += (
                f", and out of the training range the ReLU MLP's error is {ratio:.3g} times larger "
                f"(ood_mse {_num(mlp_ood)} against {_num(chosen['ood_mse'])}): it is piecewise linear "
                "and extrapolates with straight lines"
            )
    elif right == "mlp":
        sentence += ": no linear family reaches it with the configured features"
    return sentence + "."


def write_summary(path: Path, results: dict[str, dict[str, dict]], images: list[str]) -> None:
    lines = ["# Can a neural network solve linear and nonlinear equations?", "", "## Verdict per dataset", ""]
    lines += [f"- {verdict(dataset, by_model)}" for dataset, by_model in results.items()]
    lines += ["", "## Every model against the best its family can reach", "", summary_table(results), ""]
    lines += [
        "`optimum_mse`: least squares on the family's own features, fitted on the training split (for the",
        "MLP: on the raw features plus every pairwise product and square). `gap` = val_mse - optimum_mse,",
        "and as a percentage of a non-zero optimum. `ood_mse`: inputs drawn outside the training range.",
        "`coef_error`: largest |learned - true| coefficient, where the family can represent the equation.",
        "Equations drop terms whose weight is below 1e-3 in magnitude.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
