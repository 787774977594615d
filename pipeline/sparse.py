"""Sparse regression over a linear family's features: the fewest terms that validation cannot tell
from the best fit.

Candidates come from three searches over the same design matrix (raw inputs, library terms, the
constant), each a list of coefficient vectors, refit by least squares in float64 on the terms
they keep:

- `thresholded`: sequentially thresholded least squares (STLSQ) along a path of thresholds, each
  feature's size being its weight in `start` (the trained model's) times its spread, so that the
  trained network says which terms matter first;
- `forward`: greedy forward selection (orthogonal matching pursuit), from each of the few features
  most aligned with y, adding the feature most aligned with what is left to explain;
- `subsets`: every subset of up to three features among those most aligned with y.

`choose` keeps, of all candidates, the one with the fewest terms whose validation MSE is within one
standard error of the lowest (the constant is a term like the others). Collinear libraries (r,
r**2, r**0.5 on [1, 5]) make a dense least-squares fit meaningless; the searches that add terms
one at a time are what find a few exact terms among hundreds.
"""

from __future__ import annotations

import itertools

import numpy as np

PATH_POINTS = 40  # thresholds tried on the path (log-spaced over the weights' own range)
STLSQ_ROUNDS = 10
FORWARD_STARTS = 8  # forward searches, each from one of the features most aligned with y
MAX_TERMS = 12  # the most terms a forward search adds
SUBSET_POOL, SUBSET_SIZE = 24, 3


def fit(A: np.ndarray, y: np.ndarray, kept: np.ndarray | list[int]) -> np.ndarray:
    """Least-squares coefficients on the kept columns, 0 elsewhere."""
    weights = np.zeros(A.shape[1])
    columns = np.flatnonzero(kept) if isinstance(kept, np.ndarray) and kept.dtype == bool else list(kept)
    if len(columns):
        weights[columns], *_ = np.linalg.lstsq(A[:, columns], y, rcond=None)
    return weights


def thresholded(A: np.ndarray, y: np.ndarray, scale: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """STLSQ from every threshold on a path spanning `sizes`: features below it are dropped and the
    rest refit, again and again until none falls below it.

    Neighbouring thresholds often reach the same kept set: each set is fitted once (on a library of
    800 terms, a quarter of the fits are repeats, and each big one takes tens of milliseconds)."""
    fits: dict[bytes, np.ndarray] = {}

    def refit(kept: np.ndarray) -> np.ndarray:
        key = np.packbits(kept).tobytes()
        if key not in fits:
            fits[key] = fit(A, y, kept)
        return fits[key]

    candidates = []
    for threshold in _path(sizes):
        kept = sizes >= threshold
        weights = refit(kept)
        for _ in range(STLSQ_ROUNDS):
            still = kept & (np.abs(weights) * scale >= threshold)
            if (still == kept).all():
                break
            kept = still
            weights = refit(kept)
        candidates.append(weights)
    return candidates


def _path(sizes: np.ndarray) -> list[float]:
    """Thresholds from keeping every feature to keeping none, log-spaced over the sizes present."""
    positive = sizes[sizes > 0]
    if positive.size == 0:
        return [0.0]
    low, high = positive.min(), positive.max()
    inner = np.geomspace(low, high, PATH_POINTS) if high > low else np.array([low])
    return [0.0, *inner.tolist(), float(high) * 2]  # everything kept ... nothing kept


def _aligned(A: np.ndarray) -> np.ndarray:
    """Columns of unit length: their product with a residual is their cosine with it, times its
    norm (uncentred, so that the constant competes like any other term)."""
    norms = np.linalg.norm(A, axis=0)
    return A / np.where(norms > 0, norms, 1.0)


def forward(A: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Greedy forward selection from each of the features most aligned with y."""
    unit = _aligned(A)
    candidates = [np.zeros(A.shape[1])]
    for first in np.argsort(-np.abs(unit.T @ y))[:FORWARD_STARTS]:
        kept = [int(first)]
        for _ in range(min(MAX_TERMS, A.shape[1])):
            weights = fit(A, y, kept)
            candidates.append(weights)
            residual = y - A @ weights
            if np.sqrt(np.mean(residual**2)) <= 1e-12 * np.sqrt(np.mean(y**2)):
                break
            score = np.abs(unit.T @ residual)
            score[kept] = -1.0
            kept.append(int(np.argmax(score)))
    return candidates


def subsets(A: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """The best fit (on training rows) of each size up to SUBSET_SIZE among the most aligned features."""
    pool = [int(i) for i in np.argsort(-np.abs(_aligned(A).T @ y))[:SUBSET_POOL]]
    best: dict[int, tuple[float, np.ndarray]] = {}
    for size in range(1, min(SUBSET_SIZE, len(pool)) + 1):
        for combo in itertools.combinations(pool, size):
            weights = fit(A, y, list(combo))
            mse = float(np.mean((y - A @ weights) ** 2))
            if size not in best or mse < best[size][0]:
                best[size] = (mse, weights)
    return [weights for _, weights in best.values()]


def choose(candidates: list[np.ndarray], A_val: np.ndarray, y_val: np.ndarray) -> tuple[int, list[float]]:
    """The index of the sparsest candidate within one standard error of the best validation MSE
    (plus float noise relative to the signal, for exact fits), and every candidate's MSE."""
    squares = [(A_val @ weights - y_val) ** 2 for weights in candidates]
    mses = [float(np.mean(sq)) for sq in squares]
    best = int(np.argmin(mses))
    tolerance = float(np.std(squares[best]) / np.sqrt(len(y_val))) + 1e-10 * float(np.mean(y_val**2))
    allowed = [k for k, mse in enumerate(mses) if mse <= mses[best] + tolerance]
    return min(allowed, key=lambda k: (int(np.count_nonzero(candidates[k])), mses[k])), mses


def standard_errors(A: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each kept coefficient's standard error from the residual of its least-squares fit (0 for
    dropped ones): how far the data could move it."""
    kept = np.flatnonzero(weights)
    errors = np.zeros_like(weights)
    if not len(kept) or len(y) <= len(kept):
        return errors
    residual = y - A @ weights
    sigma2 = float(residual @ residual) / (len(y) - len(kept))
    gram = A[:, kept].T @ A[:, kept]
    errors[kept] = np.sqrt(np.clip(np.diag(np.linalg.pinv(gram)) * sigma2, 0.0, None))
    return errors
