"""The honest answer beyond the default equations: four problems a user would try, each by editing
params.yaml alone, run through the real stages (`python -m pipeline generate / tune / compare`)
with a shrunk tuning, their numbers and the report's sentences asserted.
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import sh

pytestmark = pytest.mark.slow

PROBLEMS = {
    # name: (dataset entry, models.cross settings)
    "sparse": ({"equation": "1.5*x2 - 0.7*x5 + 2", "n_features": 15, "noise": 0.05, "seed": 3}, {}),
    "triple": ({"equation": "x0*x1*x3 - x2", "n_features": 5, "seed": 4}, {"degree": 3}),
    "triple_deg2": ({"equation": "x0*x1*x3 - x2", "n_features": 5, "seed": 4}, {"degree": 2}),
    "sine": ({"equation": "sin(x1) + 0.5*x0*x2", "n_features": 4, "seed": 5}, {"functions": ["sin"]}),
    "small": ({"equation": "2*x0 - 3*x1 + 1", "n_features": 10, "n_samples": 60, "seed": 6}, {}),
}


def problem_params(raw: dict, name: str) -> dict:
    """The default params.yaml with one dataset edited in, and a shrunk tuning (the linear families
    keep their default search space; the MLP is only there for the report)."""
    dataset, cross = PROBLEMS[name]
    params = copy.deepcopy(raw)
    params["datasets"] = {name: dataset}
    params["models"]["cross"].update(cross)
    for family in ("linear", "cross"):
        params["tuning"][family].update(n_trials=8, trials_per_batch=8)
    mlp = params["tuning"]["mlp"]
    mlp.update(n_trials=2, trials_per_batch=2)
    mlp["space"].update(epochs={"low": 20, "high": 30}, width=[16], depth=[2])
    return params


@pytest.fixture(scope="module")
def solved(tmp_path_factory, default_params_raw):
    """Each problem in its own folder: generate, tune (three families), compare. The folders share
    nothing, so two run at once: each mostly one process at a time, and the machine has two cores."""
    roots = {name: tmp_path_factory.mktemp(name) for name in PROBLEMS}

    def solve(name: str) -> None:
        root = roots[name]
        (root / "params.yaml").write_text(yaml.safe_dump(problem_params(default_params_raw, name)))
        data = ["--dataset", name, "--out", f"data/{name}.npz", "--meta", f"data/{name}.json"]
        sh(root, "python", "-m", "pipeline", "generate", *data)
        outs = ["--models-dir", "models", "--metrics-dir", "metrics", "--plots-dir", "plots"]
        sh(root, "python", "-m", "pipeline", "tune", "--dataset", name, "--data", f"data/{name}.npz", *outs)
        sh(root, "python", "-m", "pipeline", "compare", *outs, "--out", "reports")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(solve, PROBLEMS))  # list(): the first failure fails the fixture
    return roots


def scores(root: Path, name: str, family: str) -> tuple[dict, dict | None, str | None]:
    metrics = json.loads((root / "metrics" / f"{name}-{family}.json").read_text())
    model = root / "models" / f"{name}-{family}"
    recovery = json.loads((model / "recovery.json").read_text()) if (model / "recovery.json").exists() else None
    equation = (model / "equation.txt").read_text().strip() if (model / "equation.txt").exists() else None
    return metrics, recovery, equation


def verdict(root: Path, name: str) -> str:
    summary = (root / "reports" / "summary.md").read_text()
    return next(line for line in summary.splitlines() if line.startswith(f"- **{name}**"))


def test_a_noisy_sparse_equation_is_recovered_term_for_term_at_the_noise_floor(solved):
    for family in ("linear", "cross"):
        metrics, recovery, equation = scores(solved["sparse"], "sparse", family)
        assert recovery["kept"] == ["x2", "x5", "1"] and recovery["spurious"] == [] and recovery["missed"] == []
        coefficients = json.loads((solved["sparse"] / "models" / f"sparse-{family}" / "coefficients.json").read_text())
        assert abs(coefficients["x2"] - 1.5) < 0.02 and abs(coefficients["x5"] + 0.7) < 0.02
        assert abs(coefficients["1"] - 2) < 0.02 and metrics["coef_error"] < 0.02
        assert sum(value != 0 for value in coefficients.values()) == 3  # the full table keeps every term, at 0
        assert 0.0015 < metrics["floor_mse"] < 0.0035  # about 0.05**2
        # The equation read back sits at the floor; the network itself, a little above it.
        floor = metrics["floor_mse"]
        assert metrics["recovered_val_mse"] <= 1.1 * floor and metrics["val_mse"] < 1.5 * floor
        assert (metrics["terms_found"], metrics["terms_spurious"], metrics["terms_missed"]) == (3, 0, 0)
    sentence = verdict(solved["sparse"], "sparse")
    assert "the noise floor is 0.00" in sentence and "read back from `linear`'s weights is the true one" in sentence


def test_a_three_way_product_needs_degree_three_and_the_report_says_so(solved):
    metrics, recovery, equation = scores(solved["triple"], "triple", "cross")
    assert metrics["recovered_val_mse"] <= 1e-12 and metrics["recovered_exact"] == 1.0
    assert metrics["val_mse"] < 1e-3 and metrics["terms_spurious"] == 0 and metrics["terms_missed"] == 0
    assert equation == "y = -1.000*x2 + 1.000*x0*x1*x3"
    assert "read back from `cross`'s weights is the true one, exactly" in verdict(solved["triple"], "triple")

    metrics, recovery, _ = scores(solved["triple_deg2"], "triple_deg2", "cross")
    assert metrics["val_mse"] > 0.1 and recovery["outside"] == ["x0*x1*x3"]
    sentence = verdict(solved["triple_deg2"], "triple_deg2")
    assert "no family's network reaches the floor" in sentence
    assert "`cross` (val_mse" in sentence and "cannot express `x0*x1*x3`" in sentence
    assert "`dvc exp run -S models.cross.degree=3`" in sentence


def test_a_sine_plus_a_product_is_recovered_with_sin_in_the_library(solved):
    metrics, recovery, equation = scores(solved["sine"], "sine", "cross")
    assert equation == "y = 0.500*x0*x2 + 1.000*sin(x1)"
    assert metrics["recovered_val_mse"] <= 1e-12 and metrics["coef_error"] < 1e-6 and metrics["val_mse"] < 1e-4
    assert recovery["found"] == ["x0*x2", "sin(x1)"] and recovery["spurious"] == []
    linear, recovery, _ = scores(solved["sine"], "sine", "linear")
    assert recovery["outside"] == ["x0*x2", "sin(x1)"]


def test_sixty_rows_are_enough_for_both_linear_families(solved):
    for family in ("linear", "cross"):
        metrics, recovery, equation = scores(solved["small"], "small", family)
        assert metrics["recovered_val_mse"] <= 1e-12 and metrics["recovered_exact"] == 1.0, family
        assert equation == "y = 2.000*x0 - 3.000*x1 + 1.000" and recovery["spurious"] == []
    cross, _, _ = scores(solved["small"], "small", "cross")
    assert cross["val_mse"] > 1e-3  # 65 features, 48 rows: the network alone cannot pin them down


def test_no_mlp_row_shows_an_optimum_or_a_gap(solved):
    for name, root in solved.items():
        metrics, _, _ = scores(root, name, "mlp")
        assert "optimum_mse" not in metrics and "gap" not in metrics
        assert metrics["excess"] == pytest.approx(metrics["val_mse"] - metrics["floor_mse"])
