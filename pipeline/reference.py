"""What each model family could reach at best, and what the equation really says.

- `optimum_mse`: least squares on a family's own features (raw inputs, plus crosses for the cross
  family) fitted on the training split and scored on validation: the best that family can do.
- `true_coefficients`: the equation expanded symbolically (from the checked tree, never raw
  text) into the coefficient of every term, when it is a polynomial of degree <= 2.
- `format_equation`: learned weights read back as `y = 2.000*x0 - 3.000*x1 + 1.000`.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.equations import Equation

CONSTANT = "1"  # the key of the bias / constant term in every coefficient table


def term_name(i: int, j: int) -> str:
    """The name of the product feature x_i * x_j, as equations print it."""
    return f"x{i}**2" if i == j else f"x{i}*x{j}"


def design_matrix(X: np.ndarray, crosses: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """Raw features, their crosses, and a column of ones for the bias."""
    columns = [X] + [X[:, [i]] * X[:, [j]] for i, j in crosses] + [np.ones((X.shape[0], 1))]
    return np.hstack(columns)


def least_squares(X: np.ndarray, y: np.ndarray, crosses: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    weights, *_ = np.linalg.lstsq(design_matrix(X, crosses), y, rcond=None)
    return weights


def optimum_mse(X_train, y_train, X_val, y_val, crosses: tuple[tuple[int, int], ...] = ()) -> float:
    """Validation MSE of the least-squares fit on the training split."""
    weights = least_squares(np.asarray(X_train, float), np.asarray(y_train, float), crosses)
    residual = design_matrix(np.asarray(X_val, float), crosses) @ weights - np.asarray(y_val, float)
    return float(np.mean(residual**2))


def true_coefficients(equation: Equation) -> dict[str, float] | None:
    """{'x0*x1': 2, 'x0': 2, 'x1': -3, '1': -3} for (2*x0 - 3)*(x1 + 1); None if not degree <= 2."""
    import sympy

    symbols = [sympy.Symbol(f"x{i}") for i in range(equation.n_features)]
    expanded = sympy.expand(equation.to_sympy())
    if not expanded.is_polynomial(*symbols):
        return None
    poly = sympy.Poly(expanded, *symbols)
    if poly.total_degree() > 2:
        return None
    table = {}
    for powers, coefficient in poly.terms():
        table[_monomial_name(powers)] = float(coefficient)
    return table


def _monomial_name(powers: tuple[int, ...]) -> str:
    used = [i for i, p in enumerate(powers) for _ in range(p)]
    if not used:
        return CONSTANT
    if len(used) == 1:
        return f"x{used[0]}"
    return term_name(*used)


def coefficient_error(learned: dict[str, float], truth: dict[str, float] | None) -> float | None:
    """Largest |learned - true| over all terms; None when the model cannot represent the truth."""
    if truth is None or not set(truth) <= set(learned):
        return None
    return max(abs(value - truth.get(name, 0.0)) for name, value in learned.items())


def _term_order(name: str) -> tuple:
    # x0, x1, ... then x0**2, x0*x1, ...: by degree, then by the variables' indices.
    indices = [int(part) for part in re.findall(r"x(\d+)", name)]
    return (2 if "**2" in name else len(indices), indices)


def format_equation(coefficients: dict[str, float], threshold: float = 1e-3, digits: int = 3) -> str:
    """Weights as an equation: linear terms, then crosses, constant last; |w| < threshold dropped."""
    kept = [(name, w) for name, w in coefficients.items() if name != CONSTANT and abs(w) >= threshold]
    terms = sorted(kept, key=lambda term: _term_order(term[0]))
    constant = coefficients.get(CONSTANT, 0.0)
    if abs(constant) >= threshold:
        terms.append((CONSTANT, constant))
    if not terms:
        return "y = 0"
    text = ""
    for position, (name, weight) in enumerate(terms):
        magnitude = f"{abs(weight):.{digits}f}" + ("" if name == CONSTANT else f"*{name}")
        sign = ("-" if weight < 0 else "") if position == 0 else (" - " if weight < 0 else " + ")
        text += sign + magnitude
    return "y = " + text
