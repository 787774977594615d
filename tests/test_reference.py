"""Closed-form optima, symbolic coefficients and recovered equations against trusted numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.equations import parse
from pipeline.reference import (
    coefficient_error,
    design_matrix,
    format_equation,
    optimum_mse,
    true_coefficients,
)


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10000, 10))
    y = (2 * X[:, 0] - 3) * (X[:, 1] + 1)
    return X[:8000], y[:8000], X[8000:], y[8000:]


def test_optimum_matches_numpy_lstsq(split):
    X_train, y_train, X_val, y_val = split
    A = np.hstack([X_train, np.ones((8000, 1))])
    w, *_ = np.linalg.lstsq(A, y_train, rcond=None)
    expected = np.mean((np.hstack([X_val, np.ones((2000, 1))]) @ w - y_val) ** 2)
    assert optimum_mse(X_train, y_train, X_val, y_val) == pytest.approx(expected, rel=1e-12)
    # The linear family misses 2*x0*x1, whose variance is 4.
    assert 3.6 < expected < 4.4


def test_cross_optimum_is_exact_on_product(split):
    assert optimum_mse(*split, crosses=((0, 1),)) < 1e-20


def test_design_matrix_columns():
    X = np.array([[2.0, 3.0]])
    np.testing.assert_array_equal(design_matrix(X, ((0, 1), (1, 1))), [[2, 3, 6, 9, 1]])


def test_symbolic_expansion_of_the_product():
    assert true_coefficients(parse("(2*x0 - 3)*(x1 + 1)", 10)) == {"x0*x1": 2, "x0": 2, "x1": -3, "1": -3}
    assert true_coefficients(parse("x0**2", 1)) == {"x0**2": 1}
    assert true_coefficients(parse("2*x0 - 3*x1 + 1", 10)) == {"x0": 2, "x1": -3, "1": 1}


def test_non_polynomial_or_high_degree_has_no_coefficients():
    assert true_coefficients(parse("sin(x0)", 1)) is None
    assert true_coefficients(parse("x0**3", 1)) is None


def test_coefficient_error_over_all_terms():
    truth = {"x0": 2.0, "1": 1.0}
    learned = {"x0": 2.01, "x1": -0.03, "1": 0.995}
    assert coefficient_error(learned, truth) == pytest.approx(0.03)
    assert coefficient_error({"x0": 2.0, "1": 1.0}, {"x0*x1": 2.0}) is None  # cannot represent it


def test_recovered_equation_formatting():
    weights = {"x0": 2.0001, "x1": -2.9996, "x2": 0.0004, "x0*x1": 1.99999, "1": -3.0002}
    assert format_equation(weights) == "y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000"
    assert format_equation({"x0": -0.5, "1": 0.0}) == "y = -0.500*x0"
    assert format_equation({"x0": 0.0001, "1": 0.0}) == "y = 0"
    assert format_equation({"x0**2": 1.0, "1": 0.00049}, threshold=1e-3) == "y = 1.000*x0**2"
    # Canonical order whatever the input order: linear terms, then crosses by index, constant last.
    shuffled = {"1": -3.0, "x0*x1": 2.0, "x1": -3.0, "x0**2": 0.5, "x0": 2.0}
    assert format_equation(shuffled) == "y = 2.000*x0 - 3.000*x1 + 0.500*x0**2 + 2.000*x0*x1 - 3.000"
