"""Quantities in their own units (SI, say): the models train in float32, so what does not fit it is
refused at the edge with its key and value, left out of the automatic library with a word, or
dropped from the proposals; losses are brought back to y's units in float64; and Newton's law of
gravitation in SI units (m1 of a planet, 10^24 kg) is read back exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import data, evaluation, reference
from pipeline.config import ConfigError, validate_params
from pipeline.equations import MAX_EXPONENT
from pipeline.errors import InputError
from pipeline.models import ModelSpec
from pipeline.probe import FLOAT32_MAX
from pipeline.proposals import propose
from pipeline.reference import format_equation
from pipeline.stages import specs
from pipeline.stages import tune as tune_stage
from pipeline.terms import parts
from pipeline.train import Member, Tensors, TrainSettings, fit
from pipeline.tune import create_study, tune

SI_GRAVITY = {
    "equation": "G*m1*m2/r**2",
    "variables": {"G": {"low": 6.6e-11, "high": 6.7e-11}, "m1": {"low": 1e24, "high": 6e24},
                  "m2": {"low": 1e3, "high": 1e4}, "r": {"low": 6.4e6, "high": 7e6}},
}  # fmt: skip


def params_with(raw: dict, cross: dict | None = None, **datasets: dict):
    raw = raw | {"datasets": datasets}
    if cross is not None:
        raw["models"] = raw["models"] | {"cross": raw["models"]["cross"] | cross}
    return validate_params(raw)


@pytest.mark.parametrize(
    "variables, equation, key, message",
    [
        ({"x": {"low": 1, "high": math.inf}}, "x", "datasets.d.variables.x.high = inf", "finite number"),
        ({"x": {"low": math.nan, "high": 1}}, "x", "datasets.d.variables.x.low = nan", "finite number"),
        ({"x": {"low": 1, "high": 1e300}}, "x", "datasets.d.variables.x = ", "beyond float32's 3.4e+38"),
        ({"x": {"mean": 0, "std": 1e38}}, "x", "datasets.d.variables.x = ", "beyond float32's 3.4e+38"),
        ({"x": {"low": 100, "high": 200}}, "exp(x)", "datasets.d = ", "the equation reaches 7.2"),
    ],
)
def test_values_beyond_float32_are_refused_naming_the_key(default_params_raw, variables, equation, key, message):
    with pytest.raises(ConfigError) as info:
        params_with(default_params_raw, d={"equation": equation, "variables": variables})
    assert f"  {key}" in str(info.value) and message in str(info.value), str(info.value)


def test_the_automatic_library_leaves_out_only_what_float32_cannot_hold(default_params_raw):
    params = params_with(default_params_raw, si=SI_GRAVITY, shorthand={"equation": "x0", "n_features": 2})
    kept, left_out = specs.library_for(params, "si")
    assert list(left_out) == ["m1**2"] and left_out["m1**2"] == math.inf  # (5e24)**2 in float32
    assert len(kept) == 9 and "m1*m2" in kept  # the other nine pairs and squares: m1*m2 is 6e28
    assert tune_stage.facts(params, "si", "cross", left_out)["models.cross.left_out"] == "m1**2"  # MLflow's params
    nothing_left_out = specs.library_for(params, "shorthand")[1]
    assert "models.cross.left_out" not in tune_stage.facts(params, "shorthand", "cross", nothing_left_out)
    # The shorthand's N(0, 1) inputs: log of a negative input is NaN, so no log term survives.
    params = params_with(default_params_raw, {"functions": ["log", "sin"]}, s={"equation": "x0", "n_features": 2})
    kept, left_out = specs.library_for(params, "s")
    assert sorted(left_out) == ["log(x0)", "log(x1)"] and all(math.isnan(v) for v in left_out.values())
    assert "sin(x0)" in kept and "x0*x1" in kept


def test_a_listed_term_float32_cannot_hold_is_refused_naming_it(default_params_raw):
    params = params_with(default_params_raw, {"crosses": ["m1*m1*m2", "m1*m2"]}, si=SI_GRAVITY)
    with pytest.raises(ConfigError, match=r"models.cross.crosses: the term m1\*\*2\*m2 reaches inf .* dataset 'si'"):
        specs.library_for(params, "si")


def test_proposals_stay_within_what_equations_and_float32_hold(default_params_raw):
    # exp(x) on [40, 50] reads as x**45 there: beyond the largest exponent an equation may hold.
    x = np.linspace(40, 50, 800)[:, None]
    assert not any(abs(p) > MAX_EXPONENT for name in propose(x, np.exp(x[:, 0]), ("x",), ()) for p in
                   parts(name, ("x",))[0].values())  # fmt: skip
    # SI gravity: G**-1*m1*m2*r**-2 is 1e26 but its first product, G**-1*m1, is 9e34 and times m2 inf.
    spec = specs.dataset_spec(params_with(default_params_raw, si=SI_GRAVITY), "si")
    ds = data.generate(spec)
    names = propose(ds.X_train, ds.y_train, spec.equation.variables, ())
    assert "G*m1*m2*r**-2" in names and "G**-1*m1*m2*r**-2" not in names


@pytest.mark.parametrize("scale", [1e-30, 1e21])
def test_losses_come_back_in_y_s_units_however_small_or_large_y_is(scale):
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 2, (500, 1))
    y = scale * (X[:, 0] + 0.01 * rng.standard_normal(500))  # noise std 0.01 * scale: MSE 1e-4 * scale**2
    data = Tensors.from_arrays(X[:400], y[:400], X[400:], y[400:], standardize=True)
    trained = fit([Member(ModelSpec("linear"), TrainSettings(lr=0.05, epochs=40))], data)[0]
    assert trained.state == "COMPLETE"
    val = trained.history.final_val / scale**2  # was 0 (1e-30: squares underflow) or inf (1e21: overflow)
    assert 0.5e-4 < val < 2e-4, val
    assert trained.history.final_val == pytest.approx(evaluation.mse(trained.model, X[400:], y[400:]), rel=1e-3)


def test_features_float32_cannot_hold_stop_training_naming_them():
    X = np.array([[1e20], [2e20], [3e20], [4e20]])
    data = Tensors.from_arrays(X, X[:, 0], X, X[:, 0])
    member = Member(ModelSpec("cross", terms=("x0**2",)), TrainSettings(lr=0.01, epochs=1))
    with pytest.raises(InputError, match=r"features \['x0\*\*2'\] are not finite in float32"):
        fit([member], data)


G_WRITTEN_OUT = {"equation": "6.674e-11*m1*m2/r**2", "variables": {k: v for k, v in SI_GRAVITY["variables"].items()
                                                                   if k != "G"}}  # fmt: skip


# Kepler's third law for a planet of the sun: a**1.5*G**-0.5*M**0.5, a term the proposals build too, is
# 8e37 on these ranges: its float32 column sums past 3.4e38 (`models._moments`).
KEPLER = {"equation": "2*pi*sqrt(a**3/(G*M))", "variables": {"a": {"low": 5e10, "high": 5e11},
          "G": {"low": 6.67e-11, "high": 6.68e-11}, "M": {"low": 1e30, "high": 4e30}}}  # fmt: skip


@pytest.mark.parametrize("law, read_back", [(SI_GRAVITY, "y = 1.000*G*m1*m2*r**-2"),
                                            (G_WRITTEN_OUT, "y = 6.674e-11*m1*m2*r**-2"),
                                            (KEPLER, "y = 6.283*a**1.5*G**-0.5*M**-0.5")])  # fmt: skip
def test_newton_s_law_in_si_units_is_read_back_exactly(default_params_raw, law, read_back):
    params = params_with(default_params_raw, si=law)
    assert max(abs(bound) for v in law["variables"].values() for bound in v.values()) > FLOAT32_MAX**0.5
    spec = specs.dataset_spec(params, "si")
    ds = data.generate(spec)
    kept, left_out = specs.library_for(params, "si")
    job = tune_stage.tuning_job(params, "cross", "si", ds, kept)
    assert left_out and not set(left_out) & set(job.spec.terms)  # M**2, m1**2: inf in float32
    tensors = Tensors.from_arrays(ds.X_train, ds.y_train, ds.X_val, ds.y_val, standardize=job.standardize)
    result = tune(create_study("si", None, job.settings), job, tensors)
    recovered = evaluation.recover(result.model, ds, spec)
    assert recovered.exact and len(recovered.sparse.kept) == 1 and recovered.sparse.kept[0] in job.spec.terms
    assert format_equation(recovered.sparse.table, spec.equation.variables) == read_back


def test_the_class_optimum_holds_the_law_whatever_the_columns_scales(default_params_raw):
    # Kepler's library in SI units has columns from 1e-32 to 8e37: unscaled, lstsq dropped the law's
    # own term, and the report called 1.3e15 (y's variance is 2.8e15) the best a cross model can do.
    params = params_with(default_params_raw, si=KEPLER)
    ds = data.generate(specs.dataset_spec(params, "si"))
    spec = tune_stage.tuning_job(params, "cross", "si", ds, specs.library_for(params, "si")[0]).spec
    features = reference.Features(spec.inputs(ds.X_train.shape[1]), spec.terms)
    assert reference.optimum_mse(ds, features) < 1e-12 * np.var(ds.y_val)
