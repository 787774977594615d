"""The feature terms of the linear families, by name: `x0`, `x0**2`, `x0*x1*x3`, `sin(x1)`.

The cross family is a linear model over a library of terms: the raw inputs, every monomial of
degree 2 to `degree`, and optionally unary functions of each input (`sin(x0)`, ...), or an
explicit list of terms. A term is any expression the safe equation parser accepts; it is known by
a canonical name, the same one the true equation's symbolic expansion gives its terms, so that a
recovered equation and the true one can be compared term by term. Terms are evaluated by walking
their checked trees, with numpy (reference fits) or torch (the models), never with eval.
"""

from __future__ import annotations

import re
from functools import cache
from itertools import combinations_with_replacement
from typing import TYPE_CHECKING, Any

from pipeline.equations import EquationError, evaluate, parse

if TYPE_CHECKING:
    import ast

    import sympy

CONSTANT = "1"  # the key of the bias / constant term in every coefficient table
MAX_DEGREE = 4
MAX_TERMS = 5000  # features of one library: beyond this the least-squares references cost minutes


def monomial(indices: tuple[int, ...]) -> str:
    """(0, 0, 1) -> 'x0**2*x1': variables in index order, powers written out."""
    parts = []
    for index in sorted(set(indices)):
        power = indices.count(index)
        parts.append(f"x{index}" if power == 1 else f"x{index}**{power}")
    return "*".join(parts)


def library(n_features: int, degree: int = 2, functions: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every monomial of degree 2..`degree` in `n_features` inputs, then f(x_i) for each function f.

    The raw inputs themselves are not listed: every linear-family model has them."""
    terms = [
        monomial(indices)
        for d in range(2, degree + 1)
        for indices in combinations_with_replacement(range(n_features), d)
    ]
    terms += [f"{name}(x{i})" for name in functions for i in range(n_features)]
    return tuple(terms)


def library_size(n_features: int, degree: int, n_functions: int) -> int:
    from math import comb

    return sum(comb(n_features + d - 1, d) for d in range(2, degree + 1)) + n_functions * n_features


def canonical(text: str, n_features: int) -> str:
    """The canonical name of a term written by hand (`x1*x0` -> `x0*x1`, `sin( x2 )` -> `sin(x2)`).

    Raises EquationError if it is not a term: a constant, or a sum of several terms."""
    import sympy

    expanded = sympy.expand(parse(text, n_features).to_sympy())
    terms = sympy.Add.make_args(expanded)
    coefficient, rest = terms[0].as_coeff_Mul()
    if len(terms) != 1 or coefficient != 1 or rest == 1:
        raise EquationError(f"{text!r} is not a single term (a product of inputs or a function of them)")
    return name_of(rest)


def name_of(term: sympy.Expr) -> str:
    """The canonical name of a sympy term without its coefficient: monomial first, then the rest."""
    import sympy

    powers: dict[int, int] = {}
    others = []
    for factor in sympy.Mul.make_args(term):
        base, exponent = factor.as_base_exp()
        if base.is_Symbol and exponent.is_Integer and exponent > 0:
            powers[int(base.name[1:])] = powers.get(int(base.name[1:]), 0) + int(exponent)
        else:
            others.append(re.sub(r"\s+", "", str(factor)))
    indices = tuple(i for i, p in sorted(powers.items()) for _ in range(p))
    return "*".join(([monomial(indices)] if indices else []) + sorted(others))


def degree_of(name: str) -> int | None:
    """The degree of a monomial term's name, or None if the term is not a monomial."""
    if not re.fullmatch(r"x\d+(\*\*\d+)?(\*x\d+(\*\*\d+)?)*", name):
        return None
    return sum(int(p) if p else 1 for p in re.findall(r"x\d+(?:\*\*(\d+))?", name))


def function_of_input(name: str) -> str | None:
    """'sin' for 'sin(x3)'; None for anything else."""
    match = re.fullmatch(r"([a-z]+)\(x\d+\)", name)
    return match.group(1) if match else None


def order(name: str) -> tuple:
    """Canonical order: inputs, then monomials by degree and indices, then other terms, constant last."""
    if name == CONSTANT:
        return (3, 0, (), name)
    degree = degree_of(name)
    if degree is not None:
        return (0 if degree == 1 else 1, degree, tuple(int(i) for i in re.findall(r"x(\d+)", name)), name)
    return (2, 0, (), name)


@cache
def _tree(name: str, n_features: int) -> ast.expr:
    return parse(name, n_features).tree


def columns(X: Any, names: tuple[str, ...], functions: dict | None = None, ops: dict | None = None) -> list:
    """Each term evaluated on the rows of X, as a list of columns: numpy by default, or torch with
    torch's functions and operators (see `equations.evaluate`)."""
    n_features = X.shape[-1]
    return [evaluate(_tree(name, n_features), lambda i: X[..., i], functions, ops) for name in names]
