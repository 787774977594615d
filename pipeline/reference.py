"""What a model could reach at best, what the equation really says, and how much of it was found.

- `floor_mse`: the error of the true equation itself on the validation split (zero without noise,
  about noise**2 with it). No model can beat it: every model is scored against it.
- `optimum_mse`: least squares on a linear family's own features (raw inputs, plus its library of
  terms for the cross family), fitted on the training split, scored on validation: the best that
  family can do. The MLP has no such closed form.
- `sparse_refit`: the recovered equation. Starting from the trained weights, sequentially
  thresholded least squares on a path of thresholds; the threshold is chosen on validation data
  (the sparsest equation within one standard error of the best), never a fixed cut-off.
- `true_coefficients`: the equation expanded symbolically (from the checked tree, never raw
  text) into the coefficient of every term, named as `pipeline.terms` names them.
- `recovery`: true terms found, spurious and missed, the largest coefficient error, and what to
  change when a true term is outside the family's library.
- `format_equation`: a coefficient table read back as `y = 2.000*x0 - 3.000*x1 + 1.000`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline import terms as library
from pipeline.equations import Equation

CONSTANT = library.CONSTANT
PATH_POINTS = 40  # thresholds tried on the path (log-spaced over the weights' own range)
STLSQ_ROUNDS = 10


def design_matrix(X: np.ndarray, terms: tuple[str, ...] = (), constant: bool = True) -> np.ndarray:
    """Raw features, the named terms, and (unless `constant` is False) a column of ones for the bias."""
    X = np.asarray(X, dtype=float)
    with np.errstate(all="ignore"):
        columns = [X] + [np.broadcast_to(c, X.shape[:1])[:, None] for c in library.columns(X, terms)]
    if constant:
        columns.append(np.ones((X.shape[0], 1)))
    return np.hstack(columns)


def least_squares(X: np.ndarray, y: np.ndarray, terms: tuple[str, ...] = ()) -> np.ndarray:
    weights, *_ = np.linalg.lstsq(design_matrix(X, terms), y, rcond=None)
    return weights


def optimum_mse(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, terms: tuple[str, ...] = ()
) -> float:
    """Validation MSE of the least-squares fit on the training split."""
    weights = least_squares(np.asarray(X_train, float), np.asarray(y_train, float), terms)
    residual = design_matrix(np.asarray(X_val, float), terms) @ weights - np.asarray(y_val, float)
    return float(np.mean(residual**2))


def floor_mse(equation: Equation, X_val: np.ndarray, y_val: np.ndarray) -> float:
    """The true equation's own validation error: the noise, which no model can fit."""
    return float(np.mean((equation(np.asarray(X_val, float)) - np.asarray(y_val, float)) ** 2))


@dataclass
class Sparse:
    """A sparse equation: the coefficient of every feature (0 where dropped) and how it was chosen."""

    table: dict[str, float]
    kept: list[str]
    threshold: float
    val_mse: float
    path: list[tuple[int, float]] = field(default_factory=list)  # (terms kept, val_mse) per threshold


def sparse_refit(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    terms: tuple[str, ...],
    start: dict[str, float],
) -> Sparse:
    """The sparsest equation over the family's features that validation cannot tell from the best.

    Each feature's size is its weight in `start` (the trained model) times the feature's standard
    deviation on the training rows (so that x0**3 and x0 compare fairly). For every threshold t
    on a path spanning those sizes, features below t are dropped and the rest refit by least
    squares, again and again until none falls below t (sequentially thresholded least squares).
    Of the equations on the path, the one kept has the fewest terms among those whose validation
    MSE is within one standard error of the lowest (the constant is a term like the others).
    """
    names = [f"x{i}" for i in range(np.shape(X_train)[1])] + list(terms) + [CONSTANT]
    A, A_val = design_matrix(X_train, terms), design_matrix(X_val, terms)
    y, y_val = np.asarray(y_train, float), np.asarray(y_val, float)
    scale = np.where(np.arange(len(names)) == len(names) - 1, 1.0, A.std(axis=0))
    sizes = np.abs(np.array([start.get(name, 0.0) for name in names])) * scale
    candidates = []
    for threshold in _path(sizes):
        kept, weights = _stlsq(A, y, scale, sizes >= threshold, threshold)
        residual = A_val @ weights - y_val
        candidates.append((threshold, kept, weights, residual**2))
    mses = [float(np.mean(sq)) for *_, sq in candidates]
    best = int(np.argmin(mses))
    spread = candidates[best][3]
    # One standard error of the best MSE, plus float noise relative to the signal (exact fits).
    tolerance = float(np.std(spread) / np.sqrt(len(spread))) + 1e-10 * float(np.mean(y_val**2))
    allowed = [k for k, mse in enumerate(mses) if mse <= mses[best] + tolerance]
    chosen = min(allowed, key=lambda k: (int(candidates[k][1].sum()), mses[k]))
    threshold, kept, weights, _ = candidates[chosen]
    table = {name: float(w) for name, w in zip(names, weights, strict=True)}
    path = [(int(c[1].sum()), mse) for c, mse in zip(candidates, mses, strict=True)]
    return Sparse(table, [n for n, k in zip(names, kept, strict=True) if k], float(threshold), mses[chosen], path)


def _path(sizes: np.ndarray) -> list[float]:
    """Thresholds from keeping every feature to keeping none, log-spaced over the sizes present."""
    positive = sizes[sizes > 0]
    if positive.size == 0:
        return [0.0]
    low, high = positive.min(), positive.max()
    inner = np.geomspace(low, high, PATH_POINTS) if high > low else np.array([low])
    return [0.0, *inner.tolist(), float(high) * 2]  # everything kept ... nothing kept


def _stlsq(
    A: np.ndarray, y: np.ndarray, scale: np.ndarray, kept: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    weights = np.zeros(A.shape[1])
    for _ in range(STLSQ_ROUNDS):
        weights = np.zeros(A.shape[1])
        if kept.any():
            weights[kept], *_ = np.linalg.lstsq(A[:, kept], y, rcond=None)
        still = kept & (np.abs(weights) * scale >= threshold)
        if (still == kept).all():
            break
        kept = still
    return kept, weights


def true_coefficients(equation: Equation) -> dict[str, float] | None:
    """{'x0*x1': 2, 'x0': 2, 'x1': -3, '1': -3} for (2*x0 - 3)*(x1 + 1); terms that are not
    products of inputs keep their own name ({'sin(x1)': 1.0, 'x0*x2': 0.5}). None for an
    equation that expands to 0 or to a coefficient that is not a number."""
    import sympy

    expanded = sympy.expand(equation.to_sympy())
    table: dict[str, float] = {}
    for term in sympy.Add.make_args(expanded):
        coefficient, rest = term.as_independent(*term.free_symbols, as_Add=False)  # 2*sqrt(2), x0*x1
        if not coefficient.is_number:
            return None
        name = CONSTANT if rest == 1 else library.name_of(rest)
        table[name] = table.get(name, 0.0) + float(coefficient)
    table = {name: value for name, value in table.items() if value != 0}
    return table or None


def coefficient_error(learned: dict[str, float], truth: dict[str, float] | None) -> float | None:
    """Largest |learned - true| over all terms; None when the model cannot represent the truth."""
    if truth is None or not set(truth) <= set(learned):
        return None
    return max(abs(value - truth.get(name, 0.0)) for name, value in learned.items())


def recovery(table: dict[str, float], truth: dict[str, float] | None) -> dict:
    """Which true terms a sparse coefficient table names, which it adds, which it misses, which of
    those it cannot name at all (outside its features), and its largest coefficient error."""
    if truth is None:
        return {}
    kept = {name for name, value in table.items() if value != 0}
    return {
        "found": sorted(kept & set(truth), key=library.order),
        "spurious": sorted(kept - set(truth), key=library.order),
        "missed": sorted(set(truth) - kept, key=library.order),
        "outside": sorted(set(truth) - set(table), key=library.order),
        "coef_error": coefficient_error(table, truth),
    }


def suggestion(term: str, degree: int) -> str:
    """How to bring a true term into the cross family's library."""
    term_degree = library.degree_of(term)
    if term_degree is not None:
        return f"`{term}` has degree {term_degree}: set models.cross.degree to {max(term_degree, degree + 1)}"
    function = library.function_of_input(term)
    if function is not None:
        return f"`{term}`: add {function} to models.cross.functions"
    return f"`{term}`: list it under models.cross.crosses"


def format_equation(coefficients: dict[str, float], digits: int = 3) -> str:
    """Every non-zero coefficient as an equation: inputs, then higher terms, constant last."""
    named = ((n, w) for n, w in coefficients.items() if w != 0 and n != CONSTANT)
    terms = sorted(named, key=lambda term: library.order(term[0]))
    constant = coefficients.get(CONSTANT, 0.0)
    if constant != 0:
        terms.append((CONSTANT, constant))
    if not terms:
        return "y = 0"
    text = ""
    for position, (name, weight) in enumerate(terms):
        magnitude = f"{abs(weight):.{digits}f}" + ("" if name == CONSTANT else f"*{name}")
        sign = ("-" if weight < 0 else "") if position == 0 else (" - " if weight < 0 else " + ")
        text += sign + magnitude
    return "y = " + text
