"""The feature terms of the linear families, by name: `x0`, `x0**2`, `x0*x1*x3`, `sin(x1)`,
`G*m1*m2*r**-2`, `rho**-0.5`, `r*F*sin(theta)`.

The cross family is a linear model over a library of terms beside the raw inputs: every monomial of
degree 2 to `degree`, functions of each input (`sin(x0)`, ...), powers of each input (`r**-2`,
`rho**-0.5`), products proposed from the data (`pipeline.proposals`), or an explicit list. A term
is any expression the safe equation parser accepts; it is known by a canonical name, the same one
the true equation's symbolic expansion gives its terms, so that a recovered equation and the true
one can be compared term by term. Terms are evaluated by walking their checked trees, with numpy
(reference fits) or torch (the models), never with eval.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from itertools import combinations_with_replacement
from math import comb
from typing import TYPE_CHECKING, Any

from pipeline.equations import SYMPY_NAMES, EquationError, evaluate, parse, shorthand

if TYPE_CHECKING:
    import ast

    import sympy

CONSTANT = "1"  # the key of the bias / constant term in every coefficient table
MAX_DEGREE = 4
MAX_TERMS = 5000  # features of one library: beyond this the least-squares references cost minutes
OUR_NAMES = {sympy_name: name for name, sympy_name in SYMPY_NAMES.items()}


def power(name: str, exponent: Fraction | float) -> str:
    """`r`, `r**2`, `r**-2`, `rho**0.5`: one variable to a power, as canonical names write it."""
    exponent = Fraction(exponent).limit_denominator(1000)
    if exponent == 1:
        return name
    text = str(exponent.numerator) if exponent.denominator == 1 else repr(float(exponent))
    return f"{name}**{text}"


def monomial(indices: tuple[int, ...], variables: tuple[str, ...]) -> str:
    """(0, 0, 1) -> 'x0**2*x1': variables in declaration order, powers written out."""
    return "*".join(power(variables[i], indices.count(i)) for i in sorted(set(indices)))


def library(
    variables: tuple[str, ...] | int, degree: int = 2, functions: tuple[str, ...] = (), powers: tuple[float, ...] = ()
) -> tuple[str, ...]:
    """Every monomial of degree 2..`degree`, then f(v) for each function f, then v**p for each
    power p not already there, over `variables` (a count: the shorthand x0..x{n-1}). The raw inputs
    themselves are not listed: every linear-family model has them."""
    variables = shorthand(variables) if isinstance(variables, int) else variables
    terms = [
        monomial(indices, variables)
        for d in range(2, degree + 1)
        for indices in combinations_with_replacement(range(len(variables)), d)
    ]
    terms += [f"{name}({v})" for name in functions for v in variables]
    for p in powers:
        terms += [power(v, p) for v in variables if not (float(p).is_integer() and 1 <= p <= degree)]
    return tuple(dict.fromkeys(terms))


def library_size(n_features: int, degree: int, n_functions: int, n_powers: int = 0) -> int:
    return sum(comb(n_features + d - 1, d) for d in range(2, degree + 1)) + (n_functions + n_powers) * n_features


def canonical(text: str, variables: tuple[str, ...] | int, positive: frozenset[str] = frozenset()) -> str:
    """The canonical name of a term written by hand (`x1*x0` -> `x0*x1`, `sin( x2 )` -> `sin(x2)`,
    `1/r**2` -> `r**-2`). Raises EquationError if it is not a term: a constant, or a sum."""
    import sympy

    variables = shorthand(variables) if isinstance(variables, int) else variables
    expanded = sympy.expand(parse(text, variables).to_sympy(positive))
    terms = sympy.Add.make_args(expanded)
    coefficient, rest = terms[0].as_coeff_Mul()
    if len(terms) != 1 or coefficient != 1 or rest == 1:
        raise EquationError(f"{text!r} is not a single term (a product of inputs or a function of them)")
    return name_of(rest, variables)


def name_of(term: sympy.Expr, variables: tuple[str, ...]) -> str:
    """The canonical name of a sympy term without its coefficient: the powers of the variables in
    their declared order, then the other factors (functions) in alphabetical order."""
    import sympy

    powers: dict[str, Fraction] = {}
    others = []
    for factor in sympy.Mul.make_args(term):
        base, exponent = factor.as_base_exp()
        if base.is_Symbol and base.name in variables and exponent.is_Rational:
            powers[base.name] = powers.get(base.name, Fraction(0)) + Fraction(int(exponent.p), int(exponent.q))
        else:
            others.append(_printed(factor))
    names = [power(v, powers[v]) for v in variables if powers.get(v)]
    return "*".join(names + sorted(others))


def _printed(expr: sympy.Expr) -> str:
    """A factor as our parser writes it (`arcsin`, `abs`), without spaces."""
    from sympy.printing.str import StrPrinter

    class Printer(StrPrinter):
        def _print_Function(self, e: sympy.Expr) -> str:
            name = OUR_NAMES.get(type(e).__name__, type(e).__name__)
            return f"{name}({', '.join(self._print(a) for a in e.args)})"

        def _print_Abs(self, e: sympy.Expr) -> str:
            return f"abs({self._print(e.args[0])})"

    return Printer().doprint(expr).replace(" ", "")


@cache
def parts(name: str, variables: tuple[str, ...]) -> tuple[dict[str, Fraction], tuple[str, ...]]:
    """A term's powers of the variables and its other factors (function calls), from its name."""
    import sympy

    powers: dict[str, Fraction] = {}
    others = []
    for factor in sympy.Mul.make_args(parse(name, variables).to_sympy()):
        base, exponent = factor.as_base_exp()
        if base.is_Symbol and exponent.is_Rational:
            powers[base.name] = powers.get(base.name, Fraction(0)) + Fraction(int(exponent.p), int(exponent.q))
        elif not factor.is_number:
            others.append(_printed(factor))
    return powers, tuple(others)


def degree_of(name: str, variables: tuple[str, ...]) -> int | None:
    """The degree of a monomial term's name (positive integer powers only), or None."""
    if name == CONSTANT:
        return None
    try:
        powers, others = parts(name, variables)
    except EquationError:
        return None
    if others or not all(p > 0 and p.denominator == 1 for p in powers.values()):
        return None
    return int(sum(powers.values()))


def function_of_input(name: str, variables: tuple[str, ...]) -> str | None:
    """'sin' for 'sin(x3)'; None for anything else."""
    head, _, rest = name.partition("(")
    return head if rest[:-1] in variables and name.endswith(")") and head.isalpha() else None


def order(name: str, variables: tuple[str, ...]) -> tuple:
    """Canonical order: inputs, then monomials by degree and variables, then other terms, constant last."""
    if name == CONSTANT:
        return (3, 0, (), name)
    degree = degree_of(name, variables)
    if degree is not None:
        positions = tuple(variables.index(v) for v in parts(name, variables)[0])
        return (0 if degree == 1 else 1, degree, positions, name)
    return (2, 0, (), name)


@cache
def _tree(name: str, variables: tuple[str, ...]) -> ast.expr:
    return parse(name, variables).tree


def columns(
    X: Any, names: tuple[str, ...], variables: tuple[str, ...], functions: dict | None = None, ops: dict | None = None
) -> list:
    """Each term evaluated on the rows of X (columns: `variables`), as a list of columns: numpy by
    default, or torch with torch's functions and operators (see `equations.evaluate`)."""
    # Each variable's column taken once: a term's every mention of it would be another slice (in
    # torch, another node of an exported model's graph).
    column, shared = {name: X[..., i] for i, name in enumerate(variables)}, {}
    return [evaluate(_tree(name, variables), column.__getitem__, functions, ops, shared) for name in names]
