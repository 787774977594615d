"""The stage's bookkeeping for workers that died, on real stores (SQLite MLflow and Optuna): a
trial that finished in the study while its worker died before ending its MLflow run."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.workers import end_stale_runs


def test_a_run_left_running_by_a_worker_that_died_after_its_trial_is_completed_from_the_study(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    experiment = client.create_experiment("equations", artifact_location=(tmp_path / "mlruns").as_uri())
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    parent = client.create_run(experiment).info.run_id
    elsewhere = client.create_run(experiment).info.run_id  # another tuning's trial: not this stage's to end
    runs = {}
    for state in ("done", "failed", "running"):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        runs[state] = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
        trial.set_user_attr("mlflow_run_id", runs[state])
        if state == "done":  # told COMPLETE with its curve; the worker died before ending the run
            for step, value in enumerate([0.5, 0.25, 0.125]):
                trial.report(value, step)
            study.tell(trial, 0.125)
        elif state == "failed":  # its worker stopped beating: failed (and retried elsewhere)
            study.tell(trial, state=TrialState.FAIL)
    stranger = study.ask()
    stranger.set_user_attr("mlflow_run_id", elsewhere)
    study.tell(stranger, state=TrialState.FAIL)
    assert end_stale_runs(study, tracking, parent) == 2
    done, failed, running = (client.get_run(runs[s]) for s in ("done", "failed", "running"))
    assert done.info.status == "FINISHED" and done.data.metrics["val_mse"] == 0.125
    assert [m.value for m in client.get_metric_history(runs["done"], "val_loss")] == [0.5, 0.25, 0.125]
    assert "lr" in done.data.params and "died after the trial ended" in done.data.tags["ended_by"]
    assert failed.info.status == "KILLED" and "stopped beating" in failed.data.tags["ended_by"]
    assert running.info.status == "RUNNING"  # still running in the study: its worker may be alive
    assert client.get_run(elsewhere).info.status == "RUNNING"  # not a child of this parent
    assert end_stale_runs(study, tracking, parent) == 0  # nothing twice
