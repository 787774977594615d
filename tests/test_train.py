"""Models and the one training loop, checked against the known equations and against itself:
a member trained in a stack follows the trajectory it follows alone."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.data import DatasetSpec, generate
from pipeline.equations import parse
from pipeline.errors import InputError
from pipeline.models import LinearModel, ModelSpec, Stack, build_model, features
from pipeline.reference import Features, Rows, format_equation, sparse_refit
from pipeline.terms import library
from pipeline.train import Member, Tensors, TrainSettings, fit, stack_groups


def tensors(equation: str, n_features: int, seed: int = 0, n_samples: int = 1000) -> Tensors:
    ds = generate(DatasetSpec("t", parse(equation, n_features), n_samples, 0.2, 0.0, seed, 3.0, 5.0, 10))
    return Tensors.from_arrays(ds.X_train, ds.y_train, ds.X_val, ds.y_val)


def fit_one(spec: ModelSpec, data: Tensors, **settings):
    """A single model: a stack of one."""
    return fit([Member(spec, TrainSettings(**settings))], data)[0]


def assert_same_trajectory(stacked, alone):
    """Per-epoch losses equal within float32 tolerance (the stack's matrix products sum in another order)."""
    assert stacked.state == alone.state
    for key in ("train_loss", "val_loss"):
        a, b = getattr(stacked.history, key), getattr(alone.history, key)
        assert len(a) == len(b)
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize(
    "spec, n_params",
    [
        (ModelSpec("linear"), 11),
        (ModelSpec("cross", terms=("x0*x1",)), 12),
        (ModelSpec("cross", terms=library(10)), 66),
        (ModelSpec("mlp", depth=2, width=16), 10 * 16 + 16 + 16 * 16 + 16 + 16 + 1),
    ],
)
def test_every_family_maps_a_batch_to_one_output_per_row(spec, n_params):
    model = build_model(spec, 10)
    assert model(torch.randn(7, 10)).shape == (7,)
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_the_default_library_is_every_pair_and_square():
    names = LinearModel(3, library(3)).feature_names()
    assert names == ["x0", "x1", "x2", "x0**2", "x0*x1", "x0*x2", "x1**2", "x1*x2", "x2**2"]


def test_higher_degrees_and_functions_extend_the_library_and_evaluate_as_named():
    names = library(2, degree=3, functions=("sin",))
    assert names == ("x0**2", "x0*x1", "x1**2", "x0**3", "x0**2*x1", "x0*x1**2", "x1**3", "sin(x0)", "sin(x1)")
    assert len(library(10, degree=3)) == 55 + 220
    x = torch.tensor([[2.0, -0.5], [0.3, 1.5]])
    columns = LinearModel(2, names).linear.in_features, features(x, names)
    expected = [[2, -0.5, 4, -1, 0.25, 8, -2, 0.5, -0.125, math.sin(2), math.sin(-0.5)],
                [0.3, 1.5, 0.09, 0.45, 2.25, 0.027, 0.135, 0.675, 3.375, math.sin(0.3), math.sin(1.5)]]  # fmt: skip
    assert columns[0] == 11
    torch.testing.assert_close(columns[1], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_linear_model_recovers_the_linear_equation():
    trained = fit_one(ModelSpec("linear"), tensors("2*x0 - 3*x1 + 1", 10), lr=0.05, epochs=30, batch_size=32)
    coefficients = trained.model.coefficients()
    assert coefficients["x0"] == pytest.approx(2, abs=0.01)
    assert coefficients["x1"] == pytest.approx(-3, abs=0.01)
    assert coefficients["1"] == pytest.approx(1, abs=0.01)
    assert all(abs(coefficients[f"x{i}"]) < 0.01 for i in range(2, 10))
    assert trained.history.final_val < 1e-6 and trained.state == "COMPLETE"
    assert len(trained.history.train_loss) == len(trained.history.val_loss) == 30


def test_cross_model_recovers_the_product_equation():
    spec = ModelSpec("cross", terms=("x0*x1",))
    c = fit_one(spec, tensors("(2*x0 - 3)*(x1 + 1)", 10), lr=0.05, epochs=50, batch_size=32).model.coefficients()
    expected = {"x0": 2, "x1": -3, "x0*x1": 2, "1": -3}
    for name, value in expected.items():
        assert c[name] == pytest.approx(value, abs=0.01)
    assert all(abs(c[f"x{i}"]) < 0.01 for i in range(2, 10))


def test_the_trained_weights_read_back_as_exactly_the_true_terms_of_product():
    # 55 candidate terms (every pair and square of 10 inputs): the sparse reading keeps the true ones.
    data = tensors("(2*x0 - 3)*(x1 + 1)", 10)
    spec = ModelSpec("cross", terms=library(10))
    model = fit_one(spec, data, lr=0.05, epochs=50, batch_size=32).model
    arrays = [t.double().numpy() for t in (data.X_train, data.y_train, data.X_val, data.y_val)]
    sparse = sparse_refit(Rows(*arrays), Features(model.variables, spec.terms), model.coefficients())
    assert sparse.kept == ["x0", "x1", "x0*x1", "1"]
    assert format_equation(sparse.table) == "y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000"
    assert format_equation(sparse.table, digits=1) == "y = 2.0*x0 - 3.0*x1 + 2.0*x0*x1 - 3.0"
    assert sparse.val_mse < 1e-12  # float32 data


def test_mlp_learns_the_square_and_its_exported_model_predicts_what_it_scored():
    data = tensors("x0**2", 1)
    trained = fit_one(ModelSpec("mlp", depth=2, width=32), data, lr=0.01, epochs=60, optimizer="adam", seed=1)
    assert trained.history.final_val < 0.01
    with torch.no_grad():
        val = torch.mean((trained.model(data.X_val) - data.y_val) ** 2).item()
    assert val == pytest.approx(trained.history.final_val, rel=1e-5)


def test_training_is_reproducible_from_its_seed():
    data = tensors("x0**2", 1)
    runs = [
        fit_one(ModelSpec("mlp", depth=1, width=8), data, lr=0.01, epochs=5, optimizer="adam", seed=3).history.val_loss
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    other = fit_one(ModelSpec("mlp", depth=1, width=8), data, lr=0.01, epochs=5, optimizer="adam", seed=4)
    assert other.history.val_loss != runs[0]


def test_divergence_ends_the_member_with_the_history_so_far():
    spec = ModelSpec("cross", terms=library(10))
    trained = fit_one(spec, tensors("(2*x0 - 3)*(x1 + 1)", 10), lr=5.0, epochs=50, batch_size=32)
    assert trained.state == "DIVERGED"
    assert len(trained.history.val_loss) < 50
    assert not math.isfinite(trained.history.val_loss[-1])


def test_epoch_callback_sees_every_epoch_and_can_stop_a_member():
    seen = []

    def stop_at_three(member, epoch, train_loss, val_loss):
        seen.append((member, epoch, val_loss))
        return epoch == 3

    members = [Member(ModelSpec("linear"), TrainSettings(lr=0.05, epochs=30))]
    (trained,) = fit(members, tensors("2*x0 - 3*x1 + 1", 10), on_epoch=stop_at_three)
    assert [epoch for _, epoch, _ in seen] == [0, 1, 2, 3] and {member for member, _, _ in seen} == {0}
    assert seen[3][2] < seen[0][2]
    assert trained.state == "PRUNED" and len(trained.history.val_loss) == 4


# Members that differ in everything a stack allows: learning rate, epochs, seed, and for the MLP
# width and depth too (padding).
STACKS = {
    "linear": [
        Member(ModelSpec("linear"), TrainSettings(lr=lr, epochs=epochs, batch_size=32, seed=seed))
        for lr, epochs, seed in [(0.05, 12, 0), (0.01, 7, 1), (0.1, 10, 2), (0.03, 12, 3)]
    ],
    "cross": [
        Member(ModelSpec("cross", terms=library(10)), TrainSettings(lr=lr, epochs=epochs, batch_size=16, seed=s))
        for lr, epochs, s in [(0.02, 9, 0), (0.005, 12, 1), (0.04, 6, 2)]
    ],
    "mlp": [
        Member(ModelSpec("mlp", depth=d, width=w), TrainSettings(lr, e, batch_size=32, optimizer="adam", seed=s))
        for d, w, lr, e, s in [(2, 16, 0.003, 8, 0), (3, 32, 0.01, 5, 1), (2, 24, 0.001, 10, 2)]
    ],
}


@pytest.mark.parametrize("family", sorted(STACKS))
def test_a_member_trained_in_a_stack_follows_its_trajectory_alone(family):
    data = tensors("(2*x0 - 3)*(x1 + 1)", 10, n_samples=400)
    members = STACKS[family]
    assert len(stack_groups(members)) == 1  # they really share one stack
    stacked = fit(members, data)
    for member, result in zip(members, stacked, strict=True):
        alone = fit([member], data)[0]
        assert_same_trajectory(result, alone)
        assert len(result.history.val_loss) == member.settings.epochs  # its own epochs, not the stack's
        for a, b in zip(result.model.parameters(), alone.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_diverging_member_changes_no_other_member():
    data = tensors("(2*x0 - 3)*(x1 + 1)", 10, n_samples=400)
    sane = STACKS["cross"]
    wild = Member(sane[0].spec, TrainSettings(lr=5.0, epochs=12, batch_size=16, seed=9))
    together = fit([wild, *sane], data)
    assert together[0].state == "DIVERGED"
    for member, result in zip(sane, together[1:], strict=True):
        assert_same_trajectory(result, fit([member], data)[0])


def test_a_pruned_member_changes_no_other_member():
    data = tensors("x0**2", 1, n_samples=400)
    members = [Member(m.spec, m.settings) for m in STACKS["mlp"]]

    def prune_first_at_two(member, epoch, train_loss, val_loss):
        return member == 0 and epoch == 2

    pruned = fit(members, data, on_epoch=prune_first_at_two)
    assert pruned[0].state == "PRUNED" and len(pruned[0].history.val_loss) == 3
    unpruned = fit(members, data)
    for with_pruning, without in zip(pruned[1:], unpruned[1:], strict=True):
        assert_same_trajectory(with_pruning, without)
    assert pruned[0].history.val_loss == pytest.approx(unpruned[0].history.val_loss[:3], rel=2e-4)


def test_members_stack_by_family_features_optimizer_and_batch_size():
    linear = [Member(ModelSpec("linear"), TrainSettings(0.01, 5, batch_size=b)) for b in (16, 32, 16)]
    small = ModelSpec("mlp", depth=2, width=8)
    mlp = [Member(small, TrainSettings(0.01, 5, batch_size=b, optimizer="adam")) for b in (16, 32, 16)]
    wide = [Member(ModelSpec("mlp", depth=3, width=32), TrainSettings(0.02, 9, batch_size=16, optimizer="adam"))]
    adam = [Member(ModelSpec("linear"), TrainSettings(0.01, 5, optimizer="adam"))]
    assert stack_groups(linear + mlp + wide + adam) == [[0, 2], [1], [3, 5, 6], [4], [7]]


def test_padding_leaves_a_narrow_shallow_member_exactly_itself():
    # Width 8, depth 1 inside a stack of width 32, depth 3: zero units and identity layers.
    specs = [ModelSpec("mlp", depth=1, width=8), ModelSpec("mlp", depth=3, width=32)]
    stack = Stack(specs, 4, [torch.Generator().manual_seed(s) for s in (0, 1)])
    x = torch.randn(1, 50, 4)
    padded = Stack.forward(stack.layers(stack.flat[:1]), x)[0]
    with torch.no_grad():
        own = stack.export(0)(x[0])
    torch.testing.assert_close(padded, own)
    assert [p.shape for p in stack.export(0).parameters()] == [(8, 4), (8,), (1, 8), (1,)]
    assert stack.trainable is not None and stack.trainable[0].sum() == 4 * 8 + 8 + 8 + 1


@pytest.mark.parametrize("depths, widths", [((0, 0), (0, 0)), ((2, 3), (8, 16))])
def test_the_written_out_backward_equals_autograd(depths, widths):
    family = "mlp" if depths[0] else "cross"
    specs = [
        ModelSpec(family, terms=("x0*x1",) if family == "cross" else (), depth=d, width=w)
        for d, w in zip(depths, widths, strict=True)
    ]
    stack = Stack(specs, 3, [torch.Generator().manual_seed(s) for s in range(2)])
    x, d_prediction = stack.features(torch.randn(2, 7, 3)), torch.randn(2, 7)
    grad, inputs = torch.empty_like(stack.flat), []
    layers = stack.layers(stack.flat)
    Stack.forward(layers, x, inputs)
    Stack.backward(layers, inputs, d_prediction, grad)
    flat = stack.flat.clone().requires_grad_(True)
    (Stack.forward(stack.layers(flat), x) * d_prediction).sum().backward()
    torch.testing.assert_close(grad, flat.grad)


def test_a_device_this_machine_cannot_use_is_refused_naming_the_key():
    # No machine has 100 GPUs: refused alike by a CPU-only torch and by one with CUDA.
    x, y = torch.zeros(4, 1).numpy(), torch.zeros(4).numpy()
    with pytest.raises(InputError, match=r"training.device = 'cuda:99': not usable on this machine \(.+CUDA device"):
        Tensors.from_arrays(x, y, x, y, device="cuda:99")
    assert Tensors.from_arrays(x, y, x, y, device="cpu").X_train.device.type == "cpu"
