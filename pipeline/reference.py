"""What a model could reach at best, what the equation really says, and how much of it was found.

- `floor_mse`: the error of the true equation itself on the validation split (zero without noise,
  about noise**2 with it). No model can beat it: every model is scored against it.
- `optimum_mse`: least squares on a linear family's own features (raw inputs, plus its library of
  terms for the cross family), fitted on the training split, scored on validation: the best that
  family can do. The MLP has no such closed form.
- `sparse_refit`: the recovered equation: the sparsest equation over the family's features that
  validation cannot tell from the best (`pipeline.sparse`), starting from the trained weights.
- `true_coefficients`: the equation expanded symbolically (from the checked tree, never raw text;
  positive variables as positive symbols, so that `sqrt(a*b)` and `log(a/b)` expand) into the
  coefficient of every term, named as `pipeline.terms` names them.
- `recovery`: true terms found, spurious and missed, the largest coefficient error, what to change
  when a true term is outside the family's library, and whether the recovery is exact.
- `format_equation`: a coefficient table read back as `y = 2.000*x0 - 3.000*x1 + 1.000`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipeline import sparse
from pipeline import terms as library
from pipeline.equations import Equation, EquationError, shorthand

CONSTANT = library.CONSTANT
EXACT_RTOL = 1e-6  # coefficients this close to the truth (relative) are equal, whatever the noise
EXACT_SE = 3.0  # ... or within this many of their standard errors (with noise, the data allow no better)


class Split(Protocol):
    """Training and validation rows (`data.Dataset` is one)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class Rows:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class Features:
    """A linear family's features: the raw inputs (by name) and its library of terms."""

    variables: tuple[str, ...]
    terms: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [*self.variables, *self.terms, CONSTANT]


def design_matrix(X: np.ndarray, features: Features, constant: bool = True) -> np.ndarray:
    """Raw features, the named terms, and (unless `constant` is False) a column of ones for the bias."""
    X = np.asarray(X, dtype=float)
    with np.errstate(all="ignore"):
        columns = library.columns(X, features.terms, features.variables)
        columns = [X] + [np.broadcast_to(c, X.shape[:1])[:, None] for c in columns]
    if constant:
        columns.append(np.ones((X.shape[0], 1)))
    return np.hstack(columns)


def optimum_mse(split: Split, features: Features) -> float:
    """Validation MSE of the least-squares fit on the training split.

    Each column is scaled to unit norm first (the same optimum): lstsq drops the directions whose
    singular values are below 1e-13 of the largest, and quantities in SI units put columns of 1e37
    beside columns of 1e-32, so unscaled it dropped the very terms of the law (Kepler's third law:
    an "optimum" a thousand times worse than the trained network)."""
    A = design_matrix(split.X_train, features)
    norms = np.linalg.norm(A, axis=0)
    norms[~(norms > 0)] = 1.0
    scaled, *_ = np.linalg.lstsq(A / norms, np.asarray(split.y_train, float), rcond=None)
    weights = scaled / norms
    residual = design_matrix(split.X_val, features) @ weights - np.asarray(split.y_val, float)
    return float(np.mean(residual**2))


def floor_mse(equation: Equation, X_val: np.ndarray, y_val: np.ndarray) -> float:
    """The true equation's own validation error: the noise, which no model can fit."""
    return float(np.mean((equation(np.asarray(X_val, float)) - np.asarray(y_val, float)) ** 2))


@dataclass
class Sparse:
    """A sparse equation: the coefficient of every feature (0 where dropped) and how it was chosen."""

    table: dict[str, float]
    kept: list[str]
    threshold: float  # kept for the record: 0 unless thresholding of the trained weights chose it
    val_mse: float
    path: list[tuple[int, float]] = field(default_factory=list)  # (terms kept, val_mse) per candidate
    errors: dict[str, float] = field(default_factory=dict)  # each kept coefficient's standard error


def sparse_refit(split: Split, features: Features, start: dict[str, float]) -> Sparse:
    """The sparsest equation over the family's features that validation cannot tell from the best
    (see `pipeline.sparse`); `start` (the trained model's coefficients) orders the thresholds."""
    names = features.names
    A, A_val = design_matrix(split.X_train, features), design_matrix(split.X_val, features)
    y, y_val = np.asarray(split.y_train, float), np.asarray(split.y_val, float)
    scale = np.where(np.arange(len(names)) == len(names) - 1, 1.0, A.std(axis=0))
    sizes = np.abs(np.array([start.get(name, 0.0) for name in names])) * scale
    candidates = sparse.thresholded(A, y, scale, sizes)
    thresholds = len(candidates)
    candidates += sparse.forward(A, y) + sparse.subsets(A, y)
    chosen, mses = sparse.choose(candidates, A_val, y_val)
    weights = candidates[chosen]
    errors = sparse.standard_errors(A, y, weights)
    kept = [n for n, w in zip(names, weights, strict=True) if w != 0]
    return Sparse(
        table={name: float(w) for name, w in zip(names, weights, strict=True)},
        kept=kept,
        threshold=float(sparse._path(sizes)[chosen]) if chosen < thresholds else 0.0,
        val_mse=mses[chosen],
        path=_best_by_size(candidates, mses),
        errors={name: float(e) for name, e in zip(names, errors, strict=True) if name in kept},
    )


def _best_by_size(candidates: list[np.ndarray], mses: list[float]) -> list[tuple[int, float]]:
    """(terms, the lowest validation MSE of any candidate with that many) for each size tried."""
    best: dict[int, float] = {}
    for weights, mse in zip(candidates, mses, strict=True):
        size = int(np.count_nonzero(weights))
        best[size] = min(mse, best.get(size, np.inf))
    return sorted(best.items())


def true_coefficients(equation: Equation, positive: frozenset[str] = frozenset()) -> dict[str, float] | None:
    """{'x0*x1': 2, 'x0': 2, 'x1': -3, '1': -3} for (2*x0 - 3)*(x1 + 1); terms that are not
    products of inputs keep their own name ({'sin(x1)': 1.0, 'x0*x2': 0.5}). None for an
    equation that expands to 0 or to a coefficient that is not a number."""
    import sympy

    expanded = sympy.expand(equation.to_sympy(positive))
    table: dict[str, float] = {}
    for term in sympy.Add.make_args(expanded):
        coefficient, rest = term.as_independent(*term.free_symbols, as_Add=False)  # 2*sqrt(2), x0*x1
        if not coefficient.is_number or not coefficient.is_real:
            return None
        name = CONSTANT if rest == 1 else library.name_of(rest, equation.variables)
        table[name] = table.get(name, 0.0) + float(coefficient)
    table = {name: value for name, value in table.items() if value != 0}
    return table or None


def coefficient_error(learned: dict[str, float], truth: dict[str, float] | None) -> float | None:
    """Largest |learned - true| over all terms; None when the model cannot represent the truth."""
    if truth is None or not set(truth) <= set(learned):
        return None
    return max(abs(value - truth.get(name, 0.0)) for name, value in learned.items())


def is_exact(sparse_fit: Sparse, truth: dict[str, float] | None) -> bool:
    """Symbolic equality: the recovered equation has exactly the true terms (both expanded to
    canonical terms), each coefficient within EXACT_RTOL of the true one, or within EXACT_SE of its
    standard errors (what noise allows)."""
    kept = {name: value for name, value in sparse_fit.table.items() if value != 0}
    if truth is None or set(kept) != set(truth):
        return False
    for name, value in truth.items():
        allowed = max(EXACT_RTOL * abs(value), EXACT_SE * sparse_fit.errors.get(name, 0.0))
        if abs(kept[name] - value) > allowed:
            return False
    return True


def recovery(table: dict[str, float], truth: dict[str, float] | None, variables: tuple[str, ...] | None = None) -> dict:
    """Which true terms a sparse coefficient table names, which it adds, which it misses, which of
    those it cannot name at all (outside its features), and its largest coefficient error."""
    if truth is None:
        return {}
    variables = variables or _variables_of([*table, *truth])
    kept = {name for name, value in table.items() if value != 0}

    def ordered(names: set[str]) -> list[str]:
        return sorted(names, key=lambda name: library.order(name, variables))

    return {
        "found": ordered(kept & set(truth)),
        "spurious": ordered(kept - set(truth)),
        "missed": ordered(set(truth) - kept),
        "outside": ordered(set(truth) - set(table)),
        "coef_error": coefficient_error(table, truth),
    }


def suggestion(term: str, library_now: Library, variables: tuple[str, ...] | None = None) -> str:
    """How to bring a true term into the cross family's library, as a command that does it:
    a `dvc exp run -S` of the smallest change to `models.cross` (lists keep what they hold)."""
    variables = variables or _variables_of([term])
    term_degree = library.degree_of(term, variables)
    if term_degree is not None:
        return f"`{term}` has degree {term_degree}: {_set('degree', max(term_degree, library_now.degree + 1))}"
    function = library.function_of_input(term, variables)
    if function is not None:
        return f"`{term}` needs {function}(x): {_set('functions', [*library_now.functions, function])}"
    exponent = _single_power(term, variables)
    if exponent is not None and exponent not in library_now.powers:
        return f"`{term}` needs the power {exponent:g}: {_set('powers', [*library_now.powers, exponent])}"
    return f"`{term}` is no library term: {_set('crosses', [term])} (a list replaces the automatic library)"


@dataclass(frozen=True)
class Library:
    """The cross family's library settings a suggestion builds on (`models.cross`)."""

    degree: int
    functions: tuple[str, ...] = ()
    powers: tuple[float, ...] = ()


def _set(key: str, value: object) -> str:
    if isinstance(value, list):
        items = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return f"`dvc exp run -S 'models.cross.{key}=[{items}]'`"
    return f"`dvc exp run -S models.cross.{key}={value}`"


def _single_power(term: str, variables: tuple[str, ...]) -> float | None:
    """-2.0 for `r**-2`: one variable to a power that is not a positive integer; else None."""
    try:
        powers, others = library.parts(term, variables)
    except EquationError:
        return None
    if others or len(powers) != 1:
        return None
    (exponent,) = powers.values()
    return float(exponent)


def target(variables: tuple[str, ...]) -> str:
    """The name an equation's left-hand side is written with: y, unless an input is named y (the
    field's x, y, z): then f, as in f(x, y, z), so that `y = 0.5*y**2` is never printed."""
    name = next((name for name in ("y", "f") if name not in variables), "y_")
    while name in variables:
        name += "_"
    return name


def format_equation(coefficients: dict[str, float], variables: tuple[str, ...] | None = None, digits: int = 3) -> str:
    """Every non-zero coefficient as an equation: inputs, then higher terms, constant last."""
    variables = variables or _variables_of(list(coefficients))
    named = ((n, w) for n, w in coefficients.items() if w != 0 and n != CONSTANT)
    terms = sorted(named, key=lambda term: library.order(term[0], variables))
    constant = coefficients.get(CONSTANT, 0.0)
    if constant != 0:
        terms.append((CONSTANT, constant))
    if not terms:
        return f"{target(variables)} = 0"
    text = ""
    for position, (name, weight) in enumerate(terms):
        magnitude = _magnitude(abs(weight), digits) + ("" if name == CONSTANT else f"*{name}")
        sign = ("-" if weight < 0 else "") if position == 0 else (" - " if weight < 0 else " + ")
        text += sign + magnitude
    return f"{target(variables)} = " + text


def _magnitude(value: float, digits: int) -> str:
    """`digits` decimals, as a fitted coefficient reads; in scientific notation where those would
    hide it (G's 6.674e-11 is not 0.000) or run long (Avogadro's 6.022e+23)."""
    return f"{value:.{digits}f}" if 10**-digits <= value < 1e6 else f"{value:.{digits}e}"


def _variables_of(names: list[str]) -> tuple[str, ...]:
    """The shorthand inputs that term names over x0..x{n-1} use (for tables built without a spec)."""
    indices = [int(i) for name in names for i in re.findall(r"x(\d+)", name)]
    return shorthand(max(indices, default=-1) + 1)
