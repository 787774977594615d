"""Closed-form optima, symbolic coefficients and recovered equations against trusted numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.equations import parse
from pipeline.reference import (
    Features,
    Library,
    Rows,
    coefficient_error,
    design_matrix,
    floor_mse,
    format_equation,
    optimum_mse,
    recovery,
    sparse_refit,
    suggestion,
    true_coefficients,
)


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10000, 10))
    y = (2 * X[:, 0] - 3) * (X[:, 1] + 1)
    return Rows(X[:8000], y[:8000], X[8000:], y[8000:])


SHORTHAND10 = tuple(f"x{i}" for i in range(10))


def test_optimum_matches_numpy_lstsq(split):
    X_train, y_train, X_val, y_val = split.X_train, split.y_train, split.X_val, split.y_val
    A = np.hstack([X_train, np.ones((8000, 1))])
    w, *_ = np.linalg.lstsq(A, y_train, rcond=None)
    expected = np.mean((np.hstack([X_val, np.ones((2000, 1))]) @ w - y_val) ** 2)
    assert optimum_mse(split, Features(SHORTHAND10)) == pytest.approx(expected, rel=1e-12)
    # The linear family misses 2*x0*x1, whose variance is 4.
    assert 3.6 < expected < 4.4


def test_cross_optimum_is_exact_on_product(split):
    assert optimum_mse(split, Features(SHORTHAND10, ("x0*x1",))) < 1e-20


def test_design_matrix_columns():
    X = np.array([[2.0, 3.0]])
    inputs = ("x0", "x1")
    np.testing.assert_array_equal(design_matrix(X, Features(inputs, ("x0*x1", "x1**2"))), [[2, 3, 6, 9, 1]])
    features = Features(inputs, ("x0**2*x1", "sin(x1)"))
    np.testing.assert_allclose(design_matrix(X, features, constant=False), [[2, 3, 12, np.sin(3)]])


def test_symbolic_expansion_of_the_product():
    assert true_coefficients(parse("(2*x0 - 3)*(x1 + 1)", 10)) == {"x0*x1": 2, "x0": 2, "x1": -3, "1": -3}
    assert true_coefficients(parse("x0**2", 1)) == {"x0**2": 1}
    assert true_coefficients(parse("2*x0 - 3*x1 + 1", 10)) == {"x0": 2, "x1": -3, "1": 1}


def test_functions_and_higher_degrees_keep_their_own_names():
    assert true_coefficients(parse("sin(x1) + 0.5*x0*x2", 4)) == {"sin(x1)": 1, "x0*x2": 0.5}
    assert true_coefficients(parse("x0*x1*x3 - x2", 5)) == {"x0*x1*x3": 1, "x2": -1}
    assert true_coefficients(parse("(x0 + 1)**3", 1)) == {"x0**3": 1, "x0**2": 3, "x0": 3, "1": 1}
    assert true_coefficients(parse("sqrt(4)*x0 + exp(-x0**2)", 1)) == {"x0": 2, "exp(-x0**2)": 1}
    assert true_coefficients(parse("x0 - x0", 1)) is None


def test_floor_is_the_noise_of_the_true_equation(split):
    X_val, y_val = split.X_val, split.y_val
    noise = np.random.default_rng(1).normal(0, 0.1, len(y_val))
    equation = parse("(2*x0 - 3)*(x1 + 1)", 10)
    assert floor_mse(equation, X_val, y_val) < 1e-25
    assert floor_mse(equation, X_val, y_val + noise) == pytest.approx(np.mean(noise**2), rel=1e-12)
    assert 0.009 < np.mean(noise**2) < 0.011


def test_sparse_refit_keeps_the_true_terms_of_a_noisy_sparse_equation():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1000, 15))
    y = 1.5 * X[:, 2] - 0.7 * X[:, 5] + 2 + rng.normal(0, 0.05, 1000)
    terms = tuple(f"x{i}*x{j}" for i in range(15) for j in range(i, 15))
    features = Features(tuple(f"x{i}" for i in range(15)), terms)
    dense, *_ = np.linalg.lstsq(design_matrix(X[:800], features), y[:800], rcond=None)  # every term non-zero
    start = dict(zip(features.names, dense, strict=True))
    sparse = sparse_refit(Rows(X[:800], y[:800], X[800:], y[800:]), features, start)
    assert sparse.kept == ["x2", "x5", "1"]
    assert abs(sparse.table["x2"] - 1.5) < 0.01 and abs(sparse.table["x5"] + 0.7) < 0.01
    assert abs(sparse.table["1"] - 2) < 0.01
    assert sum(value != 0 for value in sparse.table.values()) == 3
    floor = np.mean((y[800:] - (1.5 * X[800:, 2] - 0.7 * X[800:, 5] + 2)) ** 2)
    assert sparse.val_mse < 1.1 * floor


def test_thresholded_fits_each_kept_set_once_and_finds_what_refitting_every_time_finds(monkeypatch):
    from pipeline import sparse

    rng = np.random.default_rng(3)
    X = rng.uniform(1, 5, (400, 4))
    A = np.column_stack([X, X**2, X**0.5, np.log(X), np.ones(400)])  # collinear, as the libraries are
    y = 2 * X[:, 0] - 0.5 * X[:, 1] ** 2 + 3 + rng.normal(0, 0.01, 400)
    scale = np.where(np.arange(A.shape[1]) == A.shape[1] - 1, 1.0, A.std(axis=0))
    sizes = np.abs(np.linalg.lstsq(A, y, rcond=None)[0]) * scale

    def every_time() -> tuple[list[np.ndarray], int]:  # STLSQ as written before the cache
        candidates, fits = [], 0
        for threshold in sparse._path(sizes):
            kept = sizes >= threshold
            weights, fits = sparse.fit(A, y, kept), fits + 1
            for _ in range(sparse.STLSQ_ROUNDS):
                still = kept & (np.abs(weights) * scale >= threshold)
                if (still == kept).all():
                    break
                kept = still
                weights, fits = sparse.fit(A, y, kept), fits + 1
            candidates.append(weights)
        return candidates, fits

    expected, refits = every_time()
    seen: list[bytes] = []
    fit = sparse.fit
    monkeypatch.setattr(sparse, "fit", lambda A, y, kept: seen.append(kept.tobytes()) or fit(A, y, kept))
    candidates = sparse.thresholded(A, y, scale, sizes)
    assert len(candidates) == len(expected) == sparse.PATH_POINTS + 2
    assert all(np.array_equal(a, b) for a, b in zip(candidates, expected, strict=True))  # bit for bit
    assert len(seen) == len(set(seen)) < refits  # each kept set fitted once, and some came back


def test_recovery_scores_and_what_to_change():
    truth = {"x0*x1*x3": 1.0, "x2": -1.0}
    table = {"x0": 0.0, "x2": -0.98, "x0*x1": 0.4, "1": 0.0}
    assert recovery(table, truth) == {
        "found": ["x2"], "spurious": ["x0*x1"], "missed": ["x0*x1*x3"], "outside": ["x0*x1*x3"], "coef_error": None,
    }  # fmt: skip
    assert recovery({"x2": -0.98, "x0*x1*x3": 1.01, "1": 0.0}, truth)["coef_error"] == pytest.approx(0.02)
    now = Library(degree=2, functions=("cos",), powers=(-1.0,))
    assert suggestion("x0*x1*x3", now) == "`x0*x1*x3` has degree 3: `dvc exp run -S models.cross.degree=3`"
    assert suggestion("sin(x1)", now) == "`sin(x1)` needs sin(x): `dvc exp run -S 'models.cross.functions=[cos, sin]'`"
    assert suggestion("r**-2", now, ("m", "r")) == (
        "`r**-2` needs the power -2: `dvc exp run -S 'models.cross.powers=[-1, -2]'`"
    )
    assert suggestion("exp(-x0**2)", now) == (
        "`exp(-x0**2)` is no library term: `dvc exp run -S 'models.cross.crosses=[exp(-x0**2)]'` "
        "(a list replaces the automatic library)"
    )


def test_coefficient_error_over_all_terms():
    truth = {"x0": 2.0, "1": 1.0}
    learned = {"x0": 2.01, "x1": -0.03, "1": 0.995}
    assert coefficient_error(learned, truth) == pytest.approx(0.03)
    assert coefficient_error({"x0": 2.0, "1": 1.0}, {"x0*x1": 2.0}) is None  # cannot represent it


def test_recovered_equation_formatting():
    weights = {"x0": 2.0001, "x1": -2.9996, "x2": 0.0, "x0*x1": 1.99999, "1": -3.0002}
    assert format_equation(weights) == "y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000"
    constants = {"m1*m2*r**-2": 6.674e-11, "m1": -6.02214076e23, "1": 0.5}  # a scientist's G, Avogadro's number
    assert format_equation(constants, ("m1", "m2", "r")) == "y = -6.022e+23*m1 + 6.674e-11*m1*m2*r**-2 + 0.500"
    assert format_equation({"x0": -0.5, "1": 0.0}) == "y = -0.500*x0"
    assert format_equation({"x0": 0.0, "1": 0.0}) == "y = 0"
    assert format_equation({"x0**2": 1.0, "sin(x0)": -0.25, "1": 0.0}) == "y = 1.000*x0**2 - 0.250*sin(x0)"
    # Canonical order whatever the input order: linear terms, then crosses by index, constant last.
    shuffled = {"1": -3.0, "x0*x1": 2.0, "x1": -3.0, "x0**2": 0.5, "x0": 2.0}
    assert format_equation(shuffled) == "y = 2.000*x0 - 3.000*x1 + 0.500*x0**2 + 2.000*x0*x1 - 3.000"
