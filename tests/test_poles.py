"""An equation that divides by a quantity reaching 0 where its inputs are drawn (Coulomb's 1/r**2 with r
from 0, 1/(x - y) on overlapping ranges, tan past pi/2, x0/x1 of the shorthand's N(0, 1) inputs) is
refused before any work, naming the divisor and a point next to the pole; a removable zero
(sin(u)/u, x*y/y) and a divisor that keeps away from 0 are kept."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import yaml
from conftest import ROOT

from pipeline import data, probe
from pipeline.config import ConfigError, VariableConfig, validate_params
from pipeline.equations import parse
from pipeline.stages import specs


def uniform(**ranges: tuple[float, float]) -> dict:
    return {name: {"low": low, "high": high} for name, (low, high) in ranges.items()}


POLES = [
    ("q1*q2/(4*pi*epsilon*r**2)", uniform(q1=(1, 5), q2=(1, 5), epsilon=(1, 5), r=(0, 10)), "r", {"r": 0.0}),
    ("1/(x - y)", uniform(x=(1, 5), y=(1, 5)), "x - y", {}),
    ("tan(u)", uniform(u=(0, 3)), "cos(u)", {"u": np.pi / 2}),
    ("m/v**2", {"m": {"low": 1, "high": 2}, "v": {"mean": 0, "std": 1}}, "v", {"v": 0.0}),
    ("1/(x**2 - 2)", uniform(x=(0, 3)), "x**2 - 2", {"x": np.sqrt(2)}),
    ("a*abs(b - 3)**-1.5", uniform(a=(1, 2), b=(2, 4)), "b - 3", {"b": 3.0}),
    # one sign, 0 at one point only: found by descending from the probe points nearest it
    ("q/(x**2 + y**2)", uniform(q=(1, 2), x=(-1, 1), y=(-1, 1)), "x**2 + y**2", {"x": 0.0, "y": 0.0}),
    ("1/((x - 1)**2 + (y - 0.3)**2)", uniform(x=(-2, 2), y=(-2, 2)), "(x - 1)**2 + (y - 0.3)**2", {"x": 1.0, "y": 0.3}),
]  # fmt: skip

KEPT = [
    ("sin(u)/u", uniform(u=(-5, 5))),  # removable: sin(u)/u is 1 at u = 0
    ("x*y/y", uniform(x=(1, 2), y=(-1, 1))),
    ("(x**2 - y**2)/(x - y)", uniform(x=(1, 5), y=(1, 5))),  # x + y: the numerator is 0 where the divisor is
    ("1/(x - y)", uniform(x=(1, 2), y=(3, 5))),  # x - y stays below -1
    ("1/(u**2 + 1)", uniform(u=(-5, 5))),
    ("q1*q2/(4*pi*epsilon*r**2)", uniform(q1=(1, 5), q2=(1, 5), epsilon=(1, 5), r=(0.1, 10))),
    ("tan(u)", uniform(u=(-1.5, 1.5))),
    ("1/(x**2 + y**2 + 0.01)", uniform(x=(-1, 1), y=(-1, 1))),  # comes close to 0, never reaches it
    ("1/(x**2 + y**2)", uniform(x=(0.5, 1), y=(0.5, 1))),
]  # fmt: skip


@pytest.mark.parametrize("equation, variables, divisor, at", POLES)
def test_a_pole_on_the_declared_ranges_is_refused_naming_the_divisor_and_where(
    default_params_raw, equation, variables, divisor, at
):
    raw = default_params_raw | {"datasets": {"law": {"equation": equation, "variables": variables}}}
    with pytest.raises(ConfigError) as info:
        validate_params(raw)
    text = str(info.value)
    assert "  datasets.law = " in text
    assert f"the equation divides by {divisor}, which reaches 0 on the declared ranges" in text
    assert f"choose ranges on which {divisor} stays away from 0" in text, text
    ranges = [VariableConfig(**variable).span for variable in variables.values()]
    pole = probe.pole(parse(equation, tuple(variables)), probe.points(ranges), ranges)
    assert pole is not None and pole.divisor == divisor and pole.size > probe.POLE_RATIO
    assert set(pole.at) == parse(divisor, tuple(variables)).used  # the divisor's own inputs, not every input
    for name, value in at.items():  # the point given is next to the pole
        assert pole.at[name] == pytest.approx(value, abs=1e-9)
    if divisor == "x - y":
        assert pole.at["x"] == pytest.approx(pole.at["y"], abs=1e-9)


@pytest.mark.parametrize("equation, variables", KEPT)
def test_a_removable_zero_or_a_divisor_away_from_0_is_kept(default_params_raw, equation, variables):
    raw = default_params_raw | {"datasets": {"law": {"equation": equation, "variables": variables}}}
    assert validate_params(raw).datasets["law"].equation == equation


def test_the_feynman_table_has_no_pole_on_its_ranges():
    raw = yaml.safe_load((ROOT / "examples/feynman/params.yaml").read_text())
    assert len(validate_params(raw).datasets) == 100


def test_the_shorthand_s_pole_is_refused_at_validation_and_at_generate_and_nothing_written(
    default_params_raw, tmp_path
):
    # At validation (before DVC removes any stage's outputs), on the rows generate will draw.
    ratio = {"ratio": {"equation": "x0/x1", "n_features": 2}}
    with pytest.raises(ConfigError) as info:
        validate_params(default_params_raw | {"datasets": ratio})
    assert "datasets.ratio = {'equation': 'x0/x1', 'n_features': 2}: the equation divides by x1, which reaches 0 " \
           "where the inputs are drawn, N(0, 1)" in str(info.value)  # fmt: skip
    assert "declare the variables with ranges that keep x1 away from 0" in str(info.value)
    # And at generate, for a spec that did not come through validation.
    params = validate_params(default_params_raw | {"datasets": {"sinc": {"equation": "sin(x0)/x0", "n_features": 1}}})
    spec = dataclasses.replace(specs.dataset_spec(params, "sinc"), name="ratio", equation=parse("x0/x1", 2))
    with pytest.raises(data.DataError) as info:
        data.save(data.generate(spec), spec, tmp_path / "x.npz", tmp_path / "x.json")
    assert "dataset 'ratio': the equation divides by x1, which reaches 0 where the inputs are drawn, N(0, 1)" in str(
        info.value
    ) and "declare the variables with ranges that keep x1 away from 0" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    sinc = data.generate(specs.dataset_spec(params, "sinc"))
    assert np.isfinite(sinc.y_train).all() and np.abs(sinc.y_train).max() <= 1.0


def test_five_hundred_inputs_are_probed_in_bounded_memory(default_params_raw):
    # The box's faces are probed only for the inputs a divisor uses, a few rows each: every face of
    # 500 inputs probed with 1,024 rows would be a million rows of 500 columns (4 GB).
    names = [a + b for a in "abcdefghijklmnopqrst" for b in "ABCDEFGHIJKLMNOPQRSTUVWXY"]  # 500, short enough
    variables = {name: {"low": 0, "high": 1} for name in names} | {names[-1]: {"low": -1, "high": 1}}
    groups = ["(" + "+".join(names[start : start + 25]) + ")" for start in range(0, 475, 25)]  # nested 45 deep
    equation = "+".join(groups) + "+" + "+".join(names[475:-1]) + f"+1/{names[-1]}"
    raw = default_params_raw | {"datasets": {"wide": {"equation": equation, "variables": variables}}}
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=f"the equation divides by {names[-1]}, which reaches 0"):
            validate_params(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400e6  # the probe points themselves: 16,384 rows of 500 inputs are 66 MB
