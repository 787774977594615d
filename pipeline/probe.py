"""Where a dataset may be drawn, is everything computable in float32? Checked before any stage runs.

The models train in float32, so an input, a target or a library term beyond float32's largest
value (3.4e38) is infinite there, and one that is not finite (a power of a negative input) is NaN:
every trial would diverge, and the tuning would end without a model and without saying why. A
scientist's formula in SI units meets this (m1**2 of Earth's mass is 3.6e49), so `pipeline.config`
probes each dataset's equation here, `stages.specs` leaves such terms out of the automatic library
(and refuses those a user lists), and `pipeline.proposals` drops proposed terms that do not fit.
"""

from __future__ import annotations

import numpy as np

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


def unfit_terms(ranges: Ranges, terms: tuple[str, ...], inputs: tuple[str, ...]) -> dict[str, float]:
    """The library terms not computable in float32 where the inputs may be drawn, with the largest
    magnitude each reaches (inf, NaN). A few hundred points find the ends of the ranges well enough;
    a library has hundreds of terms."""
    X = points(ranges)[:256].astype(np.float32)  # each term computed as the models compute it
    with np.errstate(all="ignore"):
        sizes = {term: largest(values) for term, values in zip(terms, columns(X, terms, inputs), strict=True)}
    return {term: size for term, size in sizes.items() if not size <= FLOAT32_MAX}  # NaN is unfit too
