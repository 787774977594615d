"""Plots and tables a person reads without MLflow: loss curves, the comparison table.

Matplotlib runs on the Agg backend: no display is needed, in CI or on a server.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def write_loss_csv(path: Path, train_loss: list[float], val_loss: list[float]) -> None:
    """The loss curve as a table that `dvc plots show` renders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss"])
        for epoch, (train, val) in enumerate(zip(train_loss, val_loss, strict=True)):
            writer.writerow([epoch, f"{train:.6g}", f"{val:.6g}"])


def plot_loss_curve(path: Path, train_loss: list[float], val_loss: list[float], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = range(len(train_loss))
    ax.plot(epochs, train_loss, label="train")
    ax.plot(epochs, val_loss, label="validation")
    ax.set_yscale("log")  # losses span many decades on the exact-fit problems
    ax.set(xlabel="epoch", ylabel="MSE", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


FAMILY_ORDER = ("linear", "cross", "mlp")  # simplest first: ties go to the simpler family


def plot_comparison(path: Path, results: dict[str, dict[str, dict]]) -> None:
    """val_mse and ood_mse of every (dataset, model), side by side on a log scale."""
    labels, val, ood = [], [], []
    for dataset, by_model in results.items():
        for family in FAMILY_ORDER:
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary_table(results: dict[str, dict[str, dict]]) -> str:
    header = "| dataset | model | val_mse | optimum_mse | gap | ood_mse | coef_error | train s | recovered equation |"
    lines = [header, "|" + "---|" * 9]
    for dataset, by_model in results.items():
        for family in FAMILY_ORDER:
            if family not in by_model:
                continue
            m = by_model[family]
            lines.append(
                f"| {dataset} | {family} | {_num(m['val_mse'])} | {_num(m['optimum_mse'])} | {_num(m['gap'])} "
                f"| {_num(m['ood_mse'])} | {_num(m.get('coef_error'))} | {m.get('train_seconds', 0):.1f} "
                f"| {m.get('equation') or '(not linear in features)'} |"
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
    right = next(f for f in FAMILY_ORDER if f in by_model and by_model[f]["val_mse"] <= best_val * (1 + rel_tol) + 1e-8)
    chosen = by_model[right]
    sentence = f"**{dataset}**: `{right}` is the right tool (val_mse {_num(chosen['val_mse'])}"
    others = [f"{f} {_num(by_model[f]['val_mse'])}" for f in FAMILY_ORDER if f in by_model and f != right]
    sentence += f"; {', '.join(others)})" if others else ")"
    if right != "mlp" and "mlp" in by_model:
        ratio = by_model["mlp"]["ood_mse"] / max(chosen["ood_mse"], 1e-12)
        if ratio > 10:
            sentence += (
                f", and out of the training range the ReLU MLP's error is {ratio:.3g} times larger: "
                "it is piecewise linear and extrapolates with straight lines"
            )
    elif right == "mlp":
        sentence += ": no linear family reaches it with the configured features"
    return sentence + "."


def write_summary(path: Path, results: dict[str, dict[str, dict]], images: list[str]) -> None:
    lines = ["# Can a neural network solve linear and nonlinear equations?", "", "## Verdict per dataset", ""]
    lines += [f"- {verdict(dataset, by_model)}" for dataset, by_model in results.items()]
    lines += ["", "## Every model against the best its family can reach", "", summary_table(results), ""]
    lines += [
        "`optimum_mse`: least squares on the family's own features (for the MLP: on the raw features",
        "plus all pairwise crosses). `gap` = val_mse - optimum_mse. `ood_mse`: inputs drawn outside the",
        "training range. `coef_error`: largest |learned - true| coefficient, where the family can",
        "represent the equation.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
