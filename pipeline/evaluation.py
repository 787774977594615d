"""How good a trained model is, and what equation it holds.

- `recover`: a linear-family model made sparse, the equation read back from its trained weights
  (`reference.sparse_refit`); the MLP has none.
- `evaluate`: the scores of the final model against the noise floor (every family) and against the
  best its family can reach (the linear families' least-squares optimum), with its recovery of the
  true terms.
- `readable`: the files that say what a linear-family model learnt (coefficients, recovery, the
  equation as text).
- `slice_table`: the fitted function along x_i = t for every input, far beyond training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline import reference

if TYPE_CHECKING:
    from torch import nn

    from pipeline.data import Dataset
    from pipeline.equations import Equation
    from pipeline.models import ModelSpec

SLICE = np.linspace(-6.0, 6.0, 241)  # training inputs are N(0, 1): |t| > 3 is unseen territory


@dataclass
class Recovered:
    """A linear-family model made sparse: what training gave, what was kept and how it scores."""

    trained: dict[str, float]  # the trained model's coefficient of every feature
    sparse: reference.Sparse
    trained_val_mse: float


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X, dtype=np.float32))).double().numpy()


def recover(model: nn.Module, dataset: Dataset) -> Recovered | None:
    """For the linear families, replace the trained weights by the sparse equation read from them
    (`reference.sparse_refit`); the MLP is left as it is (None)."""
    if not hasattr(model, "coefficients"):
        return None
    trained = model.coefficients()
    trained_val_mse = float(np.mean((predict(model, dataset.X_val) - dataset.y_val) ** 2))
    sparse = reference.sparse_refit(
        dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, model.terms, trained
    )
    model.set_coefficients(sparse.table)
    return Recovered(trained, sparse, trained_val_mse)


def evaluate(
    dataset: Dataset, equation: Equation, model: nn.Module, spec: ModelSpec, recovered: Recovered | None = None
) -> dict:
    """Scores of the final model against the noise floor (every family) and against the best its
    family can reach (the linear families' least-squares optimum), with its recovery of the terms."""

    def mse(X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((predict(model, X) - y) ** 2))

    val_mse = mse(dataset.X_val, dataset.y_val)
    floor = reference.floor_mse(equation, dataset.X_val, dataset.y_val)
    metrics = {
        "val_mse": val_mse,
        "train_mse": mse(dataset.X_train, dataset.y_train),
        "ood_mse": mse(dataset.X_ood, dataset.y_ood),
        "floor_mse": floor,
        "excess": val_mse - floor,  # above what no model can beat
    }
    if recovered is None:  # the MLP: no closed form to compare with; the report sets it beside the others
        return metrics
    optimum = reference.optimum_mse(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, spec.terms)
    found = reference.recovery(recovered.sparse.table, reference.true_coefficients(equation))
    return metrics | {
        "optimum_mse": optimum,
        "gap": val_mse - optimum,
        # A ratio only means something against a non-zero optimum (not an exact-fit problem).
        "gap_ratio": (val_mse - optimum) / optimum if optimum > 1e-8 else None,
        "trained_val_mse": recovered.trained_val_mse,
        "n_terms": len(recovered.sparse.kept),
        "terms_found": len(found["found"]) if found else None,
        "terms_spurious": len(found["spurious"]) if found else None,
        "terms_missed": len(found["missed"]) if found else None,
        "coef_error": found.get("coef_error"),
    }


def readable(model: nn.Module, recovered: Recovered, equation: Equation) -> dict[str, str]:
    """The files that say what a linear-family model learnt, by name: its final coefficients (0
    where dropped), the trained ones, the recovery against the truth, and the equation."""
    coefficients = model.coefficients()
    truth = reference.true_coefficients(equation)
    found = reference.recovery(coefficients, truth)
    contents = {
        "coefficients.json": coefficients,  # the final model's, every feature (0 where dropped)
        "trained_coefficients.json": recovered.trained,  # as training left them, before the sparse refit
        "recovery.json": {
            "kept": recovered.sparse.kept,
            "threshold": recovered.sparse.threshold,
            "path": [{"terms": n, "val_mse": mse} for n, mse in recovered.sparse.path],
            **{k: v for k, v in found.items() if k != "coef_error"},
        },
    }
    files = {name: json.dumps(content, indent=2) + "\n" for name, content in contents.items()}
    return files | {"equation.txt": reference.format_equation(coefficients) + "\n"}


def slice_table(model: nn.Module, equation: Equation) -> dict[str, np.ndarray]:
    """t, the true y and the model's y along x_i = t for every input i."""
    X_slice = np.repeat(SLICE[:, None], equation.n_features, axis=1)
    return {"t": SLICE, "y_true": equation(X_slice), "y_pred": predict(model, X_slice)}
