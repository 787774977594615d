"""Equations as scientists write them: named quantities drawn from their ranges, constants and the
functions physics uses, bad declarations refused with their key and value, and a power law with
negative and fractional exponents read back exactly from data by the physics library."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, lock_md5

from pipeline import data, reference
from pipeline.config import ConfigError, validate_params
from pipeline.equations import EquationError, parse
from pipeline.proposals import propose
from pipeline.stages import specs
from pipeline.terms import canonical, library

GRAVITY = {
    "equation": "G*m1*m2/r**2",
    "variables": {"G": {"low": 1, "high": 2}, "m1": {"low": 1, "high": 5}, "m2": {"low": 1, "high": 5},
                  "r": {"low": 1, "high": 5}},
}  # fmt: skip


def params_with(raw: dict, **datasets: dict) -> dict:
    return raw | {"datasets": datasets}


def test_named_variables_are_drawn_from_their_declared_distributions(default_params_raw):
    mixed = {
        "equation": "a*b + c",
        "variables": {"a": {"low": 1, "high": 5}, "b": {"dist": "loguniform", "low": 0.01, "high": 100},
                      "c": {"mean": 10, "std": 2}},
        "n_samples": 20000,
    }  # fmt: skip
    params = validate_params(params_with(default_params_raw, mixed=mixed))
    spec = specs.dataset_spec(params, "mixed")
    assert spec.equation.variables == ("a", "b", "c") and [v.dist for v in spec.variables] == [
        "uniform", "loguniform", "normal",
    ]  # fmt: skip
    ds = data.generate(spec)
    X = np.vstack([ds.X_train, ds.X_val])
    a, b, c = X.T
    assert 1 <= a.min() and a.max() <= 5 and abs(a.mean() - 3) < 0.05
    assert 0.01 <= b.min() and b.max() <= 100 and abs(np.log10(b).mean()) < 0.05  # uniform in log
    assert abs(c.mean() - 10) < 0.05 and abs(c.std() - 2) < 0.05
    np.testing.assert_allclose(ds.y_train, ds.X_train[:, 0] * ds.X_train[:, 1] + ds.X_train[:, 2])
    # Out of range, each variable beyond its own range: [high, high + (high - low)], log-uniform
    # as far again in log, normal 3 to 6 std above the mean.
    oa, ob, oc = ds.X_ood.T
    assert 5 <= oa.min() and oa.max() <= 9 and 100 <= ob.min() and ob.max() <= 1e6 and 16 <= oc.min() <= oc.max() <= 22


def test_the_shorthand_datasets_keep_their_bytes(default_params_raw, tmp_path):
    params = validate_params(default_params_raw)
    for name in params.datasets:  # the committed dvc.lock's hashes: x0..x{n-1} ~ N(0, 1) as before
        spec = specs.dataset_spec(params, name)
        data.save(data.generate(spec), spec, tmp_path / f"{name}.npz", tmp_path / f"{name}.json")
        assert data.file_md5(tmp_path / f"{name}.npz") == lock_md5(ROOT, f"data/{name}.npz")
        assert data.file_md5(tmp_path / f"{name}.json") == lock_md5(ROOT, f"data/{name}.json")


def test_constants_and_the_functions_physics_uses():
    X = np.array([[0.5, 2.0]])
    y = parse("pi*e + arcsin(u) + arccos(u) + arctan(v) + ln(v)", ("u", "v"))(X)
    assert y[0] == pytest.approx(math.pi * math.e + math.asin(0.5) + math.acos(0.5) + math.atan(2) + math.log(2))
    assert str(parse("ln(v)", ("u", "v")).to_sympy()) == "log(v)"
    assert canonical("1/(r**2) * m", ("m", "r"), frozenset({"m", "r"})) == "m*r**-2"
    assert canonical("sqrt(rho)/rho", ("rho",), frozenset({"rho"})) == "rho**-0.5"
    coulomb = parse("q*r/(4*pi*epsilon*r**3)", ("q", "epsilon", "r"))
    truth = reference.true_coefficients(coulomb, frozenset({"q", "epsilon", "r"}))
    assert list(truth) == ["q*epsilon**-1*r**-2"] and truth["q*epsilon**-1*r**-2"] == pytest.approx(1 / (4 * math.pi))
    work = parse("n*ln(V2/V1)", ("n", "V1", "V2"))
    assert reference.true_coefficients(work, frozenset({"n", "V1", "V2"})) == {"n*log(V1)": -1.0, "n*log(V2)": 1.0}


def test_exponents_as_physics_writes_them_fractions_of_integers_and_the_c_names_of_arcsin():
    X = np.array([[4.0, 0.5]])
    kepler = parse("a**(3/2)*m**(-1/2) + asin(m) + acos(m) + atan(m)", ("a", "m"))
    assert kepler(X)[0] == pytest.approx(8 / math.sqrt(0.5) + math.asin(0.5) + math.acos(0.5) + math.atan(0.5))
    truth = reference.true_coefficients(parse("2*pi*a**(3/2)/sqrt(G*M)", ("a", "G", "M")), frozenset({"a", "G", "M"}))
    assert truth == {"a**1.5*G**-0.5*M**-0.5": pytest.approx(2 * math.pi)}  # exact: Rational(3, 2), not 1.5000001
    assert str(parse("r**-(1/3)", ("r",)).to_sympy()) == "r**(-1/3)"
    for text, message in [("r**(1.5/2)", "fraction must be of two integers"), ("r**(1/0)", "fraction must be of two"),
                          ("r**(r/2)", "fraction must be of two"), ("r**(21/2)", "exponent magnitude is limited to 10"),
                          ("r**s", "a number, or a fraction of two integers such as (3/2)")]:  # fmt: skip
        with pytest.raises(EquationError, match=re.escape(message)):
            parse(text, ("r", "s"))


@pytest.mark.parametrize(
    "text, hint",
    [("2x", "write every product with *"), ("m v**2", "write every product with *"),
     ("2(x+1)", "write every product with *, as 2*(x+1)"), ("(m+x)(v+1)", "write every product with *"),
     ("m (x+1)", "a product is written with *"), ("sin x", "call a function with parentheses"),
     ("ln v", "call a function with parentheses"), ("y = m*v", "write only the right-hand side"),
     ("m^2", "a power is written **, as x**2"), ("2,5*m", "a decimal is written with a point, as 2.5"),
     ("2×m", "write × as *"), ("m·v", "write · as *"), ("m − v", "write − as -"), ("m²", "write ² as **2"),
     ("√m", "write √ as sqrt(...)"), ("2*π*m", "write π as pi")],
)  # fmt: skip
def test_a_formula_written_as_in_print_is_refused_saying_what_to_write(text, hint):
    with pytest.raises(EquationError, match=re.escape(hint)):
        parse(text, ("m", "v", "x"))


BAD = [
    ({"equation": "G*m1*m2/r**2", "variables": {"G": {"low": 1, "high": 2}, "m1": {"low": 1, "high": 5},
      "m2": {"low": 1, "high": 5}}}, "datasets.g.equation", "unknown name"),  # r is not declared
    ({"equation": "G*m1", "variables": {"G": {"low": 1, "high": 2}, "m1": {"low": 1, "high": 5},
      "spare": {"low": 1, "high": 5}}}, "datasets.g", "['spare'] are declared but not used"),
    ({"equation": "sin*2", "variables": {"sin": {"low": 1, "high": 2}}}, "datasets.g.variables",
     "'sin' is a function"),
    ({"equation": "pi*2", "variables": {"pi": {"low": 1, "high": 2}}}, "datasets.g.variables",
     "'pi' is a function or constant"),
    ({"equation": "m*2", "variables": {"m": {"low": 5, "high": 1}}}, "datasets.g.variables.m",
     "low (5.0) must be below high (1.0)"),
    ({"equation": "m*2", "variables": {"m": {"dist": "loguniform", "low": 0, "high": 1}}}, "datasets.g.variables.m",
     "needs low > 0, got low = 0"),
    ({"equation": "sqrt(1 - v**2/c**2)", "variables": {"v": {"low": 1, "high": 5}, "c": {"low": 3, "high": 10}}},
     "datasets.g", "not finite on the declared ranges"),
    ({"equation": "h*c/lambda", "variables": {"h": {"low": 1, "high": 2}, "c": {"low": 1, "high": 2},
      "lambda": {"low": 1, "high": 2}}}, "datasets.g.variables",
     "'lambda' is a word of Python's syntax: rename it, as lambd"),
    ({"equation": "2*θ", "variables": {"θ": {"low": 1, "high": 2}}}, "datasets.g.variables",
     "'θ' must be an identifier: ASCII letters"),
    ({"equation": "m/m", "variables": {"m": {"low": 1, "high": 2}}}, "datasets.g",
     "the equation is 1 wherever the variables may be drawn: nothing to learn"),
    ({"equation": "G*m", "variables": {"G": {"low": 6.674e-11, "high": 6.674e-11}, "m": {"low": 1, "high": 2}}},
     "datasets.g.variables.G", "low and high are both 6.674e-11: a fixed value is a number in the equation"),
    ({"equation": "r/0", "variables": {"r": {"low": 1, "high": 2}}}, "datasets.g",
     "(16384 of 16384 probe points, e.g. at r="),  # not finite anywhere: no range would do
    ({"equation": "r/0", "variables": {"r": {"low": 1, "high": 2}}}, "datasets.g",
     "e.g. at r=1.637): check the equation"),
    ({"equation": "r*2", "variables": {"r": {"low": 1, "high": 2, "ood": [3]}}}, "datasets.g.variables.r.ood = [3]",
     "ood is an interval, [low, high]: two numbers"),
    ({"equation": "r*2", "variables": {"r": {"low": 1, "high": 2, "ood": 3}}}, "datasets.g.variables.r.ood = 3",
     "ood is an interval, [low, high]: two numbers"),
]  # fmt: skip


@pytest.mark.parametrize("dataset, key, message", BAD)
def test_bad_declarations_are_refused_naming_the_key(default_params_raw, dataset, key, message):
    with pytest.raises(ConfigError) as info:
        validate_params(params_with(default_params_raw, g=dataset))
    text = str(info.value)
    assert f"  {key}" in text and message in text, text


def test_a_library_over_its_bound_is_refused(default_params_raw):
    raw = params_with(default_params_raw, g={"equation": "x0", "n_features": 60})
    raw["models"] = raw["models"] | {"cross": {"degree": 3, "functions": ["sin", "cos"], "powers": [-1]}}
    bound = r"models.cross.degree = 3: .* \(60 inputs\) has 39,830 terms, above the limit of 5,000"
    with pytest.raises(ConfigError, match=bound):
        validate_params(raw)


def test_a_bad_declaration_stops_validate_with_one_line_and_writes_nothing(tmp_path, default_params_raw):
    raw = params_with(default_params_raw, g=BAD[4][0])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--out", "checks/params.txt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "datasets.g.variables.m = {'low': 5, 'high': 1}" in result.stderr
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["params.yaml"]


def test_a_power_law_with_negative_and_fractional_exponents_is_read_back_exactly():
    variables = ("a", "b", "c")
    spec = data.DatasetSpec(
        "law", parse("2.5*a*c**0.5/b**2", variables), 1000, 0.2, 0.0, 7, 3.0, 5.0, 100,
        variables=tuple(data.Variable(v, low=1.0, high=5.0) for v in variables),
    )  # fmt: skip
    ds = data.generate(spec)
    terms = library(variables, 2) + propose(ds.X_train, ds.y_train, variables, ())
    assert "a*b**-2*c**0.5" in terms  # proposed from a fit of logarithms: not in the polynomial library
    features = reference.Features(variables, terms)
    dense, *_ = np.linalg.lstsq(reference.design_matrix(ds.X_train, features), ds.y_train, rcond=None)
    sparse = reference.sparse_refit(ds, features, dict(zip(features.names, dense, strict=True)))
    truth = reference.true_coefficients(spec.equation, spec.positive)
    assert truth == {"a*b**-2*c**0.5": 2.5} and sparse.kept == ["a*b**-2*c**0.5"]
    assert sparse.table["a*b**-2*c**0.5"] == pytest.approx(2.5, rel=1e-9) and reference.is_exact(sparse, truth)
    assert reference.format_equation(sparse.table, variables) == "y = 2.500*a*b**-2*c**0.5"


def test_an_input_named_y_puts_f_on_the_left_hand_side():
    # The field's x, y, z: `y = 0.500*x*y` would read as an equation in y; f(x, y) = ... does not.
    variables = ("x", "y")
    spec = data.DatasetSpec(
        "field", parse("0.5*x*y + 2*y**2", variables), 500, 0.2, 0.0, 3, 3.0, 5.0, 100,
        variables=tuple(data.Variable(v, low=1.0, high=5.0) for v in variables),
    )  # fmt: skip
    ds = data.generate(spec)
    sparse = reference.sparse_refit(ds, reference.Features(variables, library(variables, 2)), {})
    assert reference.format_equation(sparse.table, variables) == "f = 0.500*x*y + 2.000*y**2"
    truth = reference.true_coefficients(spec.equation, spec.positive)
    assert reference.format_equation(truth, variables) == "f = 0.500*x*y + 2.000*y**2"
    names = [("x",), ("y",), ("y", "f"), ("y", "f", "y_")]
    assert [reference.target(inputs) for inputs in names] == ["y", "f", "y_", "y__"]


def test_noise_relative_to_y_is_srbench_s():
    variables = ("a",)
    spec = data.DatasetSpec("n", parse("10*a", variables), 20000, 0.2, 0.0, 1, 3.0, 5.0, 10, noise_relative=0.01,
                            variables=(data.Variable("a", low=1.0, high=5.0),))  # fmt: skip
    ds = data.generate(spec)
    clean = 10 * ds.X_train[:, 0]
    assert np.std(ds.y_train - clean) == pytest.approx(0.01 * np.sqrt(np.mean(clean**2)), rel=0.03)


def test_equations_over_declared_names_refuse_anything_else():
    with pytest.raises(EquationError, match="unknown name .*the variables are G, r"):
        parse("G/q", ("G", "r"))


def test_a_mistake_in_dataset_defaults_is_told_once_under_its_own_key(default_params_raw):
    table = {f"law{k}": {"equation": f"{k + 1}*m", "variables": {"m": {"low": 1, "high": 2}}} for k in range(50)}
    table["own"] = table["law0"] | {"noise_relative": -2}  # a dataset's own mistake stays its own
    for defaults, line in [
        ({"noise_relativ": 0.01}, "  dataset_defaults.noise_relativ = 0.01: Extra inputs are not permitted"),
        ({"n_samples": 5}, "  dataset_defaults.n_samples = 5: Input should be greater than or equal to 10"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate_params(params_with(default_params_raw, **table) | {"dataset_defaults": defaults})
        assert str(info.value).splitlines()[1:] == [line, "  datasets.own.noise_relative = -2: "
                                                    "Input should be greater than or equal to 0"]  # fmt: skip
    # Set by the dataset itself, the key is the dataset's, even where the defaults also give it.
    table["own"] = table["law0"] | {"n_samples": 3}
    with pytest.raises(
        ConfigError, match=r"\n  datasets.own.n_samples = 3: Input should be greater than or equal to 10$"
    ):
        validate_params(params_with(default_params_raw, **table) | {"dataset_defaults": {"n_samples": 2000}})
