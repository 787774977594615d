"""Where a dataset may be drawn, is everything computable in float32, and bounded? Checked before
any stage runs.

The models train in float32, so an input, a target or a library term beyond float32's largest
value (3.4e38) is infinite there, and one that is not finite (a power of a negative input) is NaN:
every trial would diverge, and the tuning would end without a model and without saying why. A
scientist's formula in SI units meets this (m1**2 of Earth's mass is 3.6e49), so `pipeline.config`
probes each dataset's equation here, `stages.specs` leaves such terms out of the automatic library
(and refuses those a user lists), and `pipeline.proposals` drops proposed terms that do not fit.

An equation with a pole there (`1/r**2` with r from 0) is finite at every probe point yet unbounded:
`pole` finds where a divisor reaches 0, and `pipeline.config` refuses it. The shorthand's inputs
are N(0, 1), unbounded: it is checked on the rows `generate` draws (`check_drawn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.equations import Equation
from pipeline.terms import columns

FLOAT32_MAX = float(np.finfo(np.float32).max)
N_POINTS = 16384
Ranges = list[tuple[float, float]]  # (low, high) of each input


def points(ranges: Ranges) -> np.ndarray:
    """16,384 random points of the box `ranges` (a fixed seed: the check is the same every time).
    Random, not the corners: a region where the equation is not defined (v > c in
    sqrt(1 - v**2/c**2)) is hit, a single point (sin(u)/u at u = 0) is not, as a draw would not hit it."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(low, high, N_POINTS) for low, high in ranges])


def largest(values: np.ndarray | float) -> float:
    """The largest magnitude in `values`; NaN if any value is NaN."""
    with np.errstate(all="ignore"):
        return float(np.max(np.abs(np.asarray(values, dtype=np.float64))))


def constant(values: np.ndarray) -> bool:
    """Whether `values` are all one number (to 12 digits): an equation such as x - x + 3 or 0*x
    leaves a model nothing to learn, and R² undefined."""
    return bool(np.ptp(values) <= 1e-12 * largest(values))


def check_box(equation: Equation, ranges: Ranges) -> None:
    """Raise ValueError, saying where and what to change, unless the equation is finite, not one
    number, without a pole and within float32 on the box `ranges` of its declared variables."""
    X = points(ranges)
    with np.errstate(all="ignore"):
        y = equation(X)
    if (bad := ~np.isfinite(y)).any():
        at = ", ".join(f"{name}={value:.4g}" for name, value in zip(equation.variables, X[np.argmax(bad)], strict=True))
        fix = "narrow the ranges so that it is defined everywhere" if not bad.all() else "check the equation"
        raise ValueError(f"the equation is not finite on the declared ranges ({int(bad.sum())} of {len(y)} probe "
                         f"points, e.g. at {at}): {fix}")  # fmt: skip
    if constant(y):
        raise ValueError(f"the equation is {y[0]:.6g} wherever the variables may be drawn: nothing to learn")
    if found := pole(equation, X, ranges):
        raise ValueError(f"{found.describe('on the declared ranges')}: choose ranges on which "
                         f"{found.divisor} stays away from 0")  # fmt: skip
    if (top := largest(y)) > FLOAT32_MAX:
        raise ValueError(f"the equation reaches {top:.3g} on the declared ranges, beyond float32's {FLOAT32_MAX:.3g} "
                         "(models train in float32): express y in a larger unit, or narrow the ranges")  # fmt: skip


def check_drawn(equation: Equation, X: np.ndarray, y: np.ndarray, shorthand: bool) -> None:
    """Raise ValueError unless `y`, the equation at the drawn inputs `X`, is finite and not one
    number; for the shorthand (N(0, 1) inputs, unbounded: no box to probe) also unless it is free
    of a pole among the first N_POINTS rows. `generate` checks every row it draws; validation, the
    shorthand's first rows, drawn as `generate` draws them, before any stage runs."""
    if (bad := ~np.isfinite(y)).any():
        raise ValueError(f"equation {equation.text!r} gives {int(bad.sum())} non-finite values on the training/"
                         "validation inputs (e.g. log or sqrt of a negative number)")  # fmt: skip
    if constant(y):
        raise ValueError(f"equation {equation.text!r} is {y[0]:.6g} on every training/validation input: a model "
                         "has nothing to learn (and R² is undefined)")  # fmt: skip
    if shorthand and (found := pole(equation, X[:N_POINTS])):
        raise ValueError(f"{found.describe('where the inputs are drawn, N(0, 1)')}: declare the variables with "
                         f"ranges that keep {found.divisor} away from 0 (docs/equations.md)")  # fmt: skip


def unfit_terms(ranges: Ranges, terms: tuple[str, ...], inputs: tuple[str, ...]) -> dict[str, float]:
    """The library terms not computable in float32 where the inputs may be drawn, with the largest
    magnitude each reaches (inf, NaN). A few hundred points find the ends of the ranges well enough;
    a library has hundreds of terms."""
    X = points(ranges)[:256].astype(np.float32)  # each term computed as the models compute it
    with np.errstate(all="ignore"):
        sizes = {term: largest(values) for term, values in zip(terms, columns(X, terms, inputs), strict=True)}
    return {term: size for term, size in sizes.items() if not size <= FLOAT32_MAX}  # NaN is unfit too


# How much larger than anywhere else y must be next to a divisor's zero to be a pole there: a simple
# pole reached to float64's resolution is ~1e13 times larger, a removable zero (sin(u)/u) about 1.
POLE_RATIO = 1e9
TOUCH = 1e-3  # a divisor of one sign is searched for a zero where it comes this close to 0 (times its largest)
FACE_ROWS = 4096


@dataclass(frozen=True)
class Pole:
    divisor: str  # the expression that reaches 0, as the equation writes it
    at: dict[str, float]  # a point next to the pole: the values of the divisor's own inputs
    size: float  # |y| there

    def describe(self, where: str) -> str:
        at = ", ".join(f"{name}={value:.4g}" for name, value in self.at.items())
        return (f"the equation divides by {self.divisor}, which reaches 0 {where} (at {at} the equation is "
                f"{self.size:.3g}): it is unbounded there, and the few rows drawn near it can rule every model's "
                "MSE and R²")  # fmt: skip


def pole(equation: Equation, X: np.ndarray, ranges: Ranges | None = None) -> Pole | None:
    """A pole of `equation` where its inputs may be drawn (`X`, plus the faces of the box `ranges`),
    or None: a divisor that is 0 at a point, or changes sign between two (a zero between them, by
    continuity, found by bisection), where y is POLE_RATIO times its largest elsewhere. Near a pole
    y is unbounded: a few rows drawn next to it can rule every model's MSE and R²."""
    divisors = equation.divisors()
    if not divisors:
        return None
    if ranges is not None:  # the box is closed: r on [0, 10] reaches r = 0
        used = sorted({equation.variables.index(name) for divisor in divisors for name in divisor.used})
        X = np.vstack([X, *_faces(X, ranges, used)])
    box = tuple(np.array(ranges, dtype=float).T) if ranges is not None else (X.min(axis=0), X.max(axis=0))
    with np.errstate(all="ignore"):
        y = np.abs(equation(X))
        scale = float(np.max(y[np.isfinite(y)], initial=0.0))
        for divisor in reversed(divisors):  # the innermost first: r rather than 4*pi*r**2
            near = _zeros(divisor, X, box)
            sizes = np.abs(equation(near))
            sizes[np.isnan(sizes)] = 0.0  # 0/0: a removable point, not a pole
            if len(near) and sizes.max() > POLE_RATIO * scale:
                point = dict(zip(equation.variables, near[np.argmax(sizes)].tolist(), strict=True))
                at = {name: point[name] for name in divisor.variables if name in divisor.used}
                return Pole(divisor.text, at, float(sizes.max()))
    return None


def _zeros(divisor: Equation, X: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Points next to zeros of `divisor`: the rows of `X` where it is 0; where it takes both signs,
    the ends of a few bisections between a negative and a positive row (nearest 0 first); where it
    keeps one sign but comes close to 0 (x**2 + y**2 near the origin), the least it reaches inside
    `box` from its smallest rows."""
    d = divisor(X)
    negative, positive = np.flatnonzero(d < 0), np.flatnonzero(d > 0)
    pairs = min(len(negative), len(positive), 8)
    near = [X[d == 0]]
    if pairs:
        a, b = X[negative[np.argsort(-d[negative])[:pairs]]], X[positive[np.argsort(d[positive])[:pairs]]]
        near += _bisect(divisor, a, b)
    elif not len(near[0]) and np.nanmin(np.abs(d)) < TOUCH * np.nanmax(np.abs(d)):
        near.append(_descend(divisor, X[np.argsort(np.abs(d))[:4]], box))
    return np.vstack(near)


def _descend(divisor: Equation, X: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Compass search for the least |divisor| from each row of `X`, inside `box`: a step along each
    input either way, kept where it lowers |divisor|, halved where none does, down to float64's
    resolution of the box."""
    low, high = box
    k, n = X.shape
    moves = np.vstack([np.eye(n), -np.eye(n)])  # (2n, n)
    step = np.tile((high - low) / 16, (k, 1))  # (k, n): one step length per start
    value = np.abs(divisor(X))
    for _ in range(400):
        trials = np.clip(X[:, None, :] + moves[None] * step[:, None, :], low, high)  # (k, 2n, n)
        values = np.abs(divisor(trials.reshape(-1, n))).reshape(k, 2 * n)
        values[np.isnan(values)] = np.inf
        best = values.argmin(axis=1)
        better = values[np.arange(k), best] < value
        X = np.where(better[:, None], trials[np.arange(k), best], X)
        value = np.where(better, values[np.arange(k), best], value)
        step = np.where(better[:, None], step, step / 2)
        if (step <= 1e-16 * (high - low)).all():
            break
    return X


def _faces(X: np.ndarray, ranges: Ranges, columns: list[int]) -> list[np.ndarray]:
    """Rows of `X` moved onto the faces of the box where the inputs `columns` (those a divisor uses)
    are at their low, then their high end: FACE_ROWS rows in all, at least 8 a face, so that 500
    inputs cost megabytes, not the gigabytes of a thousand rows a face."""
    per_face = max(8, FACE_ROWS // (2 * max(len(columns), 1)))
    faces = []
    for column in columns:
        for bound in ranges[column]:
            face = X[:per_face].copy()
            face[:, column] = bound
            faces.append(face)
    return faces


def _bisect(divisor: Equation, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Rows of `a` (divisor < 0) and `b` (divisor > 0) brought together onto a zero between them."""
    for _ in range(64):  # float64's resolution of the segment, then the midpoints repeat
        middle = (a + b) / 2
        below = divisor(middle) < 0
        a = np.where(below[:, None], middle, a)
        b = np.where(below[:, None], b, middle)
    return [a, b]
