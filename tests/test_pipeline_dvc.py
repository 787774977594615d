"""End to end: a real `dvc repro` in a temporary git repo, read back through MlflowClient.

The repo holds a copy of pipeline/, dvc.yaml and the real params.yaml shrunk (two datasets,
two trials a tuning, a few epochs), so every stage and every tracking path runs in about a minute.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import conftest
import mlflow
import pytest
import torch
import yaml
from conftest import git_commit_all, lock_md5, make_repo, sh, shrink, stored
from mlflow import MlflowClient

from pipeline.models import ModelSpec, build_model

pytestmark = pytest.mark.slow
FAMILIES = ("linear", "cross", "mlp")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, default_params_raw):
    root = make_repo(tmp_path_factory.mktemp("dvc") / "repo", shrink(default_params_raw))
    first = sh(root, "dvc", "repro")
    return root, first


@pytest.fixture(scope="module")
def runs(repo):
    root, _ = repo
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("equations")
    every = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {(r.data.tags["dataset"], r.data.tags["model"]): r for r in every if r.data.tags.get("role") == "parent"}
    children = [r for r in every if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_repro_runs_every_stage(repo):
    _, output = repo
    for dataset in ("linear", "product"):
        assert f"Running stage 'generate@{dataset}'" in output
        assert f"Running stage 'tune@{dataset}'" in output  # one process tunes the dataset's three families
    assert "Running stage 'compare'" in output
    assert "(2 of 2) complete" in output  # progress lines reach the terminal


def test_one_parent_run_per_dataset_and_model(runs, repo):
    root, _ = repo
    client, parents, children = runs
    head = sh(root, "git", "rev-parse", "HEAD").strip()
    assert set(parents) == {(d, f) for d in ("linear", "product") for f in FAMILIES}
    for (dataset, family), run in parents.items():
        assert run.info.status == "FINISHED"
        metrics = json.loads((root / "metrics" / f"{dataset}-{family}.json").read_text())
        assert run.data.metrics["val_mse"] == pytest.approx(metrics["val_mse"], rel=1e-9)
        assert {"lr", "epochs", "batch_size", "optimizer"} <= set(run.data.params)
        assert run.data.tags["mlflow.source.git.commit"] == head
        digest = run.inputs.dataset_inputs[0].dataset.digest
        assert digest == lock_md5(root, f"data/{dataset}.npz")
        best = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(best) == int(run.data.params["epochs"])


def test_one_nested_run_per_trial_with_epoch_curves(runs):
    client, parents, children = runs
    for (dataset, family), parent in parents.items():
        mine = [r for r in children if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 2
        for child in mine:
            assert child.info.status in ("FINISHED", "FAILED")
            assert child.data.tags["dataset"] == dataset and child.data.tags["model"] == family
            assert "lr" in child.data.params
            assert child.inputs.dataset_inputs[0].dataset.digest == parent.inputs.dataset_inputs[0].dataset.digest
            for key in ("train_loss", "val_loss"):  # every epoch up to 100, then about 100 of them
                steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
                every = steps[1] - steps[0] if len(steps) > 1 else 1
                assert steps[0] == 0 and steps[:-1] == list(range(0, steps[-1], every)) and len(steps) <= 101
    assert all(r.info.status != "RUNNING" for r in children)


def test_parent_artifacts_load_back(runs, tmp_path, monkeypatch):
    client, parents, _ = runs
    for (dataset, family), run in parents.items():
        run_id = run.info.run_id
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"loss_curve.png", "predictions.png", "slice.png", "model.pt", "spec.json"} <= names
        if family != "mlp":
            assert {"coefficients.json", "trained_coefficients.json", "recovery.json", "equation.txt"} <= names
            equation = Path(client.download_artifacts(run_id, "equation.txt", str(tmp_path))).read_text()
            assert equation.startswith("y = ")
            assert run.data.tags["recovered_equation"] == equation.strip()
        spec = json.loads(Path(client.download_artifacts(run_id, "spec.json", str(tmp_path))).read_text())
        state = torch.load(client.download_artifacts(run_id, "model.pt", str(tmp_path)), weights_only=True)
        model = build_model(ModelSpec(spec["family"], tuple(spec["terms"]), spec["depth"], spec["width"]), 10)
        model.load_state_dict(state)
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would send later tests'
        # runs to this store: monkeypatch takes the variable back afterwards.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", client._tracking_client.tracking_uri)
        mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
        logged = mlflow.pytorch.load_model(f"runs:/{run_id}/{dataset}-{family}")  # models named after both
        x = torch.randn(4, 10)
        with torch.no_grad():
            torch.testing.assert_close(logged(x), model(x))
        info = mlflow.models.get_model_info(f"runs:/{run_id}/{dataset}-{family}")
        assert info.signature is not None and info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 10)


def test_report_is_one_run_with_the_report_files(runs):
    client, _, _ = runs
    experiment_id = client.get_experiment_by_name("equations").experiment_id
    (report,) = client.search_runs([experiment_id], "tags.role = 'report'")
    assert report.info.status == "FINISHED" and "mlflow.parentRunId" not in report.data.tags
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"summary.md", "comparison.png", "comparison.json", "linear.png", "product.png"} <= names


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    output = sh(root, "dvc", "repro")
    assert "Running stage" not in output
    status = sh(root, "dvc", "status")
    assert "up to date" in status


def test_metrics_and_plots_render(repo, tmp_path):
    root, _ = repo
    table = sh(root, "dvc", "metrics", "show")
    assert "metrics/product-cross.json" in table and "val_mse" in table
    sh(root, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "train_loss" in html and "val_loss" in html
    assert "cdn.jsdelivr.net" not in html and "/* vega-lite@5" in html  # works offline: the scripts are inline
    assert '"type": "log"' in html and "per epoch of the best trial, log scale" in html
    summary = (root / "reports" / "summary.md").read_text()
    outcomes, every_model = summary.split("## Every model")
    assert outcomes.count("| product |") == 1 and every_model.count("| product |") == 3
    assert "| `y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000` |" in summary  # the true equation, expanded
    for image in ("comparison.png", "linear.png", "product.png"):
        assert (root / "reports" / image).stat().st_size > 10_000 and f"]({image})" in summary


def test_data_is_versioned_by_dvc_not_git(repo):
    root, _ = repo
    sh(root, "git", "check-ignore", "data/product.npz")
    sh(root, "git", "check-ignore", "models/product-mlp")
    assert stored(root / ".dvc" / "cache", lock_md5(root, "data/product.npz"))


def test_exp_run_on_a_dataset_key_reruns_only_that_dataset(repo):
    root, _ = repo
    git_commit_all(root, "results")
    output = sh(root, "dvc", "exp", "run", "-S", "datasets.product.seed=5")
    ran = sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))
    assert ran == ["compare", "generate@product", "tune@product", "validate"]  # validate: a second, no torch


def test_a_params_typo_deletes_nothing_and_its_fix_retrains_nothing(repo):
    root, _ = repo
    sh(root, "dvc", "repro")  # whatever the test before left, everything up to date
    git_commit_all(root, "before the typo")
    outputs = _outputs(root)
    params = root / "params.yaml"
    good = params.read_text()
    params.write_text(good.replace("n_samples: 300", "n_samples: 3OO", 1))
    failed = conftest.run(root, "dvc", "repro")
    assert failed.returncode != 0
    assert "datasets.linear.n_samples = '3OO'" in failed.stdout + failed.stderr
    assert sh(root, "git", "status", "--porcelain").split() == ["M", "params.yaml"]
    assert _outputs(root) == outputs  # every output still there
    params.write_text(good)
    output = sh(root, "dvc", "repro")
    assert "Running stage" not in output
    assert sh(root, "git", "status", "--porcelain") == ""


def _outputs(root: Path) -> list[Path]:
    folders = ("checks", "data", "models", "metrics", "plots", "reports")
    return sorted(path for folder in folders for path in (root / folder).rglob("*"))


def test_editing_code_reruns_only_the_stages_that_run_it(repo):
    root, _ = repo
    sh(root, "dvc", "repro")  # whatever the tests before left, everything up to date
    registry = root / "pipeline" / "registry.py"
    registry.write_text(registry.read_text() + "\n# A comment in the promotion code: no stage runs it.\n")
    assert "Running stage" not in sh(root, "dvc", "repro")
    report = root / "pipeline" / "report.py"
    report.write_text(report.read_text() + "\n# A comment in the report's code: compare alone runs it.\n")
    output = sh(root, "dvc", "repro")
    ran = sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))
    assert ran == ["code-compare", "compare"]  # its code's fingerprint (milliseconds), then the report


def test_the_report_s_advice_and_the_documented_degree_3_command_work(repo):
    # A law of degree 3 with the default library (degree 2): the report says which command brings
    # its term in, and that command, run as written, does.
    root, _ = repo
    sh(root, "dvc", "repro")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["datasets"]["cubic"] = {"equation": "x0*x1*x2", "n_features": 3, "n_samples": 300}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "dvc", "repro")
    recovery = json.loads((root / "reports" / "comparison.json").read_text())["cubic"]["cross"]["recovery"]
    assert recovery["outside"] == ["x0*x1*x2"]
    advice = re.findall(r"`(dvc exp run [^`]+)`", " ".join(recovery["suggestions"]))
    assert advice == ["dvc exp run -S models.cross.degree=3"]
    sh(root, *shlex.split(advice[0]))
    after = json.loads((root / "reports" / "comparison.json").read_text())["cubic"]["cross"]
    assert after["recovery"]["outside"] == []  # degree 3: the law's term is in the library now
    # The documented example (docs/configuration.md), as written.
    output = sh(root, "dvc", "exp", "run", "-S", "models.cross.degree=3", "-S", "models.cross.functions=[sin]")
    assert "Running stage 'tune@cubic'" in output
    assert yaml.safe_load((root / "params.yaml").read_text())["models"]["cross"]["functions"] == ["sin"]
    # The headline is the cross network's own score, the equation read back from it a second one,
    # in the metrics, the report and MLflow alike.
    cross = json.loads((root / "metrics" / "product-cross.json").read_text())
    assert cross["val_mse"] != cross["recovered_val_mse"]
    summary = (root / "reports" / "summary.md").read_text()
    from pipeline.report import _num as _number  # the report's own number format

    assert _number(cross["val_mse"]) in summary and _number(cross["recovered_val_mse"]) in summary
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("equations").experiment_id
    parents = "tags.role = 'parent' and tags.dataset = 'product' and tags.model = 'cross'"
    (run,) = client.search_runs([experiment], parents, order_by=["attributes.start_time DESC"], max_results=1)
    assert run.data.metrics["val_mse"] == pytest.approx(cross["val_mse"], rel=1e-9)
    assert f"the network's val_mse {cross['val_mse']:.3g}" in run.data.tags["mlflow.note.content"]
    assert run.data.params["models.cross.degree"] == "3" and run.data.params["models.cross.functions"] == '["sin"]'
    assert run.data.tags["dvc_exp_name"]  # which DVC experiment made it
