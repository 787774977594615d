"""The report's Markdown and JSON (`reports/summary.md`, `reports/summary.json`): totals first, then
one row per dataset sorted by outcome, the verdicts, and every (dataset, model) against the noise
floor and its class optimum. Built from the numbers `compare` collects; nothing here runs a model.

The outcome of a dataset, in the field's terms (SRBench): a *symbolic solution* is an equation
read back from a linear family that is exactly the true one (`reference.is_exact`); an *accuracy
solution* is an R^2 above 0.999 on the validation rows. Times are not here: they differ on every
run, and the report is a DVC output that should change only when results do (MLflow keeps them).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.families import FAMILIES, reaches_floor
from pipeline.report import _code, _num, verdict

ACCURACY_R2 = 0.999  # SRBench's accuracy solution
EMBED_FIGURES = 12  # a summary of more datasets links its figures instead of showing each


def totals(results: dict[str, dict[str, dict]]) -> dict:
    """How many datasets each family solves, symbolically and by accuracy, and reaches the floor with."""
    rows = [overview_row(name, by_model) for name, by_model in results.items()]
    count = {
        "datasets": len(rows),
        "exact": sum(row["exact"] for row in rows),
        "mlp_accurate": sum(row["mlp_r2"] is not None and row["mlp_r2"] > ACCURACY_R2 for row in rows),
    }
    for family in FAMILIES:
        present = [by_model[family] for by_model in results.values() if family in by_model]
        count[f"{family}_reaches_floor"] = sum(reaches_floor(m) for m in present)
        count[f"{family}_exact"] = sum(bool(m.get("recovered_exact")) for m in present)
    return count


def overview_row(name: str, by_model: dict[str, dict]) -> dict:
    """One dataset's outcome: the equation read back (exact, else the cross family's), the MLP's R^2."""
    linear = [f for f in FAMILIES if f != "mlp" and f in by_model]
    exact = [f for f in linear if by_model[f].get("recovered_exact")]
    shown = exact[0] if exact else ("cross" if "cross" in by_model else (linear[0] if linear else None))
    m = by_model.get(shown, {})
    mlp = by_model.get("mlp", {})
    return {
        "dataset": name,
        "true_equation": next(iter(by_model.values())).get("true_equation"),
        "family": shown,
        "recovered_equation": m.get("equation"),
        "n_terms": m.get("n_terms"),
        "exact": bool(exact),
        "network_val_mse": m.get("val_mse"),
        "recovered_val_mse": m.get("recovered_val_mse"),
        "mlp_r2": mlp.get("r2"),
        "mlp_val_mse": mlp.get("val_mse"),
    }


def _outcome(row: dict) -> tuple:
    """Exact recoveries first, then the MLP's accuracy from best to worst."""
    return (not row["exact"], -(row["mlp_r2"] if row["mlp_r2"] is not None else -float("inf")), row["dataset"])


def overview_table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| dataset | true equation | read back (family) | exact | network val_mse | MLP R^2 |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted((overview_row(n, b) for n, b in results.items()), key=_outcome):
        equation = row["recovered_equation"]
        if equation and row["n_terms"] and row["n_terms"] > 8:  # a dense fit says nothing term by term
            equation = f"({row['n_terms']} terms: no short equation)"
        else:
            equation = _code(equation) if equation else "-"
        mlp = "-" if row["mlp_r2"] is None else f"{row['mlp_r2']:.5f}"
        lines.append(
            f"| {row['dataset']} | {_code(row['true_equation'])} | {equation} ({row['family']}) "
            f"| {'yes' if row['exact'] else 'no'} | {_num(row['network_val_mse'])} | {mlp} |"
        )
    return "\n".join(lines)


def detail_table(results: dict[str, dict[str, dict]]) -> str:
    header = (
        "| dataset | model | val_mse | floor | excess | class optimum | gap % | ood_mse | read back: val_mse "
        "| terms found / spurious / missed | coef_error | recovered equation | true equation |"
    )
    lines = [header, "|" + "---|" * 13]
    for dataset, by_model in results.items():
        for family in FAMILIES:
            if family in by_model:
                lines.append(_detail_row(dataset, family, by_model[family]))
    return "\n".join(lines)


def _detail_row(dataset: str, family: str, m: dict) -> str:
    ratio = m.get("gap_ratio")
    counts = [m.get(key) for key in ("terms_found", "terms_spurious", "terms_missed")]
    recovered = "-" if counts[0] is None else " / ".join(str(n) for n in counts)
    read_back = "-" if "recovered_val_mse" not in m else _num(m["recovered_val_mse"])
    if m.get("recovered_exact"):
        read_back += " (exact)"
    return (
        f"| {dataset} | {family} | {_num(m['val_mse'])} | {_num(m['floor_mse'])} | {_num(m['excess'])} "
        f"| {_num(m.get('optimum_mse'))} | {'-' if ratio is None else f'{100 * ratio:.1f}'} | {_num(m['ood_mse'])} "
        f"| {read_back} | {recovered} | {_num(m.get('coef_error'))} "
        f"| {_code(m.get('equation')) or '(an MLP: no equation)'} | {_code(m.get('true_equation'))} |"
    )


def _totals_lines(count: dict) -> list[str]:
    n = count["datasets"]
    return [
        f"- **{count['exact']} of {n}** equations read back exactly from a linear family's weights "
        f"(linear {count['linear_exact']}, cross {count['cross_exact']}): the symbolic solution.",
        f"- **{count['mlp_accurate']} of {n}** fitted by the MLP with R^2 > {ACCURACY_R2} on validation: the "
        "accuracy solution.",
        f"- Networks within reach of the noise floor: linear {count['linear_reaches_floor']}, cross "
        f"{count['cross_reaches_floor']}, MLP {count['mlp_reaches_floor']} of {n}.",
    ]


LEGEND = [
    "`val_mse` is the trained network's own score on the validation rows; `read back` is the score of the",
    "sparse equation read back from a linear family's weights (exact: the true equation, every coefficient",
    "within 1e-6 of the truth, relative, or within 3 standard errors where noise allows no better).",
    "`floor`: the true equation's own error on the validation split (the noise): no model can beat it.",
    "`excess` = val_mse - floor. `class optimum`: least squares on a linear family's own features, fitted",
    "on the training split (the MLP has none); `gap %` = (val_mse - optimum) / optimum. `ood_mse`: inputs",
    "drawn outside the training range. `terms` counts the true terms the read-back equation found, the",
    "spurious ones and the missed ones; `coef_error`: its largest |learned - true| coefficient.",
]


def write_summary(out_dir: Path, results: dict[str, dict[str, dict]], images: list[str]) -> None:
    """summary.md (totals, outcomes, verdicts, every model, figures) and summary.json (totals, rows)."""
    count = totals(results)
    lines = ["# Can a neural network solve linear and nonlinear equations?", "", "## Totals", ""]
    lines += _totals_lines(count)
    lines += ["", "## Outcome per dataset", "", overview_table(results), ""]
    lines += ["## Verdict per dataset", ""] + [f"- {verdict(d, by_model)}" for d, by_model in results.items()]
    lines += ["", "## Every model against the noise floor and its class optimum", "", detail_table(results), ""]
    lines += LEGEND + [""]
    if len(results) <= EMBED_FIGURES:
        lines += [f"![{name}]({name})" for name in images]
    else:
        lines += ["Figures: " + ", ".join(f"[{name}]({name})" for name in images)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    rows = {name: overview_row(name, by_model) for name, by_model in results.items()}
    (out_dir / "summary.json").write_text(json.dumps({"totals": count, "datasets": rows}, indent=2) + "\n")
