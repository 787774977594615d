"""The equation parser: valid input evaluates exactly; hostile input is refused, quickly, with a pointer."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.equations import MAX_LENGTH, EquationError, parse


@pytest.fixture
def X() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((50, 10))


def test_linear_equation_evaluates(X):
    y = parse("2*x0 - 3*x1 + 1", 10)(X)
    np.testing.assert_allclose(y, 2 * X[:, 0] - 3 * X[:, 1] + 1)


def test_product_and_square_evaluate(X):
    np.testing.assert_allclose(parse("(2*x0 - 3)*(x1 + 1)", 10)(X), (2 * X[:, 0] - 3) * (X[:, 1] + 1))
    np.testing.assert_allclose(parse("x0**2", 1)(X[:, :1]), X[:, 0] ** 2)


def test_functions_unary_minus_division_and_constants(X):
    y = parse("-sin(x0) + exp(x1)/2 - abs(x2)**0.5 + sqrt(abs(x3)) + 1.5e-1", 10)(X)
    expected = -np.sin(X[:, 0]) + np.exp(X[:, 1]) / 2 - np.abs(X[:, 2]) ** 0.5 + np.sqrt(np.abs(X[:, 3])) + 0.15
    np.testing.assert_allclose(y, expected)


def test_constant_equation_broadcasts(X):
    np.testing.assert_array_equal(parse("3", 10)(X), np.full(50, 3.0))


def test_variables_are_reported():
    assert parse("x0*x7 + x0", 10).used == {"x0", "x7"}


HOSTILE = {
    "__import__('os').system('touch MARKER')": "only these functions can be called",
    "x0.__class__": "Attribute",
    "(lambda: 1)()": "only these functions can be called",
    "lambda: 1": "Lambda",
    "[x0 for x0 in range(3)]": "ListComp",
    "9**9**9**9": "exponent",
    "x0**x1": "exponent",
    "x0**100": "exponent",
    "x12 + 1": "x12",
    "": "empty",
    "   ": "empty",
    "x0 +": "not a valid expression",
    "open('/etc/passwd')": "open",
    "x0 if x1 else x2": "IfExp",
    "x0 < x1": "Compare",
    "'abc'": "numbers",
    "True": "numbers",
    "1e999": "finite",
    "x0; x1": "not a valid expression",
    "sin(x0, x1)": "one positional argument",
    "sin(x=x0)": "one positional argument",
    "y + 1": "unknown name",
    "x01": "unknown name",
    "f'{x0}'": "JoinedStr",
    "x0 @ x1": "MatMult",
    "x0 // 2": "FloorDiv",
}


@pytest.mark.parametrize("text, pointer", HOSTILE.items())
def test_hostile_input_is_refused_with_a_pointer(text, pointer, tmp_path):
    marker = tmp_path / "pwned"
    start = time.perf_counter()
    with pytest.raises(EquationError) as info:
        parse(text.replace("MARKER", str(marker)), 10)
    assert time.perf_counter() - start < 1.0
    assert pointer in str(info.value)
    assert not marker.exists()


def test_out_of_range_variable_names_the_limit():
    with pytest.raises(EquationError, match=r"out of range: n_features is 10, so x0\.\.x9: 'x12' at column 1"):
        parse("x12 + 1", 10)


def test_huge_input_is_refused_before_parsing():
    start = time.perf_counter()
    with pytest.raises(EquationError, match=f"100000 characters long; the limit is {MAX_LENGTH}"):
        parse("x0+" * 33332 + "x0+x", 10)
    assert time.perf_counter() - start < 0.1


def test_redundant_parentheses_are_harmless(X):
    np.testing.assert_allclose(parse("(" * 100 + "x0" + ")" * 100, 10)(X), X[:, 0])


@pytest.mark.parametrize("text", ["(" * 1000 + "x0" + ")" * 1000, "sin(" * 150 + "x0" + ")" * 150])
def test_deep_nesting_is_refused(text):
    start = time.perf_counter()
    with pytest.raises(EquationError):
        parse(text, 10)
    assert time.perf_counter() - start < 1.0


def test_deep_operator_chain_is_refused():
    with pytest.raises(EquationError, match="nested more than"):
        parse("-" * 500 + "x0", 10)


def test_a_long_sum_is_refused_saying_how_to_group_it_and_grouped_it_is_kept():
    names = tuple(f"v{i}" for i in range(150))
    with pytest.raises(EquationError, match=r"nested more than 100 levels deep \(each operation of a chain is a level"):
        parse(" + ".join(names), names)
    grouped = " + ".join("(" + " + ".join(names[start : start + 15]) + ")" for start in range(0, 150, 15))
    X = np.arange(150, dtype=float)[None, :]
    assert parse(grouped, names)(X)[0] == sum(range(150))


def test_sympy_form_is_built_from_the_tree():
    import sympy

    expr = parse("(2*x0 - 3)*(x1 + 1)", 10).to_sympy()
    x0, x1 = sympy.symbols("x0 x1")
    assert sympy.expand(expr - (2 * x0 * x1 + 2 * x0 - 3 * x1 - 3)) == 0


def test_a_library_computes_each_shared_factor_once_with_the_same_values():
    import ast
    import operator

    import torch

    from pipeline import terms
    from pipeline.equations import TORCH_OPS
    from pipeline.models import TORCH_FUNCTIONS, LinearModel

    calls = {ast.Mult: 0, ast.Pow: 0}

    def counted(op, fn):
        def run(a, b):
            calls[op] = calls.get(op, 0) + 1
            return fn(a, b)

        return run

    ops = TORCH_OPS | {ast.Mult: counted(ast.Mult, operator.mul), ast.Pow: counted(ast.Pow, operator.pow)}
    names, variables = ("m**2*r", "m**2*t", "m**2*r*t", "sin(m**2*r)"), ("m", "r", "t")
    x = torch.rand(50, 3, dtype=torch.float64) + 1
    columns = terms.columns(x, names, variables, TORCH_FUNCTIONS, ops)
    # m**2 once; m**2*r once, shared by (m**2*r)*t and sin(m**2*r); m**2*t; (m**2*r)*t.
    assert calls == {ast.Mult: 3, ast.Pow: 1}
    m, r, t = x.unbind(-1)
    for column, expected in zip(columns, (m**2 * r, m**2 * t, m**2 * r * t, torch.sin(m**2 * r)), strict=True):
        assert torch.equal(column, expected)  # bit for bit: the same operations on the same inputs

    # What MLflow traces to log a model: a node per operation, not per mention.
    model = LinearModel(3, names, variables)
    graph = torch.export.export(model, (x.float(),)).graph
    assert len(graph.nodes) <= 16, [str(n.target) for n in graph.nodes]
