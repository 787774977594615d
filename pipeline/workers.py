"""Beyond one machine: tuning workers that share nothing but the two stores.

The stage that starts a tuning (`tune --workers N`, or with workers started anywhere else) opens
the parent MLflow run and the Optuna study as usual, and publishes under the parent run what a
worker needs: `worker/job.json` (study, model family, search space, budget) and the dataset file
with its DVC hash. A worker (`python -m pipeline worker --parent RUN_ID`, in any directory, on any
machine that reaches the tracking server and the study's database) downloads both, checks the
hash, joins the study (`shared_study.join`: batches, heartbeats, failed trials retried) and logs
each trial as a nested run under the parent, over HTTP when MLflow is a server. When it stops, it
logs its best model (the model directory of `pipeline.model_files`, with its SHA-256) to that
trial's run. The stage waits until the study holds exactly its `n_trials` finished trials, takes
the best trial's model from MLflow (checked, without pickle) and writes the DVC outputs as a
one-process run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import liveness, model_files, records, threads
from pipeline.data import DatasetRef
from pipeline.errors import redact
from pipeline.tracking import MLFLOW_PARENT_RUN_ID, Target, every_run

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from torch import nn

    from pipeline.stores import Stores
    from pipeline.train import History, Member
    from pipeline.trials import Hooks, TrialOutcome
    from pipeline.tune import TuneResult, TuningJob

JOB, DATA = "worker/job.json", "worker/data.npz"
Progress = Callable[[str], None]


def tune_by_workers(study: optuna.Study, job: TuningJob, run: records.FamilyRun, where: Stores, workers: int,
                    progress: Progress) -> TuneResult:  # fmt: skip
    """The study's trials run by worker processes (`workers` of them started here, any number
    elsewhere); the best trial's model back from MLflow. Returns what `tune.tune` returns."""
    from optuna.trial import TrialState

    from pipeline.tune import TuneResult

    start = time.perf_counter()
    publish(run, study.study_name, job, Path(run.source.path))
    progress(f"[{run.name}] waiting for workers: python -m pipeline worker --parent {run.parent_id} "
             f"(with MLFLOW_TRACKING_URI={redact(where.tracking_uri)} and OPTUNA_STORAGE set as here)")  # fmt: skip
    processes = start_local(workers, run.parent_id, where)
    try:
        wait(study, job.n_trials, processes, progress, run.name)
    except BaseException:  # the stage fails (or is stopped): its own workers stop with it
        for process in processes:
            process.terminate()
        raise
    finally:
        for process in processes:
            process.wait()
    if ended := end_stale_runs(study, where.tracking_uri, run.parent_id):
        progress(f"[{run.name}] {ended} trial run(s) that workers which died left RUNNING were ended")
    # Once the study is complete every worker is idle (none holds a running trial) and logs its best
    # model within seconds of its next look; local ones have exited already. A minute is ample.
    patience_s = 30 if processes else 60
    trial, model, member, history = collect(study, where.tracking_uri, patience_s,
                                            lambda t: retrain(t, job, run, progress))  # fmt: skip
    states = [t.state for t in study.get_trials(deepcopy=False)]
    from pipeline.space import trial_params

    return TuneResult(
        best_params=trial_params(trial),
        best_value=trial.value,
        best_trial=trial.number,
        model=model,
        spec=member.spec,
        settings=member.settings,
        history=history,
        n_complete=states.count(TrialState.COMPLETE),
        n_pruned=states.count(TrialState.PRUNED),
        seconds=time.perf_counter() - start,
    )


def publish(run: records.FamilyRun, study_name: str, job: TuningJob, data_path: Path) -> None:
    """Put what a worker needs under the parent run."""
    tracker = run.target.tracker()
    published = {"study": study_name, "dataset": run.source.name, "md5": run.source.md5, "job": job.to_json()}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "job.json").write_text(json.dumps(published, indent=2))
        (Path(tmp) / "data.npz").write_bytes(Path(data_path).read_bytes())
        for name in ("job.json", "data.npz"):
            tracker.client.log_artifact(run.parent_id, str(Path(tmp) / name), artifact_path="worker")


def start_local(n: int, parent_id: str, where: Stores) -> list[subprocess.Popen]:
    """N worker processes here, each in a directory of its own (they need no shared disk)."""
    processes = []
    for _ in range(n):
        home = tempfile.mkdtemp(prefix="equations-worker-")
        command = [sys.executable, "-m", "pipeline", "worker", "--parent", parent_id]
        # The store URLs go in the environment, not argv: `ps` shows any user a command line.
        env = os.environ | {"MLFLOW_TRACKING_URI": where.tracking_uri, "OPTUNA_STORAGE": where.optuna_url}
        processes.append(subprocess.Popen(command, cwd=home, env=env))
    return processes


def wait(study: optuna.Study, n_trials: int, processes: list[subprocess.Popen], progress: Progress, name: str,
         poll_s: float = 1.0) -> None:  # fmt: skip
    """Until the study holds `n_trials` finished trials; an error if every local worker has exited
    before that (with no local workers, it waits for workers elsewhere)."""
    from optuna.trial import TrialState

    shown = -1
    while True:
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
        if finished != shown:
            progress(f"[{name}] {finished} of {n_trials} trials finished by the workers")
            shown = finished
        if finished >= n_trials:
            return
        if processes and all(p.poll() is not None for p in processes):
            codes = [p.returncode for p in processes]
            raise RuntimeError(f"[{name}] every worker exited (codes {codes}) with {finished} of {n_trials} trials")
        time.sleep(poll_s)


Collected = tuple["optuna.trial.FrozenTrial", "nn.Module", "Member", "History"]


def collect(study: optuna.Study, tracking_uri: str, patience_s: float,
            retrain: Callable[[optuna.trial.FrozenTrial], Collected]) -> Collected:  # fmt: skip
    """The best trial's model, from the run its worker logged it to: (trial, model, member, history).
    A worker that died after its trial ended never logs it: after `patience_s`, `retrain` it."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    trial = study.best_trial
    run_id = trial.user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri)
    # Its worker logs the model as it stops, which may be just after the last trial was told. The
    # digests come from the study, not from the run's tags: whoever may write the run's artifacts
    # (on the tracking server) may write its tags too, but not the study's database.
    key = model_key(trial.number)
    digests = _wait_for(lambda: study.user_attrs.get(key), patience_s)
    if digests is None:
        return retrain(trial)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(run_id, "model", tmp))
        model = model_files.load(folder, digests, f"trial {trial.number} (run {run_id})")
        member, history = model_files.read_member(folder)
    return trial, model, member, history


def model_key(number: int) -> str:
    """The study's user attribute holding the digests of the model a worker logged for trial `number`."""
    return f"model_sha256.trial-{number}"


def end_stale_runs(study: optuna.Study, tracking_uri: str, parent_id: str) -> int:
    """End the MLflow runs that dead workers left RUNNING (whatever host they were on: the study's
    trial states are the word of Optuna's heartbeats): KILLED for a trial that failed (it was
    retried); for a trial that finished before its worker died, its record completed from the
    study (params, val_mse, the per-epoch validation curve) and FINISHED. Returns how many."""
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    client, ended = MlflowClient(tracking_uri), 0
    running = _running_children(client, parent_id)  # one search, not one read per trial
    for run_id, held in _holders(study, running).items():
        if any(t.state == TrialState.RUNNING for t in held):  # its worker is alive and ends it
            continue
        done = next((t for t in held if t.state in (TrialState.COMPLETE, TrialState.PRUNED)), None)
        if done is None:  # failed, and retried (or its retry never ran: the count was reached)
            client.set_tag(run_id, "ended_by", "its worker stopped beating: the trial failed and was retried")
            client.set_terminated(run_id, "KILLED")
        else:
            _complete_from_study(client, run_id, done)
        ended += 1
    return ended


def _holders(study: optuna.Study, running: dict[str, int]) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """For each RUNNING run, the trials it records: those naming it (a failed trial and its retry
    share one), or, when none does, the failed trial its `trial` tag names: its worker opened the
    run and stopped (killed, or paused past the grace) before naming it on the trial."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    holders: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id in running and not trial.user_attrs.get("surplus"):
            holders.setdefault(run_id, []).append(trial)
    failed = {t.number: t for t in trials if t.state == TrialState.FAIL}
    for run_id, number in running.items():
        if run_id not in holders and number in failed:
            holders[run_id] = [failed[number]]
    return holders


def _running_children(client: MlflowClient, parent_id: str) -> dict[str, int]:
    """The parent run's nested runs that are RUNNING: run id -> the trial number it was opened for."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}' and attributes.status = 'RUNNING'"
    runs = every_run(client, experiment_id, query)
    return {run.info.run_id: int(run.data.tags.get("trial", -1)) for run in runs}


def _complete_from_study(client: MlflowClient, run_id: str, trial: optuna.trial.FrozenTrial) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    curve = [Metric("val_loss", float(v), now, step) for step, v in sorted(trial.intermediate_values.items())]
    value = [Metric("val_mse", float(trial.value), now, 0)] if trial.value is not None else []
    why = "its worker died after the trial ended: recorded by the stage from the study"
    tags = [RunTag("optuna_state", trial.state.name), RunTag("ended_by", why)]
    params = [Param(k, str(v)) for k, v in trial.params.items()]
    client.log_batch(run_id, metrics=(value + curve)[:1000], params=params, tags=tags)
    client.set_terminated(run_id, "FINISHED")


def _wait_for(check: Callable[[], object], timeout_s: float) -> object:
    """`check()` once it is true, or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            return None
        time.sleep(1.0)
    return result


def retrain(trial: optuna.trial.FrozenTrial, job: TuningJob, run: records.FamilyRun, progress: Progress) -> Collected:
    """The best trial trained again here, from its params and seed (its worker died before logging
    its model): the same member the worker trained, on the dataset the stage published."""
    import optuna

    from pipeline import data as datasets
    from pipeline.space import suggest
    from pipeline.train import Tensors, fit

    progress(f"[{run.name}] trial {trial.number}'s worker logged no model (it died): training it again here")
    retried = optuna.storages.RetryFailedTrialCallback.retried_trial_number(trial)
    number = trial.number if retried is None else retried  # a retry trains from the seed it retries
    member = suggest(trial, job.space, job.spec, job.seed + number)
    dataset = datasets.load(Path(run.source.path), run.source.md5)
    tensors = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, job.device,
                                  job.standardize)  # fmt: skip
    [trained] = fit([member], tensors)
    return trial, trained.model.cpu().eval(), member, trained.history


def work(parent_id: str, tracking_uri: str, storage_url: str, progress: Progress = print) -> int:
    """`python -m pipeline worker`: join the parent run's study until it is done; returns how
    many trials this worker finished."""
    import optuna
    from mlflow import MlflowClient

    from pipeline import data as datasets
    from pipeline import shared_study, stores
    from pipeline.takeover import TrialTakenOver
    from pipeline.tracking import source_tags
    from pipeline.train import Tensors
    from pipeline.tune import TuningJob, make_pruner

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a log line per trial, no bars
    if tracking_uri.startswith(("http://", "https://")):
        stores.reach_server(tracking_uri)  # seconds, not MLflow's minutes of retries, if nobody answers
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    experiment = client.get_experiment(parent.info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        published = json.loads(Path(client.download_artifacts(parent_id, JOB, tmp)).read_text())
        dataset = datasets.load(Path(client.download_artifacts(parent_id, DATA, tmp)), published["md5"])
    job = TuningJob.from_json(published["job"])
    storage = shared_study.worker_storage(storage_url)
    try:
        study = optuna.load_study(
            study_name=published["study"],
            storage=storage,
            sampler=optuna.samplers.TPESampler(constant_liar=True),  # unseeded: workers must not propose alike
            pruner=make_pruner(job.settings),
        )
    except KeyError:
        raise stores.StoreError(f"Optuna storage {redact(storage_url)}: no study {published['study']!r} there; "
                                "OPTUNA_STORAGE must be the database the tuning stage uses") from None  # fmt: skip
    tags = {"dataset": published["dataset"], "model": job.spec.family, "worker": "yes"}
    tags = source_tags() | liveness.owner() | tags
    source = DatasetRef(published["dataset"], published["md5"], f"mlflow-artifacts: run {parent_id} {DATA}")
    run = records.FamilyRun(Target(tracking_uri, experiment, tags), parent_id, source)
    trials = _WorkerTrials(client, study, run, progress)
    import torch  # noqa: F401 (before `threads.limit`, which sets the threads of the loaded libraries)

    threads.limit(job.threads)  # one core a worker: several workers share a machine
    tensors = Tensors.from_arrays(
        dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, job.device, job.standardize
    )
    try:
        best = shared_study.join(study, job, tensors, trials.hooks())
    except TrialTakenOver as exc:  # this worker was away too long: the study went on without it
        progress(f"[{run.name}] {exc} while this worker was away (paused or cut off): it stops here")
        best = exc.best  # its earlier trials stand: the best of them may be the study's best
        trials.end_unnamed()
    except shared_study.StudyAbandoned as exc:
        progress(f"[{run.name}] {exc}: this worker stops")
        return len(trials.done)
    if best is not None:
        number, member, trained = best
        digests = _log_model(run.target, trials.runs[number], trained.model, member, trained.history)
        study.set_user_attr(model_key(number), digests)
    return len(trials.done)


class _WorkerTrials:
    """A worker's record of its trials: a nested run each, opened as the trial is asked."""

    def __init__(self, client: MlflowClient, study: optuna.Study, run: records.FamilyRun, progress: Progress) -> None:
        self.client, self.study, self.run, self.progress = client, study, run, progress
        self.runs: dict[int, str] = {}
        self.done: list[int] = []

    def hooks(self) -> Hooks:
        from pipeline.trials import Hooks

        return Hooks(on_trial=self.on_trial, on_ask=self.on_ask, stop=self.stage_gone)

    def stage_gone(self) -> str | None:
        """Why to stop: the parent run ended before the study was done (its stage failed or was stopped)."""
        status = self.client.get_run(self.run.parent_id).info.status
        return None if status == "RUNNING" else f"the stage's parent run {self.run.parent_id} ended {status}"

    def on_ask(self, asked: list[optuna.Trial]) -> Callable[[int], dict]:
        from pipeline.trials import retried_numbers

        name, parent_id = self.run.name, self.run.parent_id
        for trial, original in zip(asked, retried_numbers(self.study, asked), strict=True):
            number, previous = trial.number, trial.user_attrs.get("mlflow_run_id")
            if previous:  # a retry of a trial whose worker died: it takes over that trial's run
                self.client.update_run(previous, status="RUNNING", name=f"{name}/trial-{number}")
                tags = {"trial": str(number), "retry_of_trial": str(original)} | liveness.owner()
                for key, value in tags.items():  # the worker that trains it now, not the one that died
                    self.client.set_tag(previous, key, value)
                self.runs[number] = previous
            else:
                tags = {"trial": str(number)}
                self.runs[number] = records.open_run(self.run.target, f"{name}/trial-{number}", tags, parent_id,
                                                     self.run.source)  # fmt: skip
        # Which worker trains each trial, on the trial too (optuna-dashboard shows its attributes).
        owner = liveness.owner()
        return lambda number: {"mlflow_run_id": self.runs[number]} | owner

    def end_unnamed(self) -> None:
        """End KILLED the runs this worker opened for trials failed elsewhere before it named the run
        on them (it was away between the two): no retry takes such a run over, no trial leads to it."""
        from optuna.trial import TrialState

        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for number, run_id in self.runs.items():
            trial = trials.get(number)
            if trial is None or trial.state != TrialState.FAIL or trial.user_attrs.get("mlflow_run_id") == run_id:
                continue
            self.client.set_tag(run_id, "ended_by", "its worker was away: the trial was failed and retried")
            self.client.set_terminated(run_id, "KILLED")
            self.progress(f"[{self.run.name}] trial {number}'s run ended KILLED (the trial was retried)")

    def on_trial(self, outcome: TrialOutcome) -> None:
        records.record_trial(self.run.target, self.runs[outcome.number], outcome)
        self.done.append(outcome.number)
        self.progress(f"[{self.run.name}] trial {outcome.number} {outcome.state.lower()} ({len(self.done)} here)")


def _log_model(target: Target, run_id: str, model: nn.Module, member: Member, history: History) -> dict[str, str]:
    """The worker's best model on its trial's run: the model directory and its SHA-256 (returned)."""
    tracker = target.tracker()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_files.write(folder, model, member, model.n_features)
        model_files.write_history(folder, history)
        for name in (model_files.WEIGHTS, model_files.SPEC, model_files.HISTORY):
            tracker.client.log_artifact(run_id, str(folder / name), artifact_path="model")
        digests = model_files.digests(folder)
        tracker.log(run_id, tags=digests)
        return digests
