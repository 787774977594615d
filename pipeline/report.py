"""The comparison a person reads without MLflow: the figures across families, the verdicts
computed from the numbers, and the Markdown summary (`reports/summary.md`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.families import FAMILIES, best_family, reaches_floor
from pipeline.plots import plt, predictions_axes, save, slice_axes  # plt: on the Agg backend plots chose


def plot_dataset(path: Path, dataset: str, predictions: dict, slices: dict, ood: tuple[float, float]) -> None:
    """Both views of one dataset, every model family on the same axes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    predictions_axes(left, predictions)
    slice_axes(right, slices, ood)
    fig.suptitle(f"{dataset}: every model family")
    save(fig, path)


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
    save(fig, path)


def summary_table(results: dict[str, dict[str, dict]]) -> str:
    header = (
        "| dataset | model | val_mse | floor | excess | class optimum | gap % | ood_mse | terms found / spurious "
        "/ missed | coef_error | train s | recovered equation | true equation |"
    )
    lines = [header, "|" + "---|" * 13]
    for dataset, by_model in results.items():
        for family in FAMILIES:
            if family not in by_model:
                continue
            m = by_model[family]
            ratio = m.get("gap_ratio")
            counts = [m.get(key) for key in ("terms_found", "terms_spurious", "terms_missed")]
            recovered = "-" if counts[0] is None else " / ".join(str(n) for n in counts)
            lines.append(
                f"| {dataset} | {family} | {_num(m['val_mse'])} | {_num(m['floor_mse'])} | {_num(m['excess'])} "
                f"| {_num(m.get('optimum_mse'))} | {'-' if ratio is None else f'{100 * ratio:.1f}'} "
                f"| {_num(m['ood_mse'])} | {recovered} | {_num(m.get('coef_error'))} | {m.get('train_seconds', 0):.1f} "
                f"| {_code(m.get('equation')) or '(an MLP: no equation)'} | {_code(m.get('true_equation'))} |"
            )
    return "\n".join(lines)


def _code(text: str | None) -> str:
    # In backticks: GitHub and MLflow render `2.000*x0*x1` as text, not as emphasis.
    return f"`{text}`" if text else ""


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def verdict(dataset: str, by_model: dict[str, dict]) -> str:
    """Sentences computed from the numbers alone: which family reaches the floor, which does not and
    why, and what happens out of range where that differs between them."""
    families = [f for f in FAMILIES if f in by_model]
    floor = by_model[families[0]]["floor_mse"]
    reached = [f for f in families if reaches_floor(by_model[f])]
    right = best_family(by_model)
    noise = f"the noise floor is {_num(floor)}" if floor > 1e-12 else "there is no noise (floor 0)"
    best = f"val_mse {_num(by_model[right]['val_mse'])}"
    if reached:
        text = f"**{dataset}**: `{right}` reaches the floor ({best}; {noise})"
    else:
        text = f"**{dataset}**: no family reaches the floor ({noise}); `{right}` comes closest ({best})"
    reasons = [_shortfall(f, by_model[f], by_model) for f in families if f not in reached]
    text += ". " + " ".join(reasons) if reasons else "."
    return (text.rstrip(".") + "." + _extrapolation(by_model, right)).strip()


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


def write_summary(path: Path, results: dict[str, dict[str, dict]], images: list[str]) -> None:
    lines = ["# Can a neural network solve linear and nonlinear equations?", "", "## Verdict per dataset", ""]
    lines += [f"- {verdict(dataset, by_model)}" for dataset, by_model in results.items()]
    lines += ["", "## Every model against the noise floor and its class optimum", "", summary_table(results), ""]
    lines += [
        "`floor`: the true equation's own error on the validation split (the noise): no model can beat it.",
        "`excess` = val_mse - floor. `class optimum`: least squares on a linear family's own features, fitted",
        "on the training split (the MLP has none); `gap %` = (val_mse - optimum) / optimum. `ood_mse`: inputs",
        "drawn outside the training range. Linear families are read back as sparse equations: the trained",
        "weights thresholded (threshold chosen on validation data) and the kept terms refit; `terms` counts",
        "the true terms found, the spurious ones and the missed ones; `coef_error`: the largest |learned - true|",
        "coefficient, where the family can express the equation.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
