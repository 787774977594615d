"""The report's verdicts, computed from the numbers alone: synthetic result tables in, sentences out."""

from __future__ import annotations

from pipeline.report import reaches_floor, verdict
from pipeline.summary import detail_table


def row(val: float, floor: float = 0.0, ood: float | None = None, **extra) -> dict:
    return {"val_mse": val, "floor_mse": floor, "excess": val - floor, "ood_mse": val if ood is None else ood} | extra


def linear_row(val, floor=0.0, ood=None, optimum=None, outside=(), suggestions=(), **extra) -> dict:
    optimum = val if optimum is None else optimum
    recovery = {"outside": list(outside), "suggestions": list(suggestions)}
    return row(val, floor, ood, optimum_mse=optimum, gap_ratio=None, recovery=recovery, **extra)


def test_the_floor_is_reached_within_ten_percent_or_one_in_a_million():
    assert reaches_floor(row(0.00270, floor=0.0025)) and not reaches_floor(row(0.00280, floor=0.0025))
    assert reaches_floor(row(9e-7)) and not reaches_floor(row(2e-6))


def test_a_missing_term_is_named_with_what_to_change():
    hint = "`x0*x1*x3` has degree 3: `dvc exp run -S models.cross.degree=3`"
    results = {
        "linear": linear_row(0.82, outside=["x0*x1*x3"]),
        "cross": linear_row(0.82, outside=["x0*x1*x3"], suggestions=[hint]),
        "mlp": row(0.025, ood=3000.0),
    }
    sentence = verdict("triple", results)
    assert sentence.startswith(
        "**triple**: no family's network reaches the floor (there is no noise (floor 0)); `mlp` comes"
    )
    assert "`cross` (val_mse 0.82) cannot express `x0*x1*x3`" in sentence
    assert "`dvc exp run -S models.cross.degree=3`" in sentence
    assert "The MLP does better than any linear family (val_mse 0.025 against 0.82 for `linear`)" in sentence
    assert "extrapolates" not in sentence  # no family with an equation to compare with out of range


def test_extrapolation_is_blamed_on_straight_lines_only_where_the_truth_is_curved():
    curved = {"cross": linear_row(1e-13, ood=1e-12), "mlp": row(0.008, ood=334.0, linear_truth=False)}
    assert "a ReLU MLP is piecewise linear and extrapolates with straight lines" in verdict("product", curved)
    straight = {"linear": linear_row(1e-13, ood=1e-12), "mlp": row(0.5, ood=40.0, linear_truth=True)}
    sentence = verdict("small", straight)
    assert "straight lines are right for this equation, so what goes wrong is its in-range fit" in sentence
    assert "piecewise linear" not in sentence
    close = {"linear": linear_row(1e-13, ood=1e-12), "mlp": row(0.5, ood=0.9, linear_truth=True)}
    assert "Out of the training range" not in verdict("fine", close)  # no worse outside than inside


def test_noise_too_few_rows_and_short_training_are_told_apart():
    noisy = {"linear": linear_row(0.0026, floor=0.0025), "mlp": row(0.004, floor=0.0025)}
    sentence = verdict("sparse", noisy)
    assert sentence.startswith("**sparse**: `linear` reaches the floor (val_mse 0.0026; the noise floor is 0.0025)")
    few = {"cross": linear_row(0.3, n_model_features=65, n_train=48), "mlp": row(0.2)}
    assert "has too few rows: 65 features for 48 training rows" in verdict("small", few)
    short = {"linear": linear_row(0.3, optimum=1e-10, n_model_features=10, n_train=800), "mlp": row(0.2)}
    assert "`linear` (val_mse 0.3) stops short of its class optimum (1.0e-10)" in verdict("slow", short)


def test_the_table_quotes_equations_as_code_and_shows_no_optimum_for_the_mlp():
    results = {
        "product": {
            "cross": linear_row(1e-13, equation="y = 2.000*x0*x1", true_equation="y = 2.000*x0*x1")
            | {"terms_found": 1, "terms_spurious": 0, "terms_missed": 0},
            "mlp": row(0.008, true_equation="y = 2.000*x0*x1"),
        }
    }
    lines = detail_table(results).splitlines()
    assert "| `y = 2.000*x0*x1` | `y = 2.000*x0*x1` |" in lines[2] and "| 1 / 0 / 0 |" in lines[2]
    assert lines[3].startswith("| product | mlp | 0.008 | 0 | 0.008 | - | - |")
