"""What the recorder process writes to MLflow while training goes on: the record of a tuning.

Each function here is a job submitted to the `Recorder` (`pipeline.recorder`), run in order in one
process: open the parent runs and the trials' nested runs, tag and close them, fill a trial's run
when it ends, write each batch of trials into its Optuna study, and, for the best model, score it,
write the stage outputs and complete its parent run (`record_best`). Workers on other machines
call `open_run` and `record_trial` themselves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline import artifacts, evaluation, model_files, optuna_private, outputs, study_storage
from pipeline.data import DatasetRef
from pipeline.reference import format_equation, target
from pipeline.tracking import LoggedModel, curve_points

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from pipeline.data import Dataset, DatasetSpec
    from pipeline.outputs import TuneOutputs
    from pipeline.tracking import Target
    from pipeline.trials import TrialOutcome
    from pipeline.tune import TuneResult


@dataclass(frozen=True)
class FamilyRun:
    """One family's tuning as the record knows it: where its runs go and under which parent."""

    target: Target  # the tracking store, experiment and tags of every run
    parent_id: str  # the family's parent run
    source: DatasetRef  # the dataset: name, DVC hash, where it came from

    @property
    def name(self) -> str:
        return f"{self.source.name}/{self.target.tags['model']}"


def end_orphan_runs(target: Target) -> list[str]:
    return target.tracker().end_orphans()


def open_runs(targets: dict[str, Target], source: DatasetRef, tags: dict[str, str]) -> dict[str, str]:
    """One new run per target (named `<dataset>/<key>`), each recording its dataset; their ids by key."""
    return {key: open_run(target, f"{source.name}/{key}", tags, None, source) for key, target in targets.items()}


def open_run(target: Target, name: str, tags: dict[str, str], parent_id: str | None, source: DatasetRef) -> str:
    """A new MLflow run recording its dataset (name, DVC hash, path); returns its id."""
    tracker = target.tracker()
    run_id = tracker.start(name, tags, parent_id)
    tracker.log_dataset(run_id, source.name, source.md5, source.path)
    return run_id


TRIAL_CURVE_POINTS = 100  # per curve of a trial's nested run

# Trial runs this recorder process opened, by (parent run, trial number): `record_trial` and
# `store_trials` jobs name their run so, and the one worker process runs jobs in order, so the run
# is always there.
_OPENED: dict[tuple[str, int], str] = {}


def open_trial_run(run: FamilyRun, number: int) -> str:
    """A trial's nested run, opened as the trial is asked."""
    run_id = open_run(run.target, f"{run.name}/trial-{number}", {"trial": str(number)}, run.parent_id, run.source)
    _OPENED[(run.parent_id, number)] = run_id
    return run_id


def store_trials(run: FamilyRun, storage_url: str, study_name: str, trials: list[FrozenTrial]) -> None:
    """A batch of finished trials into their study in the Optuna storage (`tune.tune`), each with
    its nested run's id as the user attribute `mlflow_run_id` (optuna-dashboard shows it)."""
    storage = _storage(storage_url)
    for trial in trials:
        if (run_id := _OPENED.pop((run.parent_id, trial.number), None)) is not None:
            trial.user_attrs = trial.user_attrs | {"mlflow_run_id": run_id}
    optuna_private.store_trials(storage, storage.get_study_id_from_name(study_name), trials)


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    """This (recorder) process's one storage of `url`: opening one costs a connection pool."""
    return study_storage.optuna_storage(url)


def tag_run(target: Target, run_id: str, tags: dict[str, str]) -> None:
    target.tracker().log(run_id, tags=tags)


def close_run(target: Target, run_id: str, status: str) -> None:
    target.tracker().end(run_id, status)


def record_trial(target: Target, run: str | tuple[str, int], outcome: TrialOutcome) -> None:
    """Fill a trial's nested run (its id, or (parent run, trial number) of a run `open_trial_run`
    opened in this process): its params, final val_mse if it completed, per-epoch curves; end it."""
    run_id = _OPENED[run] if isinstance(run, tuple) else run
    value = outcome.history.val_loss[-1] if outcome.history.val_loss else float("nan")
    # A diverged trial failed; an interrupted one (Ctrl-C, SIGTERM) was killed.
    status = {"DIVERGED": "FAILED", "FAIL": "KILLED"}.get(outcome.state, "FINISHED")
    tracker = target.tracker()
    try:
        metrics = {"val_mse": value} if outcome.state == "COMPLETE" else None
        # A trial's curves to compare trials by: about TRIAL_CURVE_POINTS epochs each (the best
        # model's parent run has every epoch); a point costs the store a row and ~0.07 ms.
        curves = curve_points(outcome.history.train_loss, outcome.history.val_loss, TRIAL_CURVE_POINTS)
        tracker.log(run_id, outcome.params, metrics, {"optuna_state": outcome.state}, curves)
    except BaseException:
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id, status)


@dataclass(frozen=True)
class Best:
    """What `record_best` needs beside the run: the tuning's result and the data it was scored on."""

    result: TuneResult
    dataset: Dataset
    data_spec: DatasetSpec
    facts: dict  # the parent run's params beside the best trial's (dataset, tuning budget)


def record_best(run: FamilyRun, best: Best, where: TuneOutputs) -> dict:
    """Score the best model, write the stage outputs, complete the parent run; returns the metrics,
    `run_id`, `model_uri` and the model files' `digests`. The outputs move into place only once the
    run holds everything; if any of it fails, the parent run ends FAILED and the previous outputs
    stay as they were."""
    tracker = run.target.tracker()
    staged = where.staged()  # moved into place once the record is complete (`outputs.publish`)
    try:
        scored = score(best.result, best.dataset, best.data_spec)
        files = artifacts.write(staged, scored, best.dataset, best.data_spec)
        # The files' SHA-256 go to the tracking store: `pipeline.load_model` refuses files that differ.
        digests = model_files.digests(staged.model_dir)
        tags = _equation_tags(scored.recovered) | digests
        tags["mlflow.note.content"] = _description(best, scored.metrics, tags.get("recovered_equation"))
        tracker.log(run.parent_id, params=_run_params(best.result) | best.facts, tags=tags)
        tracker.log_history(run.parent_id, best.result.history.train_loss, best.result.history.val_loss)
        tracker.log_artifacts(run.parent_id, files)
        X_example = np.asarray(best.dataset.X_val[:5], dtype=np.float32)
        name = f"{best.data_spec.name}-{best.result.spec.family}"
        logged = LoggedModel(best.result.model, X_example, name, best.data_spec.equation.variables)
        params = _run_params(best.result) | best.facts
        model_uri = tracker.log_torch_model(run.parent_id, logged, params, scored.metrics | scored.timings, run.source)
        outputs.publish(staged, where)
    except BaseException:
        outputs.discard(staged)
        tracker.end(run.parent_id, "FAILED")
        raise
    tracker.end(run.parent_id, "FINISHED")
    return scored.metrics | scored.timings | {"run_id": run.parent_id, "model_uri": model_uri,
                                             "experiment_id": tracker.experiment_id,
                                             "digests": digests}  # fmt: skip


def score(result: TuneResult, dataset: Dataset, data_spec: DatasetSpec) -> artifacts.Scored:
    """The best network's scores (and the equation read back from it, for the linear families)."""
    recovered = evaluation.recover(result.model, dataset, data_spec)
    metrics = evaluation.evaluate(dataset, data_spec, result.model, recovered) | {
        # The best trial's own val_mse, as its nested run and the study have it (float32, during
        # training); `val_mse` is the same network's, re-measured in float64.
        "best_trial_val_mse": result.best_value,
        "n_trials_complete": result.n_complete,
        "n_trials_pruned": result.n_pruned,
    }
    metrics["n_parameters"] = sum(p.numel() for p in result.model.parameters())
    # Times differ on every run: MLflow keeps them, the DVC metrics files (which should change only
    # when results do) do not.
    timings = {"tune_seconds": round(result.seconds, 3), "train_seconds": round(result.history.seconds, 3)}
    return artifacts.Scored(result, metrics, recovered, timings)


def _description(best: Best, metrics: dict, recovered: str | None) -> str:
    """The parent run's description in the MLflow UI: what was fitted, how well, what came back."""
    spec, result = best.data_spec, best.result
    inputs = ", ".join(v.name for v in spec.variables) if spec.variables else f"{spec.equation.n_features} inputs"
    lhs = target(spec.equation.variables)
    noise = f"noise {spec.noise_relative} x RMS({lhs})" if spec.noise_relative else f"noise {spec.noise}"
    text = (
        f"**{spec.name} / {result.spec.family}**: `{lhs} = {spec.equation.text}` ({inputs}; "
        f"{spec.n_samples} rows, {noise}). Best of {result.n_complete + result.n_pruned} trials "
        f"(trial {result.best_trial}): the network's val_mse {metrics['val_mse']:.3g} against a noise floor of "
        f"{metrics['floor_mse']:.3g} (R^2 {metrics['r2']:.5f}), out of range {metrics['ood_mse']:.3g}."
    )
    if recovered:
        exact = "exact: the true equation" if metrics.get("recovered_exact") else "not the true equation"
        text += (
            f" Equation read back from the weights: `{recovered}` (val_mse {metrics['recovered_val_mse']:.3g}; "
            f"{exact})."
        )
    return text + " The verdict across families is in the `report` run (summary.md)."


def _run_params(result: TuneResult) -> dict:
    return result.best_params | {"family": result.spec.family, "best_trial": result.best_trial}


def _equation_tags(recovered: evaluation.Recovered | None) -> dict:
    """The equation read back from a linear family's weights, as a tag the runs table can show."""
    if recovered is None:
        return {}
    model = recovered.model
    return {"recovered_equation": format_equation(model.coefficients(), model.variables)}
