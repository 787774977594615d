"""Datasets are deterministic in their seed and saved whole, with metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import ConfigError, validate_params
from pipeline.data import DataError, DatasetSpec, file_md5, generate, load, save
from pipeline.equations import parse


def spec(seed: int = 0, equation: str = "(2*x0 - 3)*(x1 + 1)", n_features: int = 10, **kw) -> DatasetSpec:
    base = dict(
        name="product",
        equation=parse(equation, n_features),
        n_samples=1000,
        val_fraction=0.2,
        noise=0.0,
        seed=seed,
        ood_low=3.0,
        ood_high=5.0,
        ood_samples=200,
    )
    return DatasetSpec(**(base | kw))


def _write(tmp_path, s: DatasetSpec, tag: str):
    data, meta = tmp_path / f"{tag}.npz", tmp_path / f"{tag}.json"
    save(generate(s), s, data, meta)
    return data, meta


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, _ = _write(tmp_path, spec(0), "a")
    b, _ = _write(tmp_path, spec(0), "b")
    c, _ = _write(tmp_path, spec(1), "c")
    assert a.read_bytes() == b.read_bytes()
    assert file_md5(a) == file_md5(b) != file_md5(c)


def test_split_shapes_and_targets(tmp_path):
    data, meta = _write(tmp_path, spec(0), "d")
    ds = load(data)
    assert ds.X_train.shape == (800, 10) and ds.X_val.shape == (200, 10) and ds.X_ood.shape == (200, 10)
    np.testing.assert_allclose(ds.y_train, (2 * ds.X_train[:, 0] - 3) * (ds.X_train[:, 1] + 1))
    assert ds.X_ood.min() >= 3.0 and ds.X_ood.max() <= 5.0
    assert abs(ds.X_train.mean()) < 0.05 and abs(ds.X_train.std() - 1) < 0.05
    info = json.loads(meta.read_text())
    assert info["equation"] == "(2*x0 - 3)*(x1 + 1)" and info["seed"] == 0
    assert info["shapes"] == {"train": [800, 10], "val": [200, 10], "ood": [200, 10]}


def test_noise_has_the_requested_std(tmp_path):
    ds = generate(spec(0, noise=0.5, n_samples=20000))
    residual = ds.y_train - (2 * ds.X_train[:, 0] - 3) * (ds.X_train[:, 1] + 1)
    assert abs(residual.std() - 0.5) < 0.01


def test_non_finite_targets_are_refused_and_nothing_written(tmp_path):
    with pytest.raises(DataError, match="non-finite values"):
        s = spec(0, equation="log(x0)")
        save(generate(s), s, tmp_path / "x.npz", tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("equation, value", [("x0 - x0", "0"), ("0*x1 + 2.5", "2.5"), ("x0/x0", "1")])
def test_a_constant_equation_is_refused_and_nothing_written(tmp_path, equation, value):
    with pytest.raises(DataError, match=f"is {value} on every training/validation input: a model has nothing to learn"):
        s = spec(0, equation=equation, noise=0.1)  # the noise would hide it: the check is on the equation's values
        save(generate(s), s, tmp_path / "x.npz", tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []
    generate(spec(0, equation="1e-30*x0"))  # small, and not constant: kept
    generate(spec(0, equation="1 + 1e-6*x0"))


@pytest.mark.parametrize("equation", ["log(x0)", "sqrt(x1 + 1)", "x0 - x0 + 3", "x0/(x1 - x1)"])
def test_validation_refuses_the_shorthand_as_generate_would_on_the_same_rows(default_params_raw, equation):
    # Validation runs before DVC removes any stage's outputs: it draws the rows generate will draw
    # and says what generate would say, to the count of bad values.
    with pytest.raises(DataError) as at_generate:
        generate(spec(0, equation=equation))
    said = str(at_generate.value).removeprefix("dataset 'product': ")
    dataset = {"equation": equation, "n_features": 10, "n_samples": 1000, "seed": 0}
    with pytest.raises(ConfigError) as at_validation:
        validate_params(default_params_raw | {"datasets": {"product": dataset}})
    assert f"datasets.product = {str(dataset)[:40]}" in str(at_validation.value)
    assert str(at_validation.value).endswith(f": {said}")
