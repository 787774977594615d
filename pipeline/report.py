"""The comparison a person reads without MLflow: the figures across families and the verdicts
computed from the numbers (the Markdown summary that holds them is `pipeline.summary`'s).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from pipeline.families import FAMILIES, best_family, reaches_floor
from pipeline.plots import SliceBands, plt, predictions_axes, save, slice_axes  # plt: on the Agg backend plots chose

FIGURES_INDEX = "figures.json"  # beside the figures: the digest of what each was drawn from
POOL_FROM = 8  # figures to draw before a second process pays for its start


@dataclass(frozen=True)
class DatasetFigure:
    """One dataset's figure and what it is drawn from; `digest` names those inputs (the plot
    tables' bytes), so an unchanged dataset keeps its figure instead of being drawn again."""

    dataset: str
    digest: str
    predictions: dict
    slices: dict
    bands: SliceBands


def plot_dataset(path: Path, figure: DatasetFigure) -> None:
    """Both views of one dataset, every model family on the same axes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    predictions_axes(left, figure.predictions)
    slice_axes(right, figure.slices, figure.bands)
    fig.suptitle(f"{figure.dataset}: every model family")
    save(fig, path)


def plot_datasets(out_dir: Path, figures: list[DatasetFigure], progress: Callable = print) -> list[str]:
    """`<dataset>.png` in `out_dir` for each figure, drawing only those whose inputs changed since
    the last report (at table size a figure costs a third of a second, and a changed dataset
    should not redraw a hundred); removes the figures of datasets that are gone. Returns the
    file names, in order."""
    index_path = out_dir / FIGURES_INDEX
    drawn = json.loads(index_path.read_text()) if index_path.exists() else {}
    names = {f"{figure.dataset}.png": figure for figure in figures}
    todo = [(out_dir / n, f) for n, f in names.items() if drawn.get(n) != f.digest or not (out_dir / n).exists()]
    for name in set(drawn) - set(names):
        (out_dir / name).unlink(missing_ok=True)
    index_path.unlink(missing_ok=True)  # rewritten below once every figure is in place
    if len(todo) >= POOL_FROM and (os.cpu_count() or 1) > 1:
        progress(f"drawing {len(todo)} dataset figures in {min(os.cpu_count() or 1, 4)} processes")
        with ProcessPoolExecutor(min(os.cpu_count() or 1, 4), mp_context=get_context("spawn")) as pool:
            list(pool.map(plot_dataset, *zip(*todo, strict=True)))
    else:
        for path, figure in todo:
            plot_dataset(path, figure)
    index_path.write_text(json.dumps({name: f.digest for name, f in names.items()}, indent=1, sort_keys=True) + "\n")
    return list(names)


def plot_comparison(path: Path, results: dict[str, dict[str, dict]]) -> None:
    """val_mse and ood_mse of every (dataset, model): bars side by side for a few datasets, and
    at table size each family's scores sorted (how many datasets reach a given error)."""
    if len(results) > 12:
        return _plot_sorted_scores(path, results)
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
    save(fig, path)


def _plot_sorted_scores(path: Path, results: dict[str, dict[str, dict]]) -> None:
    """A hundred datasets do not fit as bars: per family, its validation and out-of-range MSE
    sorted from best to worst, so one reads off how many datasets reach any error level."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for i, family in enumerate(FAMILIES):
        scores = [by_model[family] for by_model in results.values() if family in by_model]
        for key, style in (("val_mse", "-"), ("ood_mse", ":")):
            values = sorted(max(m[key], 1e-16) for m in scores)
            where = "validation" if key == "val_mse" else "out of range"
            ax.plot(range(1, len(values) + 1), values, ls=style, color=f"C{i}", label=f"{family}, {where}")
    ax.set_yscale("log")
    ax.set(xlabel="datasets, best first", ylabel="MSE (floored at 1e-16)")
    ax.set_title(f"Each family's error over {len(results)} datasets, sorted")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def _code(text: str | None) -> str:
    # In backticks: GitHub and MLflow render `2.000*x0*x1` as text, not as emphasis.
    return f"`{text}`" if text else ""


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def verdict(dataset: str, by_model: dict[str, dict]) -> str:
    """Sentences computed from the numbers alone: which family's network reaches the floor, which
    does not and why, whether the equation read back from a linear family is the true one, and
    what happens out of range where that differs between them."""
    families = [f for f in FAMILIES if f in by_model]
    floor = by_model[families[0]]["floor_mse"]
    reached = [f for f in families if reaches_floor(by_model[f])]
    right = best_family(by_model)
    noise = f"the noise floor is {_num(floor)}" if floor > 1e-12 else "there is no noise (floor 0)"
    best = f"val_mse {_num(by_model[right]['val_mse'])}"
    if reached:
        text = f"**{dataset}**: `{right}` reaches the floor ({best}; {noise})"
    else:
        text = f"**{dataset}**: no family's network reaches the floor ({noise}); `{right}` comes closest ({best})"
    text += "." + _read_back(by_model)
    reasons = [_shortfall(f, by_model[f], by_model) for f in families if f not in reached]
    text += " " + " ".join(reasons) if reasons else ""
    return (text.rstrip(".") + "." + _extrapolation(by_model, right)).strip()


def _read_back(by_model: dict[str, dict]) -> str:
    """The equation read back from the linear families' weights: exact, or how close."""
    exact = [f for f in FAMILIES if by_model.get(f, {}).get("recovered_exact")]
    if exact:
        m = by_model[exact[0]]
        return (
            f" The equation read back from `{exact[0]}`'s weights is the true one, exactly "
            f"({_code(m.get('equation'))}, val_mse {_num(m['recovered_val_mse'])})."
        )
    tried = [f for f in FAMILIES if "recovered_val_mse" in by_model.get(f, {})]
    if not tried:
        return ""
    closest = min(tried, key=lambda f: by_model[f]["recovered_val_mse"])
    m = by_model[closest]
    state = "does not reach the floor"
    if reaches_floor(m | {"excess": m["recovered_val_mse"] - m["floor_mse"]}):
        state = "reaches the floor"
    return (
        f" No equation read back is the true one; the closest, `{closest}`'s ({m.get('n_terms', '?')} terms), "
        f"{state} (val_mse {_num(m['recovered_val_mse'])})."
    )


def _shortfall(family: str, m: dict, by_model: dict[str, dict]) -> str:
    """Why one family stays above the floor, from its own numbers."""
    ratio = f"val_mse {_num(m['val_mse'])}"
    if family == "mlp":
        linear = [f for f in FAMILIES if f != "mlp" and f in by_model]
        best = min(linear, key=lambda f: by_model[f]["val_mse"]) if linear else None
        if best is not None and m["val_mse"] < by_model[best]["val_mse"]:
            return (
                f"The MLP does better than any linear family ({ratio} against {_num(by_model[best]['val_mse'])} "
                f"for `{best}`) but stays above the floor, and it is an approximation with no equation to read."
            )
        return f"The MLP stays at {ratio}: an approximation, with no equation to read."
    recovery = m.get("recovery") or {}
    if recovery.get("outside"):
        missing = ", ".join(f"`{t}`" for t in recovery["outside"])
        hint = "; ".join(recovery.get("suggestions") or []) if family == "cross" else "they are the cross family's job"
        return f"`{family}` ({ratio}) cannot express {missing}: not among its features ({hint})."
    if m.get("n_model_features") and m["n_model_features"] >= m.get("n_train", 0):
        return (
            f"`{family}` ({ratio}) has too few rows: {m['n_model_features']} features for {m['n_train']} training "
            "rows, so least squares cannot pin its weights down."
        )
    if m.get("gap_ratio") is not None and m["gap_ratio"] > 0.1 or m.get("optimum_mse", 0) < m["val_mse"] * 0.5:
        return f"`{family}` ({ratio}) stops short of its class optimum ({_num(m.get('optimum_mse'))})."
    return f"`{family}` ({ratio}) reaches its class optimum ({_num(m.get('optimum_mse'))}), which is above the floor."


def _extrapolation(by_model: dict[str, dict], right: str) -> str:
    """Only where out of range really differs: the MLP against a family with an equation."""
    if right == "mlp" or "mlp" not in by_model:
        return ""
    mlp, best = by_model["mlp"], by_model[right]
    ratio = mlp["ood_mse"] / max(best["ood_mse"], 1e-12)
    if ratio <= 10 or mlp["ood_mse"] <= 10 * max(mlp["val_mse"], 1e-12):
        return ""  # out of range the MLP does no worse than in range, or than the equation
    linear = mlp.get("linear_truth")
    why = (
        "straight lines are right for this equation, so what goes wrong is its in-range fit, amplified"
        if linear
        else "a ReLU MLP is piecewise linear and extrapolates with straight lines"
    )
    return (
        f" Out of the training range the MLP's error is {ratio:.3g} times `{right}`'s "
        f"(ood_mse {_num(mlp['ood_mse'])} against {_num(best['ood_mse'])}): {why}."
    )
