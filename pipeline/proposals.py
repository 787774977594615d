"""Terms proposed from the data for the cross family's library: the products of powers that the
equation seems to be made of.

A product of powers, y = c * x1**p1 * ... * xn**pn, is a linear problem in logarithms when y keeps
one sign and the inputs are positive: log|y| = log|c| + p1 log x1 + ... . Physics is full of them
(`G*m1*m2*r**-2`), and of such a product times a sum of simpler things (`G*m1*m2*(1/r2 - 1/r1)`,
`r*F*sin(theta)`). So, on the training rows:

1. log|y| is fitted by least squares on the logarithms of the positive inputs;
2. each input whose residual still depends on it (a cubic in its logarithm explains more of the
   residual than chance would) is *inner*: it enters through a sum or a function; the others are
   *factors*, with their exponent rounded to the nearest half;
3. the product M of the factors is proposed, and M times each of a few simple terms of the inner
   inputs (their powers, functions of one of them, products of two of them).

Which inputs count as inner depends on a threshold, so a few thresholds are tried and every
proposal kept: the proposals are only candidates, and sparse regression (`pipeline.sparse`) keeps
what the data support. Nothing here is tuned to particular equations; where nothing is positive,
nothing is proposed (the x0..x{n-1} shorthand: inputs N(0, 1)).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pipeline import probe
from pipeline import terms as library
from pipeline.equations import MAX_EXPONENT

GRID = 0.5  # exponents are rounded to halves (square roots are common, cube roots are not)
INNER_POWERS = (-2, -1, -0.5, 0.5, 1, 2)  # powers of an inner input multiplied into M
THRESHOLDS = (0.03, 0.06, 0.12)  # residual std (in log units) a cubic in an input must explain
NEAR = (0.1, 0.2)  # an exponent further than this from a half is no clean factor
MAX_PROPOSALS = 600


@dataclass(frozen=True)
class Split:
    """One way of reading y as M times a sum: the factors' exponents, and the inner inputs."""

    factors: dict[str, Fraction]
    inner: tuple[str, ...]


def splits(X: np.ndarray, y: np.ndarray, variables: tuple[str, ...]) -> list[Split]:
    """The distinct readings of y over the positive inputs, one per threshold pair."""
    positive = [i for i in range(X.shape[1]) if np.all(X[:, i] > 0)]
    rows = np.abs(y) > 0
    if not positive or rows.sum() <= len(positive) + 2:
        return []
    logs = np.log(X[rows][:, positive])
    exponents, residual = _log_fit(logs, np.log(np.abs(y[rows])))
    explained = np.array([_explained(logs[:, k], residual) for k in range(len(positive))])
    rounded = np.round(exponents / GRID) * GRID
    exponent = {variables[i]: Fraction(float(rounded[k])) for k, i in enumerate(positive)}
    off_grid = np.abs(exponents - rounded)
    inners = [
        tuple(variables[i] for k, i in enumerate(positive) if explained[k] > threshold or off_grid[k] > near)
        for threshold, near in itertools.product(THRESHOLDS, NEAR)
    ]
    found: list[Split] = []
    for split in [s for inner in inners for s in _neighbours(inner, exponent, variables)[:1]] + [
        s for inner in inners for s in _neighbours(inner, exponent, variables)[1:]
    ]:  # the thresholds' own splits first, then their neighbours
        if split not in found:
            found.append(split)
    return found


def _neighbours(inner: tuple[str, ...], exponent: dict[str, Fraction], variables: tuple[str, ...]) -> list[Split]:
    """The split with these inner inputs, and those with one input moved across: a threshold
    draws the line somewhere, and the law's may lie one input away."""
    splits = []
    for moved in (None, *exponent):
        now = set(inner) ^ {moved} if moved else set(inner)
        factors = {v: p for v, p in exponent.items() if v not in now and p != 0}
        splits.append(Split(factors, tuple(v for v in variables if v in now)))
    return splits


def _log_fit(logs: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exponents of log|y| on the log inputs (with an intercept), and the residual."""
    A = np.column_stack([np.ones(len(log_y)), logs])
    coefficients, *_ = np.linalg.lstsq(A, log_y, rcond=None)
    return coefficients[1:], log_y - A @ coefficients


def _explained(log_x: np.ndarray, residual: np.ndarray) -> float:
    """The std of the residual that a cubic in one log input explains."""
    z = log_x - log_x.mean()
    B = np.column_stack([z, z**2, z**3])
    coefficients, *_ = np.linalg.lstsq(B, residual, rcond=None)
    rest = residual - B @ coefficients
    return float(np.sqrt(max(np.mean(residual**2) - np.mean(rest**2), 0.0)))


def propose(X: np.ndarray, y: np.ndarray, variables: tuple[str, ...], functions: tuple[str, ...]) -> tuple[str, ...]:
    """Canonical names of the proposed terms (the raw inputs and the constant excluded), each
    computable in float32 on these rows (`pipeline.probe`: in SI units, m1**2 of a planet's mass is not)."""
    names: dict[str, None] = {}
    for split in splits(X, y, variables):
        for powers, others in _inner_terms(split.inner, functions):
            name = _product(split.factors, powers, others, variables)
            if name and name not in variables:
                names[name] = None
    with np.errstate(all="ignore"):  # in float32, as the models compute them
        values = library.columns(X.astype(np.float32), tuple(names), variables)
    fit = [name for name, column in zip(names, values, strict=True) if probe.largest(column) <= probe.FLOAT32_MAX]
    return tuple(fit)[:MAX_PROPOSALS]


Inner = tuple[dict[str, Fraction], tuple[str, ...]]  # powers of inputs, and function factors


def _inner_terms(inner: tuple[str, ...], functions: tuple[str, ...]) -> list[Inner]:
    """1, powers and functions of each inner input, products of two of them, and one times a
    function of another: the simple things a physical law sums or multiplies by."""
    terms: list[Inner] = [({}, ())]
    for v in inner:
        terms += [({v: Fraction(p)}, ()) for p in INNER_POWERS]
        terms += [({}, (f"{f}({v})",)) for f in functions]
        if {"sin", "cos"} <= set(functions):
            terms.append(({}, (f"cos({v})", f"sin({v})")))
    terms += [({a: Fraction(1), b: Fraction(1)}, ()) for a, b in itertools.combinations(inner, 2)]
    terms += [({a: Fraction(1)}, (f"{f}({b})",)) for a, b in itertools.permutations(inner, 2) for f in functions]
    return terms


def _product(factors: dict[str, Fraction], powers: dict[str, Fraction], others: tuple[str, ...],
             variables: tuple[str, ...]) -> str:  # fmt: skip
    """The canonical name (as `terms.name_of` writes it) of M times an inner term; empty for 1,
    and for a power no equation may hold (exp(x) on [40, 50] reads as x**45 there)."""
    total = {v: factors.get(v, Fraction(0)) + powers.get(v, Fraction(0)) for v in variables}
    if any(abs(p) > MAX_EXPONENT for p in total.values()):
        return ""
    parts = [library.power(v, total[v]) for v in variables if total[v] != 0]
    return "*".join(parts + sorted(others))
