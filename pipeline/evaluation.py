"""How good a trained network is, and what equation it holds.

- `recover`: for a linear-family network, the sparse equation read back from its trained weights
  (`reference.sparse_refit`) as a model of its own, and whether it is the true equation; the MLP
  has none.
- `evaluate`: the network's own scores against the noise floor (every family) and against the best
  its family can reach (the linear families' least-squares optimum); beside them, clearly named,
  the recovered equation's scores and its recovery of the true terms. The network's score is the
  family's headline: the experiment asks whether the network solves the equation.
- `readable`: the files that say what a linear-family network learnt (coefficients, recovery, the
  equation as text).
- `slice_table`: the fitted function along a line through the inputs, far beyond training.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline import reference

if TYPE_CHECKING:
    from torch import nn

    from pipeline.data import Dataset, DatasetSpec

SLICE = np.linspace(-6.0, 6.0, 241)  # training inputs are N(0, 1): |t| > 3 is unseen territory


@dataclass
class Recovered:
    """What a linear-family network reads back as: the sparse equation, as a model of its own."""

    trained: dict[str, float]  # the trained network's coefficient of every feature
    sparse: reference.Sparse
    model: nn.Module  # the network's architecture with the sparse equation's coefficients
    exact: bool  # equal to the true equation (`reference.is_exact`)


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X, dtype=np.float32))).double().numpy()


def mse(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, X) - y) ** 2)) if len(y) else float("nan")


def r2(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """1 - MSE / variance of y: SRBench's "accuracy solution" is R^2 > 0.999 on held-out rows."""
    return 1.0 - mse(model, X, y) / float(np.var(y)) if np.var(y) > 0 else float("nan")


def recover(model: nn.Module, dataset: Dataset, data_spec: DatasetSpec) -> Recovered | None:
    """For the linear families, the sparse equation read from the trained weights
    (`reference.sparse_refit`), and whether it is the true one; the MLP has none (None)."""
    if not hasattr(model, "coefficients"):
        return None
    trained = model.coefficients()
    features = reference.Features(model.variables, model.terms)
    sparse = reference.sparse_refit(dataset, features, trained)
    equation_model = copy.deepcopy(model)
    equation_model.set_coefficients(sparse.table)
    truth = reference.true_coefficients(data_spec.equation, data_spec.positive)
    return Recovered(trained, sparse, equation_model, reference.is_exact(sparse, truth))


def evaluate(dataset: Dataset, data_spec: DatasetSpec, model: nn.Module, recovered: Recovered | None = None) -> dict:
    """Scores of the trained network against the noise floor (every family) and against the best
    its family can reach (the linear families' least-squares optimum); for the linear families,
    the same scores of the equation read back from it, and its recovery of the true terms."""
    val_mse = mse(model, dataset.X_val, dataset.y_val)
    floor = reference.floor_mse(data_spec.equation, dataset.X_val, dataset.y_val)
    metrics = {
        "val_mse": val_mse,
        "train_mse": mse(model, dataset.X_train, dataset.y_train),
        "ood_mse": mse(model, dataset.X_ood, dataset.y_ood),
        "floor_mse": floor,
        "excess": val_mse - floor,  # above what no model can beat
        "r2": r2(model, dataset.X_val, dataset.y_val),
    }
    if recovered is None:  # the MLP: no closed form to compare with; the report sets it beside the others
        return metrics
    features = reference.Features(model.variables, model.terms)
    optimum = reference.optimum_mse(dataset, features)
    truth = reference.true_coefficients(data_spec.equation, data_spec.positive)
    found = reference.recovery(recovered.sparse.table, truth, model.variables)
    return metrics | {
        "optimum_mse": optimum,
        "gap": val_mse - optimum,
        # A ratio only means something against a non-zero optimum (not an exact-fit problem).
        "gap_ratio": (val_mse - optimum) / optimum if optimum > 1e-8 else None,
        "recovered_val_mse": mse(recovered.model, dataset.X_val, dataset.y_val),
        "recovered_ood_mse": mse(recovered.model, dataset.X_ood, dataset.y_ood),
        "recovered_exact": float(recovered.exact),
        "n_terms": len(recovered.sparse.kept),
        "terms_found": len(found["found"]) if found else None,
        "terms_spurious": len(found["spurious"]) if found else None,
        "terms_missed": len(found["missed"]) if found else None,
        "coef_error": found.get("coef_error"),
    }


def readable(recovered: Recovered, data_spec: DatasetSpec) -> dict[str, str]:
    """The files that say what a linear-family network learnt, by name: the recovered equation's
    coefficients (0 where dropped), the trained ones, the recovery against the truth, the equation."""
    coefficients = recovered.model.coefficients()
    variables = recovered.model.variables
    truth = reference.true_coefficients(data_spec.equation, data_spec.positive)
    found = reference.recovery(coefficients, truth, variables)
    contents = {
        "coefficients.json": coefficients,  # the recovered equation's, every feature (0 where dropped)
        "trained_coefficients.json": recovered.trained,  # as training left them: the network's
        "recovery.json": {
            "kept": recovered.sparse.kept,
            "exact": recovered.exact,
            "standard_errors": recovered.sparse.errors,
            "threshold": recovered.sparse.threshold,
            "path": [{"terms": n, "val_mse": mse} for n, mse in recovered.sparse.path],
            **{k: v for k, v in found.items() if k != "coef_error"},
        },
    }
    files = {name: json.dumps(content, indent=2) + "\n" for name, content in contents.items()}
    return files | {"equation.txt": reference.format_equation(coefficients, variables) + "\n"}


def slice_table(model: nn.Module, data_spec: DatasetSpec) -> dict[str, np.ndarray]:
    """The fit along a line through the inputs, far beyond training: for the shorthand, every
    x_i = t for t in [-6, 6]; for declared variables, each at the same fraction t of its own
    range (t = 0 and 1 its training range's ends, up to the end of its out-of-range interval)."""
    equation = data_spec.equation
    if not data_spec.variables:
        X_slice = np.repeat(SLICE[:, None], equation.n_features, axis=1)
        return {"t": SLICE, "y_true": equation(X_slice), "y_pred": predict(model, X_slice)}
    t = np.linspace(0.0, slice_end(data_spec), 241)
    X_slice = np.column_stack([variable.at(t) for variable in data_spec.variables])
    return {"t": t, "y_true": equation(X_slice), "y_pred": predict(model, X_slice)}


def slice_end(data_spec: DatasetSpec) -> float:
    """How far the slice of declared variables goes: to the furthest end of their out-of-range intervals."""
    ends = []
    for v in data_spec.variables:
        (low, high), end = v.training_range, v.ood_range[1]
        ends.append(np.log(end / low) / np.log(high / low) if v.dist == "loguniform" else (end - low) / (high - low))
    return float(max(ends))


def slice_bands(data_spec: DatasetSpec) -> tuple[tuple[float, float], tuple[float, float], str]:
    """Where the slice is inside the training inputs, where out of range (in its own t), and what t is."""
    if not data_spec.variables:
        return (-2.0, 2.0), (data_spec.ood_low, data_spec.ood_high), "t (every input x_i = t)"
    names = ", ".join(v.name for v in data_spec.variables)
    return (0.0, 1.0), (1.0, slice_end(data_spec)), f"t: each of {names} at fraction t of its range"
