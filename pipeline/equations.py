"""Equations as safe expression trees over named variables.

An equation string is parsed with Python's `ast` and checked against an allow-list: numbers, the
declared variables (`x0..x{n-1}` for the shorthand, or names such as `G`, `m1`, `r`), the constants
`pi` and `e`, `+ - * / **`, unary signs and a few named functions (`ln` is `log`). Nothing is ever
passed to eval/exec: evaluation walks the checked tree with numpy (or torch), and `to_sympy` builds
the symbolic form from the same tree. Hostile input is refused before or during the walk, in time
bounded by MAX_LENGTH.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import InputError

if TYPE_CHECKING:
    import sympy

MAX_LENGTH = 2000  # characters; longer input is refused before the parser sees it
MAX_DEPTH = 100  # nesting of operations; keeps the recursive walks far from Python's limit
MAX_EXPONENT = 10  # |p| in a**p; a literal cap is what stops 9**9**9**9
# Terms the symbolic expansion (true coefficients) may produce. `(x0+...+x9)**10` is 60 characters
# and expands to 92,378 terms (minutes and gigabytes in sympy); 1,000 terms expand in ~0.2 s.
MAX_TERMS = 1000

FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": np.arctan,
}
ALIASES = {"ln": "log", "asin": "arcsin", "acos": "arccos", "atan": "arctan"}  # read back as numpy names them
CONSTANTS = {"pi": math.pi, "e": math.e}
SYMPY_NAMES = {"abs": "Abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan"}  # the rest keep their name
RESERVED = set(FUNCTIONS) | set(ALIASES) | set(CONSTANTS)
BINARY_OPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
VARIABLE = re.compile(r"x(0|[1-9][0-9]*)")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def shorthand(n_features: int) -> tuple[str, ...]:
    """The variables of the shorthand: x0..x{n-1}."""
    return tuple(f"x{i}" for i in range(n_features))


class EquationError(InputError):
    """An equation string that is malformed or uses something outside the allow-list."""


@dataclass(frozen=True, eq=False)
class Equation:
    """A checked equation: call it on an (n_samples, n_features) array, its columns the
    variables in order, to get y."""

    text: str
    variables: tuple[str, ...]  # the columns of X, in order
    tree: ast.expr

    @property
    def n_features(self) -> int:
        return len(self.variables)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected X of shape (n, {self.n_features}), got {X.shape}")
        index = {name: i for i, name in enumerate(self.variables)}
        with np.errstate(all="ignore"):
            y = evaluate(self.tree, lambda name: X[:, index[name]])
        return np.broadcast_to(np.asarray(y, dtype=np.float64), (X.shape[0],)).copy()

    @cached_property  # asked once per declared variable: one walk, not one each (500 inputs: 2 s)
    def used(self) -> frozenset[str]:
        """The variables the equation uses."""
        return frozenset(n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and n.id in self.variables)

    def divisors(self) -> list[Equation]:
        """Where the equation may have a pole: what it divides by (`b` of a/b, `a` of a**-2, cos(u)
        of tan(u)), and the factors, bases and arguments whose zeros are a divisor's (`r` of
        4*pi*r**2), each an equation of the same variables; those without a variable left out."""
        found: dict[str, ast.expr] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                _zeros_of(node.right, found)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _literal(node.right) < 0:
                _zeros_of(node.left, found)
            elif isinstance(node, ast.Call) and node.func.id == "tan":
                _zeros_of(ast.Call(ast.Name("cos", ast.Load()), node.args, []), found)
        return [Equation(text, self.variables, node) for text, node in found.items()]

    def to_sympy(self, positive: frozenset[str] = frozenset()) -> sympy.Expr:
        """The sympy expression of the tree (built node by node, never from raw text); the
        variables in `positive` are positive symbols, so that powers and logarithms of them expand."""
        return _to_sympy(self.tree, positive)


def parse(text: str, variables: int | tuple[str, ...]) -> Equation:
    """Parse and check `text` over `variables` (a count: the shorthand x0..x{n-1}; or names);
    raise EquationError naming the offending part."""
    variables = shorthand(variables) if isinstance(variables, int) else tuple(variables)
    if not isinstance(text, str):
        raise EquationError(f"equation must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise EquationError(f"equation is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise EquationError("equation is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise EquationError(f"equation {_short(text)} is not a valid expression: {reason}{_hint(text)}") from None
    _check(tree, text.strip(), variables, depth=0)
    tree = _resolve_aliases(tree)
    terms = expansion_terms(tree)
    if terms > MAX_TERMS:
        raise EquationError(
            f"equation {_short(text.strip())} would expand to up to {terms:,} terms (the limit is {MAX_TERMS:,}); "
            "write a smaller polynomial"
        )
    return Equation(text=text.strip(), variables=variables, tree=tree)


# How a formula written for people differs from this language, and what to write instead (the first that fits).
_CALLABLE = "|".join([*FUNCTIONS, *ALIASES])
# Signs of typeset mathematics (a formula pasted from a paper), each with what this language writes.
TYPESET = {"×": "*", "·": "*", "⋅": "*", "−": "-", "–": "-", "÷": "/", "²": "**2", "³": "**3", "√": "sqrt(...)",
           "π": "pi"}  # fmt: skip
HINTS = (
    (re.compile(r"(?<![=<>!])=(?!=)"), "write only the right-hand side, as 2*m for y = 2*m"),
    (re.compile(rf"\b({_CALLABLE})\s+[\w(]"), "call a function with parentheses, as sin(x)"),
    (re.compile(r"(?<![\w.])\d+(\.\d*)?[A-Za-z_(]|[\w)]\s+[A-Za-z_(]"), "write every product with *, as 2*x"),
    *((re.compile(re.escape(sign)), f"write {sign} as {plain}") for sign, plain in TYPESET.items()),
)


def _hint(text: str) -> str:
    return next((f" ({hint})" for pattern, hint in HINTS if pattern.search(text)), "")


def _resolve_aliases(tree: ast.expr) -> ast.expr:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.func.id in ALIASES:
            node.func.id = ALIASES[node.func.id]
    return tree


def expansion_terms(node: ast.AST) -> int:
    """An upper bound on the number of terms `sympy.expand` gives for a checked tree, or of any
    intermediate expansion inside it: computed from the tree's shape in microseconds, so the
    cost of expanding is known before anything is expanded."""
    return _terms(node)[1]


def _terms(node: ast.AST) -> tuple[int, int]:
    """(terms of this node's expansion, the most terms of any expansion inside it)."""
    if isinstance(node, (ast.Constant, ast.Name)):
        return 1, 1
    if isinstance(node, ast.UnaryOp):
        return _terms(node.operand)
    if isinstance(node, ast.Call):  # expand works inside the argument; the call stays one term
        return 1, _terms(node.args[0])[1]
    (left, left_max), (right, right_max) = _terms(node.left), _terms(node.right)
    if isinstance(node.op, (ast.Add, ast.Sub)):
        terms = left + right
    elif isinstance(node.op, (ast.Mult, ast.Div)):  # a quotient is distributed like a product
        terms = left * right
    else:  # a**p with a literal p: a multinomial, C(t + p - 1, p) terms, for an integer p
        exponent = _literal(node.right)
        terms = math.comb(left + abs(int(exponent)) - 1, abs(int(exponent))) if float(exponent).is_integer() else left
    return terms, max(terms, left_max, right_max)


def _literal(node: ast.AST) -> float | Fraction:
    """A checked exponent's value: a number, or a fraction of two integers (`x**(3/2)`), exact."""
    if isinstance(node, ast.UnaryOp):
        value = _literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return Fraction(_literal(node.left)) / Fraction(_literal(node.right))
    return node.value


def _zeros_of(node: ast.expr, found: dict[str, ast.expr]) -> None:
    """Add `node`, and the parts whose zeros are zeros of it (a product's factors, a quotient's
    numerator, a positive power's base, the argument of a sign, abs or sqrt), keyed by their text."""
    if not any(isinstance(inner, ast.Name) and inner.id not in CONSTANTS for inner in ast.walk(node)):
        return
    found.setdefault(ast.unparse(node).replace(" ** ", "**"), node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        _zeros_of(node.left, found)
        _zeros_of(node.right, found)
    elif isinstance(node, ast.BinOp) and (
        isinstance(node.op, ast.Div) or (isinstance(node.op, ast.Pow) and _literal(node.right) > 0)
    ):
        _zeros_of(node.left, found)
    elif isinstance(node, ast.UnaryOp) or (isinstance(node, ast.Call) and node.func.id in ("abs", "sqrt")):
        _zeros_of(node.operand if isinstance(node, ast.UnaryOp) else node.args[0], found)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _refuse(node: ast.AST, text: str, why: str) -> EquationError:
    part = ast.get_source_segment(text, node) or type(node).__name__
    column = getattr(node, "col_offset", 0) + 1
    return EquationError(f"{why}: {_short(part)} at column {column} of {_short(text)}")


def _check(node: ast.AST, text: str, variables: tuple[str, ...], depth: int) -> None:
    if depth > MAX_DEPTH:
        why = "each operation of a chain is a level: group a long sum, as (a + b + c) + (d + e + f)"
        raise _refuse(node, text, f"equation is nested more than {MAX_DEPTH} levels deep ({why})")
    if isinstance(node, ast.Constant):
        _check_number(node, text)
    elif isinstance(node, ast.Name):
        _check_variable(node, text, variables)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check(node.operand, text, variables, depth + 1)
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPS:
        if isinstance(node.op, ast.Pow):
            _check_exponent(node.right, text)
        _check(node.left, text, variables, depth + 1)
        _check(node.right, text, variables, depth + 1)
    elif isinstance(node, ast.BinOp):
        power = " (a power is written **, as x**2)" if isinstance(node.op, ast.BitXor) else ""
        raise _refuse(node, text, f"operator {type(node.op).__name__} is not allowed (use + - * / **){power}")
    elif isinstance(node, ast.Tuple):
        raise _refuse(node, text, "a comma is not allowed (a decimal is written with a point, as 2.5)")
    elif isinstance(node, ast.Call):
        _check_call(node, text)
        _check(node.args[0], text, variables, depth + 1)
    else:
        raise _refuse(node, text, f"{type(node).__name__} is not allowed in an equation")


def _check_number(node: ast.Constant, text: str) -> None:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(node, text, "only numbers are allowed as constants")
    if not math.isfinite(float(value)):
        raise _refuse(node, text, "constant is not a finite float")


def _check_variable(node: ast.Name, text: str, variables: tuple[str, ...]) -> None:
    if node.id in variables or node.id in CONSTANTS:
        return
    n = len(variables)
    if variables == shorthand(n):
        if VARIABLE.fullmatch(node.id):
            raise _refuse(node, text, f"variable out of range: n_features is {n}, so x0..x{n - 1}")
        declared = f"x0..x{n - 1}"
    else:
        declared = ", ".join(variables)
    functions = ", ".join(sorted(FUNCTIONS))
    typeset = next((f"; write {sign} as {plain}" for sign, plain in TYPESET.items() if sign in node.id), "")  # π, m·v
    raise _refuse(
        node, text,
        f"unknown name (the variables are {declared}, the constants pi and e; call one of {functions}{typeset})",
    )  # fmt: skip


def _check_exponent(node: ast.AST, text: str) -> None:
    """A number, or a fraction of two integers as physics writes it (`r**(-3/2)`), signed."""
    inner = node.operand if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) else node
    if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Div):
        if not (_is_integer(inner.left) and _is_integer(inner.right)) or _literal(inner.right) == 0:
            raise _refuse(node, text, "an exponent's fraction must be of two integers, such as (3/2)")
    elif not _is_number(inner):
        raise _refuse(node, text, "an exponent must be a number, or a fraction of two integers such as (3/2)")
    if abs(_literal(inner)) > MAX_EXPONENT:
        raise _refuse(node, text, f"exponent magnitude is limited to {MAX_EXPONENT}")


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _is_integer(node: ast.AST) -> bool:
    inner = node.operand if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) else node
    return _is_number(inner) and type(inner.value) is int


def _check_call(node: ast.Call, text: str) -> None:
    if isinstance(node.func, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Call)):  # 2(x+1), (a+b)(c+d): as in print
        raise _refuse(node, text, "write every product with *, as 2*(x+1)")
    if not (isinstance(node.func, ast.Name) and (node.func.id in FUNCTIONS or node.func.id in ALIASES)):
        called = f"only these functions can be called: {', '.join(sorted(FUNCTIONS))}"
        raise _refuse(node, text, f"{called} (a product is written with *, as m*(a+b))")
    if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
        raise _refuse(node, text, "a function takes exactly one positional argument")


def evaluate(
    node: ast.AST,
    column: Callable[[int], Any],
    functions: dict | None = None,
    ops: dict | None = None,
    memo: dict[str, Any] | None = None,
) -> Any:
    """The checked tree's value, with `column(name)` for a variable: numpy by default; pass torch's
    functions and Python's operators (`TORCH_OPS`) to build the same expression on tensors.

    `memo` holds the values of subexpressions already evaluated, by their form, for calls that share
    it: a library's terms repeat their factors (`m**2*r`, `m**2*t`, `m**2*r*t`), and each repeat
    would be computed again (on tensors, another node of an exported model's graph). The values are
    the same either way: the same operations on the same inputs."""
    if memo is None or isinstance(node, (ast.Constant, ast.Name)):
        return _evaluate(node, column, functions, ops, memo)
    key = _form(node)
    if key not in memo:
        memo[key] = _evaluate(node, column, functions, ops, memo)
    return memo[key]


@cache
def _form(node: ast.AST) -> str:
    return ast.dump(node)


def _evaluate(
    node: ast.AST, column: Callable[[int], Any], functions: dict | None, ops: dict | None, memo: dict | None
) -> Any:
    functions = FUNCTIONS if functions is None else functions
    ops = BINARY_OPS if ops is None else ops
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id] if node.id in CONSTANTS else column(node.id)
    if isinstance(node, ast.UnaryOp):
        value = evaluate(node.operand, column, functions, ops, memo)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = evaluate(node.left, column, functions, ops, memo)
        return ops[type(node.op)](left, evaluate(node.right, column, functions, ops, memo))
    return functions[node.func.id](evaluate(node.args[0], column, functions, ops, memo))


# Python's operators: what tensors (and torch.export) need, where numpy takes its ufuncs.
TORCH_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


def _to_sympy(node: ast.AST, positive: frozenset[str]) -> sympy.Expr:
    import sympy  # only the symbolic reports need it

    if isinstance(node, ast.Constant):
        return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return {"pi": sympy.pi, "e": sympy.E}[node.id]
        return sympy.Symbol(node.id, positive=True) if node.id in positive else sympy.Symbol(node.id)
    if isinstance(node, ast.UnaryOp):
        value = _to_sympy(node.operand, positive)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _to_sympy(node.left, positive)
        if isinstance(node.op, ast.Pow):  # a literal exponent, exact: x**0.5 is sqrt(x), x**(1/3) a cube root
            exponent = _literal(node.right)
            return left ** (sympy.Rational(exponent.numerator, exponent.denominator) if isinstance(exponent, Fraction)
                            else sympy.Rational(repr(exponent)))  # fmt: skip
        right = _to_sympy(node.right, positive)
        return {
            ast.Add: lambda: left + right,
            ast.Sub: lambda: left - right,
            ast.Mult: lambda: left * right,
            ast.Div: lambda: left / right,
        }[type(node.op)]()
    return getattr(sympy, SYMPY_NAMES.get(node.func.id, node.func.id))(_to_sympy(node.args[0], positive))
