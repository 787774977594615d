"""Optuna tuning through the one `fit`: diverging trials are pruned, never fatal; the best model comes back."""

from __future__ import annotations

import optuna
import pytest

from pipeline.data import DatasetSpec, generate
from pipeline.equations import parse
from pipeline.models import ModelSpec, all_crosses
from pipeline.train import Tensors, mse
from pipeline.tune import FloatSpace, IntSpace, SearchSpace, StudySettings, create_study, tune


@pytest.fixture
def product() -> Tensors:
    ds = generate(DatasetSpec("p", parse("(2*x0 - 3)*(x1 + 1)", 10), 500, 0.2, 0.0, 0, 3.0, 5.0, 10))
    return Tensors.from_arrays(ds.X_train, ds.y_train, ds.X_val, ds.y_val)


def test_diverging_trials_are_pruned_and_the_study_goes_on(product, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = create_study("product/cross", storage, StudySettings(n_trials=6, pruner="none"))
    # lr above ~0.1 makes SGD on 65 features diverge for part of the trials.
    space = SearchSpace(lr=FloatSpace(0.003, 3.0), epochs=IntSpace(10, 10))
    seen = []
    result = tune(study, ModelSpec("cross", crosses=all_crosses(10)), product, space, 6, on_trial=seen.append)
    states = [outcome.state for outcome in seen]
    assert len(seen) == 6 and "DIVERGED" in states and "COMPLETE" in states
    assert result.n_pruned == states.count("DIVERGED")
    assert result.best_value == pytest.approx(mse(result.model, product.X_val, product.y_val), rel=1e-6)
    assert result.best_value == min(o.history.final_val for o in seen if o.state == "COMPLETE")
    reloaded = optuna.load_study(study_name="product/cross", storage=storage)
    assert len(reloaded.trials) == 6


def test_pruner_stops_poor_trials_early(product, tmp_path):
    study = create_study(
        "s", f"sqlite:///{tmp_path / 'o.db'}", StudySettings(8, pruner="median", n_startup_trials=2, n_warmup_steps=2)
    )
    space = SearchSpace(lr=FloatSpace(1e-5, 0.05), epochs=IntSpace(20, 20))
    seen = []
    tune(study, ModelSpec("linear"), product, space, 8, on_trial=seen.append)
    pruned = [o for o in seen if o.state == "PRUNED"]
    assert pruned and all(len(o.history.val_loss) < 20 for o in pruned)


def test_rerun_replaces_the_study(product, tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    space = SearchSpace(lr=FloatSpace(0.01, 0.05), epochs=IntSpace(3, 3))
    values = []
    for _ in range(2):
        study = create_study("again", storage, StudySettings(2, sampler_seed=7))
        values.append(tune(study, ModelSpec("linear"), product, space, 2).best_value)
        assert len(study.trials) == 2
    assert values[0] == values[1]


def test_mlp_width_and_depth_are_searched(product, tmp_path):
    study = create_study("m", f"sqlite:///{tmp_path / 'o.db'}", StudySettings(3, pruner="none"))
    space = SearchSpace(lr=FloatSpace(1e-3, 1e-2), epochs=IntSpace(2, 2), optimizer=("adam",), width=(4, 8), depth=(1,))
    result = tune(study, ModelSpec("mlp", depth=2, width=32), product, space, 3)
    assert result.spec.width in (4, 8) and result.spec.depth == 1
    assert result.best_params["depth"] == 1 and result.best_params["optimizer"] == "adam"
    assert "width" in study.trials[0].params and "depth" not in study.trials[0].params
