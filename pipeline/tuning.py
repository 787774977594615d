"""A dataset's tuning, recorded: each family's study run here (or by workers), its record written
by a second process meanwhile.

Training runs in this process; the record (MLflow runs of every trial, plots, stage outputs, the
logged model) is written by a `Recorder` process in the order it was submitted, so both cores
work. Parent runs end FAILED if anything fails or is interrupted, and the trials of the batch in
training end FAIL, so nothing is left RUNNING.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline import liveness, records, study_storage, threads
from pipeline.recorder import Recorder
from pipeline.records import Best, FamilyRun
from pipeline.stores import Stores
from pipeline.tracking import Target, commit_tags, source_tags

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from pipeline.data import Dataset, DatasetRef, DatasetSpec
    from pipeline.outputs import TuneOutputs
    from pipeline.trials import Hooks, TrialOutcome
    from pipeline.tune import TuneResult, TuningJob

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What one `tune` stage does: which families of which dataset, how, and where their outputs go."""

    source: DatasetRef  # the dataset file, its MD5 checked
    data_spec: DatasetSpec
    jobs: dict[str, TuningJob]  # by family, in the order they run
    outputs: dict[str, TuneOutputs]  # by family
    facts: dict[str, dict] = field(default_factory=dict)  # by family: the parent run's params beside the best trial's


def study_name(experiment: str, name: str, parent_id: str) -> str:
    """One study per tuning run, named after its MLflow parent run: `equations/product/mlp #1a2b3c4d`.

    Eight hex digits of the run id keep the name short enough for optuna-dashboard's study list
    (the whole id, 32 digits, wrapped mid-id there); the study's `mlflow_run_id` attribute holds it all."""
    return f"{experiment}/{name} #{parent_id[:8]}"


def tune_dataset(plan: Plan, dataset: Dataset, where: Stores, workers: int | None, progress: Progress,
                 tags: dict[str, str] | None = None) -> dict[str, dict]:  # fmt: skip
    """Tune each family of `plan` on `dataset`, one after another. Returns, per family, the
    metrics plus the MLflow parent run's id (`run_id`) and its model's URI (`model_uri`). Runs
    and trials that dead processes left RUNNING in the same stores are ended first. With
    `workers` (0 or more), worker processes run the trials instead (`pipeline.workers`)."""
    base_tags = commit_tags() | source_tags() | {"dataset": plan.source.name} | liveness.owner() | (tags or {})
    uri, experiment = where.tracking_uri, where.experiment
    targets = {family: Target(uri, experiment, base_tags | {"model": family}) for family in plan.jobs}
    with Recorder() as recorder:
        # Submitted first: the recorder starts (imports, store set-up) while this process loads torch.
        orphans = recorder.submit(records.end_orphan_runs, Target(uri, experiment))
        opened = recorder.submit(records.open_runs, targets, plan.source, {"role": "parent"})
        import torch  # noqa: F401 (loaded here, while the recorder starts)

        threads.limit(next(iter(plan.jobs.values())).threads)
        storage = study_storage.optuna_storage(where.optuna_url)
        if message := liveness.describe_cleanup(orphans.result(), study_storage.fail_orphans(storage)):
            progress(message)
        session = _Session(plan, dataset, where, recorder, progress)
        return session.run({f: FamilyRun(targets[f], run_id, plan.source) for f, run_id in opened.result().items()},
                           storage, workers)  # fmt: skip


class _Session:
    """The families of one dataset tuned in turn, their record submitted to one recorder."""

    def __init__(self, plan: Plan, dataset: Dataset, where: Stores, recorder: Recorder, progress: Progress) -> None:
        self.plan, self.dataset, self.where, self.recorder, self.progress = plan, dataset, where, recorder, progress
        self.pending: list[Future] = []  # the recorder's jobs for trials: one that fails fails the stage

    def run(self, runs: dict[str, FamilyRun], storage: optuna.storages.BaseStorage, workers: int | None) -> dict:
        unrecorded = dict(runs)  # parent runs not yet handed to `record_best`
        try:
            futures = {}
            for family, run in runs.items():
                futures[family] = self.family(family, run, storage, workers)
                del unrecorded[family]
            for job in self.pending:
                job.result()
            return {family: future.result() for family, future in futures.items()}
        except BaseException:
            for run in unrecorded.values():
                self.recorder.submit(records.close_run, run.target, run.parent_id, "FAILED")
            raise

    def family(self, family: str, run: FamilyRun, storage: optuna.storages.BaseStorage, workers: int | None) -> Future:
        """Run every trial of one family (here, or by workers); returns the recorder's future of its results."""
        from pipeline.tune import create_study

        job = self.plan.jobs[family]
        attrs = {
            "dataset": self.plan.source.name,
            "model": family,
            "equation": self.plan.data_spec.equation.text,
            "mlflow_experiment": self.where.experiment,
            "mlflow_run_id": run.parent_id,
        } | liveness.owner()
        study = create_study(study_name(self.where.experiment, run.name, run.parent_id), storage, job.settings, attrs)
        self.recorder.submit(records.tag_run, run.target, run.parent_id, {"optuna_study": study.study_name})
        if workers is not None:
            from pipeline import workers as remote

            result = remote.tune_by_workers(study, job, run, self.where, workers, self.progress)
        else:
            result = self._tune_here(study, job, run)
        return self._finish(family, run, result)

    def _tune_here(self, study: optuna.Study, job: TuningJob, run: FamilyRun) -> TuneResult:
        from pipeline.train import Tensors
        from pipeline.tune import tune

        data = self.dataset
        tensors = Tensors.from_arrays(data.X_train, data.y_train, data.X_val, data.y_val, job.device, job.standardize)
        result = tune(study, job, tensors, self._hooks(run, study.study_name, job.n_trials))
        # Every trial is over, and the recorder has it to write: none of them will be RUNNING in
        # the storage. (Not so with workers: one may still be ending a trial, and if it dies
        # there, the next cleanup must still look at this study.)
        study_storage.mark_ended(study)
        return result

    def _finish(self, family: str, run: FamilyRun, result: TuneResult) -> Future:
        self.progress(
            f"[{run.name}] best trial {result.best_trial}: val_mse={result.best_value:.4g} in {result.seconds:.1f}s; "
            f"MLflow run {run.parent_id}"
        )
        result.model = result.model.cpu().eval()
        best = Best(result, self.dataset, self.plan.data_spec, self.plan.facts.get(family, {}))
        return self.recorder.submit(records.record_best, run, best, self.plan.outputs[family])

    def _hooks(self, run: FamilyRun, study_name: str, n_trials: int) -> Hooks:
        """Each trial's nested MLflow run is opened by the recorder as soon as the trial is asked, and
        filled and ended when the trial is over; each batch of trials goes into the Optuna study
        through the recorder too, with its run's id as the trial's user attribute `mlflow_run_id`
        (for optuna-dashboard). Training waits for none of it."""
        from pipeline.trials import Hooks

        best = {"value": float("inf"), "done": 0}

        def on_ask(asked: list[optuna.Trial]) -> None:
            for trial in asked:
                self.pending.append(self.recorder.submit(records.open_trial_run, run, trial.number))

        def on_trial(outcome: TrialOutcome) -> None:
            value = outcome.history.val_loss[-1] if outcome.history.val_loss else float("nan")
            if outcome.state == "COMPLETE":
                best["value"] = min(best["value"], value)
            best["done"] += 1
            self.pending.append(self.recorder.submit(records.record_trial, run.target, (run.parent_id, outcome.number),
                                                     outcome))  # fmt: skip
            # Optuna's trial number, as in "best trial N", the study and the run name; then how many are done.
            self.progress(
                f"[{run.name}] trial {outcome.number} ({best['done']} of {n_trials}) {outcome.state.lower()}: "
                f"val_mse={value:.4g} after {len(outcome.history.val_loss)} epochs; best {best['value']:.4g}"
            )

        def on_batch(trials: list[FrozenTrial]) -> None:
            job = (records.store_trials, run, self.where.optuna_url, study_name, trials)
            self.pending.append(self.recorder.submit(*job))

        return Hooks(on_trial=on_trial, on_ask=on_ask, on_batch=on_batch)
