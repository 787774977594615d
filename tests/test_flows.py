"""Prefect flows under prefect_test_harness (a server, so the tests that run a flow are slow): retries, bad
parameters, and the whole experiment run twice."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import lock_md5, make_repo, sh, shrink, stored
from mlflow import MlflowClient
from prefect import flow, task

from flows.experiment import RETRIES, compare_task, experiment, generate_task, promote_task, tune_task, version_task


@pytest.fixture(scope="module")
def harness():
    """A Prefect server for the module's flow runs: the tests that run a flow are slow for it (a
    server's start costs seconds; the fast tests start none, nor import the server's code)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_every_task_that_touches_storage_retries():
    for each in (generate_task, tune_task, compare_task, version_task, promote_task):
        assert each.retries == RETRIES["retries"] >= 2
        assert each.retry_delay_seconds == RETRIES["retry_delay_seconds"]


@pytest.mark.slow
def test_task_failing_twice_then_succeeding_completes(harness):
    attempts = []

    @task(**(RETRIES | {"retry_delay_seconds": 0}))
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"transient failure {len(attempts)}")
        return len(attempts)

    @flow
    def uses_flaky() -> int:
        return flaky()

    state = uses_flaky(return_state=True)
    assert state.is_completed()
    assert state.result() == 3 and len(attempts) == 3


@pytest.fixture(scope="module")
def twice(harness, tmp_path_factory, default_params_raw):
    """The experiment flow run twice on the same params in a fresh repo."""
    root = make_repo(tmp_path_factory.mktemp("flow") / "repo", shrink(default_params_raw))
    states = [experiment(repo=str(root), max_concurrency=2, return_state=True) for _ in range(2)]
    return root, states


@pytest.mark.slow
def test_flow_runs_complete_and_tag_their_mlflow_runs(twice):
    root, states = twice
    assert all(state.is_completed() for state in states)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("equations").experiment_id
    for state in states:
        flow_run_id = str(state.state_details.flow_run_id)
        runs = client.search_runs([experiment_id], f"tags.prefect_flow_run_id = '{flow_run_id}'", max_results=1000)
        roles = [r.data.tags.get("role") for r in runs]
        assert roles.count("parent") == 6 and roles.count("report") == 1 and len(runs) == 6 + 6 * 2 + 1


@pytest.mark.slow
def test_flow_leaves_dvc_clean_and_pushed(twice):
    root, _ = twice
    assert "up to date" in sh(root, "dvc", "status")
    assert stored(root.parent / "equations-dvc-remote", lock_md5(root, "data/product.npz"))
    assert "Running stage" not in sh(root, "dvc", "repro")


@pytest.mark.slow
def test_same_params_twice_make_no_second_version(twice):
    root, states = twice
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for dataset in ("linear", "product"):
        name = f"equations-{dataset}"
        assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "1" and champion.tags["promotion"] == "promoted"
        assert champion.tags["family"] in ("linear", "cross", "mlp") and "first champion" in champion.description
        assert "the simplest family that reaches the noise floor" in client.get_registered_model(name).description
        # The second run trained the very same model: it says so instead of adding a version.
        second = client.search_runs(
            [client.get_experiment_by_name("equations").experiment_id],
            f"tags.dataset = '{dataset}' and tags.promotion = 'identical'",
        )
        assert len(second) == 1 and "identical to champion version 1" in second[0].data.tags["promotion_reason"]
    result = states[1].result()
    assert all("identical to champion version 1" in reason for reason in result["promotion"])
    assert json.loads((root / "metrics" / "product-cross.json").read_text())["val_mse"] == pytest.approx(
        result["val_mse"]["product"]["cross"], rel=1e-12
    )


@pytest.mark.slow
def test_bad_flow_parameters_are_refused_before_any_work(harness, tmp_path):
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="max_concurrency"):
        experiment(repo=str(tmp_path), max_concurrency=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_bad_params_file_fails_the_run_naming_the_key(harness, tmp_path, default_params_raw):
    from pipeline.config import ConfigError

    broken = shrink(default_params_raw)
    broken["datasets"]["linear"]["equation"] = "__import__('os')"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match=r"datasets\.linear\.equation"):
        experiment(repo=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_dvc_s_stage_commands_find_this_interpreter_without_the_venv_on_path(monkeypatch):
    """A flow started as `.venv/bin/python -m flows.experiment` with the venv not activated (a cron
    job, a Prefect worker): the `python` of the DVC stages it commits must still be this one (in
    a pipeline of a subfolder, examples/feynman, another one failed with `No module named pipeline`)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from flows.experiment import _this_python_on_path

    here = Path(sys.executable).parent
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != here))
    with _this_python_on_path():
        assert Path(shutil.which("python")).parent == here
        found = subprocess.run("python -c 'import sys; print(sys.prefix)'", shell=True, capture_output=True, text=True)
        assert found.stdout.strip() == sys.prefix
    assert here not in [Path(p) for p in os.environ["PATH"].split(os.pathsep)]  # as it was
