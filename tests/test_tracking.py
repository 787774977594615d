"""The MLflow contract at unit level, on a real SQLite store read back with MlflowClient."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipeline.tracking import Tracker


@pytest.fixture
def tracker(mlflow_uri) -> Tracker:
    return Tracker(mlflow_uri, "unit", tags={"dataset": "d"})


def test_run_ends_failed_when_its_body_raises(tracker):
    with pytest.raises(ZeroDivisionError):
        with tracker.run("boom", {"model": "m"}) as run_id:
            raise ZeroDivisionError("boom")
    run = MlflowClient(tracker.tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["dataset"] == "d" and run.data.tags["model"] == "m"


def test_history_is_logged_in_batches_at_step_epoch(tracker):
    epochs = 1500  # 3000 points: more than one log_batch call
    with tracker.run("curves", {}) as run_id:
        tracker.log_history(run_id, [1.0 / (e + 1) for e in range(epochs)], [2.0 / (e + 1) for e in range(epochs)])
    client = MlflowClient(tracker.tracking_uri)
    val = client.get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in val) == list(range(epochs))
    assert {m.step: m.value for m in val}[9] == pytest.approx(0.2)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_nested_run_points_at_its_parent_and_records_the_dataset_digest(tracker):
    with tracker.run("parent", {}) as parent_id:
        with tracker.run("child", {}, parent_id=parent_id, status="FAILED") as child_id:
            tracker.log_dataset(child_id, "product", "0123456789abcdef0123456789abcdef", "data/product.npz")
    client = MlflowClient(tracker.tracking_uri)
    child = client.get_run(child_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.info.status == "FAILED"
    assert child.inputs.dataset_inputs[0].dataset.digest == "0123456789abcdef0123456789abcdef"
