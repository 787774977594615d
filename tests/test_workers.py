"""The stage's bookkeeping for workers that died, on real stores (SQLite MLflow and Optuna): a
trial that finished in the study while its worker died before ending its MLflow run."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.workers import end_stale_runs


def test_a_run_left_running_by_a_worker_that_died_after_its_trial_is_completed_from_the_study(tmp_path, mlflow_uri):
    tracking = mlflow_uri
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


def _stores(tmp_path, tracking):
    client = MlflowClient(tracking)
    experiment = client.create_experiment("equations", artifact_location=(tmp_path / "mlruns").as_uri())
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return tracking, client, experiment, study, client.create_run(experiment).info.run_id


def test_runs_no_trial_names_and_runs_shared_with_a_retry_are_ended_by_what_they_record(tmp_path, mlflow_uri):
    """A worker opens a batch's runs, then names each on its trial: one stopped (killed, or paused
    past the grace) in between leaves runs no trial names. CI met it once (a paused worker). They
    are found by their `trial` tag. A failed trial and its retry share one run: KILLED when the
    retry never ran, left to the retry's worker while it runs."""
    tracking, client, experiment, study, parent = _stores(tmp_path, mlflow_uri)
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    runs = {}
    for case in ("unnamed-failed", "unnamed-running", "retry-waiting", "retry-running"):
        trial = study.ask(distributions)
        tags = {"mlflow.parentRunId": parent, "trial": str(trial.number)}
        runs[case] = client.create_run(experiment, tags=tags).info.run_id
        if case.startswith("retry"):  # failed; its retry (as RetryFailedTrialCallback makes it) holds its attributes
            trial.set_user_attr("mlflow_run_id", runs[case])
        if case != "unnamed-running":
            study.tell(trial, state=TrialState.FAIL)
        if case.startswith("retry"):
            attrs = {"user_attrs": {"mlflow_run_id": runs[case]}, "system_attrs": {"failed_trial": trial.number}}
            retry = optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=distributions, **attrs)  # fmt: skip
            study.add_trial(retry)
            if case == "retry-running":
                assert study.ask().number == study.trials[-1].number  # a worker took it: it runs now
    assert end_stale_runs(study, tracking, parent) == 2
    status = {case: client.get_run(run_id).info.status for case, run_id in runs.items()}
    assert status == {"unnamed-failed": "KILLED", "unnamed-running": "RUNNING", "retry-waiting": "KILLED",
                      "retry-running": "RUNNING"}  # fmt: skip
    assert "stopped beating" in client.get_run(runs["unnamed-failed"]).data.tags["ended_by"]
    assert end_stale_runs(study, tracking, parent) == 0


def test_a_worker_taken_over_ends_the_runs_it_opened_but_never_named_on_their_trials(tmp_path, mlflow_uri):
    from pipeline.data import DatasetRef
    from pipeline.records import FamilyRun
    from pipeline.tracking import Target
    from pipeline.workers import _WorkerTrials

    tracking, client, experiment, study, parent = _stores(tmp_path, mlflow_uri)
    said: list[str] = []
    target = Target(tracking, "equations", {"dataset": "p", "model": "linear"})
    trials = _WorkerTrials(client, study, FamilyRun(target, parent, DatasetRef("p", "0" * 32, "p.npz")), said.append)
    asked = [study.ask() for _ in range(3)]
    attrs = trials.on_ask(asked)  # three runs opened
    asked[0].set_user_attr("mlflow_run_id", attrs(asked[0].number)["mlflow_run_id"])  # named; then paused
    for trial in asked[:2]:  # failed elsewhere meanwhile; the third is still this worker's
        study.tell(trial, state=TrialState.FAIL)
    trials.end_unnamed()
    status = [client.get_run(trials.runs[t.number]).info.status for t in asked]
    assert status == ["RUNNING", "KILLED", "RUNNING"]  # the named one is its retry's to take over
    assert said == ["[p/linear] trial 1's run ended KILLED (the trial was retried)"]


@pytest.mark.parametrize("when", ["before-its-tell", "before-an-attribute", "before-training", "before-its-parameters"])
def test_a_worker_whose_trial_was_failed_elsewhere_stops_as_taken_over(tmp_path, monkeypatch, when):
    """A worker paused past the heartbeat grace at any point of its batch, resumed after another
    worker failed its trial (stale). CI met it once: paused right after finding the trial RUNNING,
    before telling it. Its next write must read as "taken over", the worker's clean stop, not as
    Optuna's "Cannot tell a FAIL trial" (the tell) or UpdateFinishedTrialError (an attribute
    learned since, the attributes before training, the trial's parameters); no trial is left RUNNING."""
    import pipeline.trials as tuning
    from pipeline import shared_study
    from pipeline.data import DatasetSpec, generate
    from pipeline.equations import parse
    from pipeline.models import ModelSpec
    from pipeline.space import FloatSpace, IntSpace, SearchSpace
    from pipeline.takeover import TrialTakenOver
    from pipeline.train import Tensors
    from pipeline.trials import Hooks
    from pipeline.tune import StudySettings, TuningJob, create_study

    ds = generate(DatasetSpec("p", parse("2*x0 - 3", 1), 200, 0.2, 0.0, 0, 3.0, 5.0, 1))
    data = Tensors.from_arrays(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = StudySettings(4, pruner="none")
    study = create_study("shared", storage, settings)
    other_worker = optuna.load_study(study_name="shared", storage=storage)
    space = SearchSpace(lr=FloatSpace(0.01, 0.05), epochs=IntSpace(3, 3))
    calls: dict[int, int] = {}

    def fail_first(trials) -> None:  # what `fail_stale_trials` does in the other worker
        other_worker.tell(trials[0].number, state=TrialState.FAIL)

    def on_ask(trials):
        if when == "before-training":  # e.g. paused while opening the trials' MLflow runs
            fail_first(trials)

        def attrs(number: int) -> dict:
            calls[number] = calls.get(number, 0) + 1
            if calls[number] == 2 and number == trials[0].number and when != "before-training":
                fail_first(trials)  # in `done`, after its RUNNING check
            return {"worker": "here", "seen": calls[number] if when == "before-an-attribute" else 1}

        return attrs

    if when == "before-its-parameters":  # between asking the batch and suggesting its parameters
        retried = tuning.retried_numbers
        monkeypatch.setattr(tuning, "retried_numbers", lambda study, ts: fail_first(ts) or retried(study, ts))
    with pytest.raises(TrialTakenOver, match="trial 0 was retried by another worker"):
        shared_study.join(study, TuningJob(ModelSpec("linear"), space, settings, batch=2), data, Hooks(on_ask=on_ask))
    states = [t.state for t in optuna.load_study(study_name="shared", storage=storage).trials]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # the taken-over one, and its batch mate
