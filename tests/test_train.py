"""Models and the one training loop, checked against the known equations."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.data import DatasetSpec, generate
from pipeline.equations import parse
from pipeline.models import LinearModel, ModelSpec, all_crosses, build_model
from pipeline.reference import format_equation
from pipeline.train import Diverged, Tensors, TrainSettings, fit, init_seed


def tensors(equation: str, n_features: int, seed: int = 0) -> Tensors:
    ds = generate(DatasetSpec("t", parse(equation, n_features), 1000, 0.2, 0.0, seed, 3.0, 5.0, 10))
    return Tensors.from_arrays(ds.X_train, ds.y_train, ds.X_val, ds.y_val)


@pytest.mark.parametrize(
    "spec, n_params",
    [
        (ModelSpec("linear"), 11),
        (ModelSpec("cross", crosses=((0, 1),)), 12),
        (ModelSpec("cross", crosses=all_crosses(10)), 66),
        (ModelSpec("mlp", depth=2, width=16), 10 * 16 + 16 + 16 * 16 + 16 + 16 + 1),
    ],
)
def test_every_family_maps_a_batch_to_one_output_per_row(spec, n_params):
    model = build_model(spec, 10)
    assert model(torch.randn(7, 10)).shape == (7,)
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_auto_crosses_are_every_pair_and_square():
    assert all_crosses(3) == ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    names = LinearModel(3, all_crosses(3)).feature_names()
    assert names == ["x0", "x1", "x2", "x0**2", "x0*x1", "x0*x2", "x1**2", "x1*x2", "x2**2"]


def test_linear_model_recovers_the_linear_equation():
    init_seed(0)
    model = build_model(ModelSpec("linear"), 10)
    history = fit(model, tensors("2*x0 - 3*x1 + 1", 10), TrainSettings(lr=0.05, epochs=30, batch_size=32))
    coefficients = model.coefficients()
    assert coefficients["x0"] == pytest.approx(2, abs=0.01)
    assert coefficients["x1"] == pytest.approx(-3, abs=0.01)
    assert coefficients["1"] == pytest.approx(1, abs=0.01)
    assert all(abs(coefficients[f"x{i}"]) < 0.01 for i in range(2, 10))
    assert history.final_val < 1e-6
    assert len(history.train_loss) == len(history.val_loss) == 30


def test_cross_model_recovers_the_product_equation():
    init_seed(0)
    model = build_model(ModelSpec("cross", crosses=((0, 1),)), 10)
    fit(model, tensors("(2*x0 - 3)*(x1 + 1)", 10), TrainSettings(lr=0.05, epochs=50, batch_size=32))
    c = model.coefficients()
    expected = {"x0": 2, "x1": -3, "x0*x1": 2, "1": -3}
    for name, value in expected.items():
        assert c[name] == pytest.approx(value, abs=0.01)
    assert all(abs(c[f"x{i}"]) < 0.01 for i in range(2, 10))


def test_auto_crosses_name_exactly_the_true_terms_of_product():
    # 55 candidate crosses (every pair and square of 10 inputs): the fit leaves only the true ones
    # above the recovered-equation threshold (1e-3).
    init_seed(0)
    model = build_model(ModelSpec("cross", crosses=all_crosses(10)), 10)
    fit(model, tensors("(2*x0 - 3)*(x1 + 1)", 10), TrainSettings(lr=0.05, epochs=50, batch_size=32))
    assert format_equation(model.coefficients()) == "y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000"
    assert format_equation(model.coefficients(), digits=1) == "y = 2.0*x0 - 3.0*x1 + 2.0*x0*x1 - 3.0"


def test_training_is_reproducible_from_its_seed():
    data = tensors("x0**2", 1)
    runs = []
    for _ in range(2):
        init_seed(3)
        model = build_model(ModelSpec("mlp", depth=1, width=8), 1)
        runs.append(fit(model, data, TrainSettings(lr=0.01, epochs=5, optimizer="adam", seed=3)).val_loss)
    assert runs[0] == runs[1]


def test_divergence_raises_with_the_history_so_far():
    init_seed(0)
    model = build_model(ModelSpec("cross", crosses=all_crosses(10)), 10)
    with pytest.raises(Diverged) as info:
        fit(model, tensors("(2*x0 - 3)*(x1 + 1)", 10), TrainSettings(lr=5.0, epochs=50, batch_size=32))
    assert info.value.epoch < 50
    assert not math.isfinite(info.value.history.val_loss[-1])


def test_epoch_callback_sees_every_epoch_and_can_stop_training():
    seen = []

    def stop_at_three(epoch, train_loss, val_loss):
        seen.append((epoch, train_loss, val_loss))
        if epoch == 3:
            raise KeyboardInterrupt

    init_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            build_model(ModelSpec("linear"), 10),
            tensors("2*x0 - 3*x1 + 1", 10),
            TrainSettings(lr=0.05, epochs=30),
            on_epoch=stop_at_three,
        )
    assert [epoch for epoch, *_ in seen] == [0, 1, 2, 3]
    assert seen[3][2] < seen[0][2]
