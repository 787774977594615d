"""Beyond one machine: tuning workers that share nothing but the two stores.

The stage that starts a tuning (`tune --workers N`, or with workers started anywhere else) opens
the parent MLflow run and the Optuna study as usual, and publishes under the parent run what a
worker needs: `worker/job.json` (study, model family, search space, budget) and the dataset file
with its DVC hash. A worker (`python -m pipeline worker --parent RUN_ID`, in any directory, on any
machine that reaches the tracking server and the study's database) downloads both, checks the
hash, joins the study (`tune.join`: batches, heartbeats, failed trials retried) and logs each
trial as a nested run under the parent, over HTTP when MLflow is a server. When it stops, it logs
its best model (weights and spec, with their SHA-256) to that trial's run. The stage waits until
the study holds exactly its `n_trials` finished trials, takes the best trial's model from MLflow
(checked, without pickle) and writes the DVC outputs as a one-process run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

JOB, DATA = "worker/job.json", "worker/data.npz"


def publish(target, parent_id: str, job: dict, data_path: Path) -> None:
    """Put what a worker needs under the parent run (runs in the recorder process)."""
    tracker = target.tracker()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "job.json").write_text(json.dumps(job, indent=2))
        (Path(tmp) / "data.npz").write_bytes(Path(data_path).read_bytes())
        for name in ("job.json", "data.npz"):
            tracker.client.log_artifact(parent_id, str(Path(tmp) / name), artifact_path="worker")


def start_local(n: int, parent_id: str, tracking_uri: str, storage_url: str) -> list[subprocess.Popen]:
    """N worker processes here, each in a directory of its own (they need no shared disk)."""
    processes = []
    for _ in range(n):
        home = tempfile.mkdtemp(prefix="equations-worker-")
        command = [sys.executable, "-m", "pipeline", "worker", "--parent", parent_id]
        command += ["--tracking-uri", tracking_uri, "--storage", storage_url]
        processes.append(subprocess.Popen(command, cwd=home))
    return processes


def wait(study, n_trials: int, processes: list[subprocess.Popen], progress, name: str, poll_s: float = 1.0) -> None:
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


def job(study_id: str, dataset: str, md5: str, spec, space, settings, tuning, device: str, threads: int) -> dict:
    """What a worker needs to know of a tuning (published as worker/job.json)."""
    return {
        "study": study_id,
        "dataset": dataset,
        "md5": md5,
        "spec": asdict(spec),
        "space": asdict(space),
        "settings": asdict(settings),
        "n_trials": tuning.n_trials,
        "batch": tuning.trials_per_batch,
        "seed": tuning.sampler_seed,
        "device": device,
        "threads": threads,
    }


def collect(study, tracking_uri: str):
    """The best trial's model, from the run its worker logged it to: (trial, model, spec, history)."""
    from mlflow import MlflowClient

    from pipeline import loading

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    trial = study.best_trial
    run_id = trial.user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri)
    # Its worker logs the model as it stops, which may be just after the last trial was told.
    tags = _wait_for(lambda: (t := client.get_run(run_id).data.tags).get("spec_sha256") and t, 300, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(run_id, "model", tmp))
        model = loading.load_dir(folder, tags, f"trial {trial.number} (run {run_id})")
        spec = json.loads((folder / "spec.json").read_text())
        history = json.loads((folder / "history.json").read_text())
    return trial, model, spec, history


def end_stale_runs(study, tracking_uri: str) -> int:
    """End KILLED the MLflow runs of trials that failed because their worker stopped beating (the
    trial's FAIL in the study is the word of Optuna's heartbeat, whatever host the worker was on)."""
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    client, ended = MlflowClient(tracking_uri), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and not trial.user_attrs.get("surplus") and client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "ended_by", "its worker stopped beating: the trial failed and was retried")
            client.set_terminated(run_id, "KILLED")
            ended += 1
    return ended


def _wait_for(check, timeout_s: float, run_id: str):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id}: its worker logged no model within {timeout_s:.0f} s")
        time.sleep(1.0)
    return result


def work(parent_id: str, tracking_uri: str, storage_url: str, progress=print) -> int:
    """`python -m pipeline worker`: join the parent run's study until it is done; returns how
    many trials this worker finished."""
    import optuna
    from mlflow import MlflowClient

    from pipeline import data as datasets
    from pipeline import liveness, tune
    from pipeline.models import ModelSpec
    from pipeline.stages import open_run, record_trial
    from pipeline.tracking import Target, source_tags
    from pipeline.train import Tensors

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a log line per trial, no bars
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    experiment = client.get_experiment(parent.info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        job = json.loads(Path(client.download_artifacts(parent_id, JOB, tmp)).read_text())
        dataset = datasets.load(Path(client.download_artifacts(parent_id, DATA, tmp)), job["md5"])
    spec = ModelSpec(job["spec"]["family"], tuple(job["spec"]["terms"]), job["spec"]["depth"], job["spec"]["width"])
    space = tune.SearchSpace(
        lr=tune.FloatSpace(**job["space"]["lr"]),
        epochs=tune.IntSpace(**job["space"]["epochs"]),
        batch_size=tuple(job["space"]["batch_size"]),
        optimizer=tuple(job["space"]["optimizer"]),
        width=tuple(job["space"]["width"]) if job["space"]["width"] else None,
        depth=tuple(job["space"]["depth"]) if job["space"]["depth"] else None,
    )
    settings = tune.StudySettings(**job["settings"])
    study = optuna.load_study(
        study_name=job["study"],
        storage=tune.worker_storage(storage_url),
        sampler=optuna.samplers.TPESampler(constant_liar=True),  # unseeded: workers must not propose alike
        pruner=tune.make_pruner(settings),
    )
    tags = source_tags() | liveness.owner() | {"dataset": job["dataset"], "model": spec.family, "worker": "yes"}
    target = Target(tracking_uri, experiment, tags)
    source = (job["dataset"], job["md5"], f"mlflow-artifacts: run {parent_id} {DATA}")
    name = f"{job['dataset']}/{spec.family}"
    runs: dict[int, str] = {}
    done = []

    def on_ask(asked):
        for trial in asked:
            number, previous = trial.number, trial.user_attrs.get("mlflow_run_id")
            if previous:  # a retry of a trial whose worker died: it takes over that trial's run
                client.update_run(previous, status="RUNNING", name=f"{name}/trial-{number}")
                client.set_tag(previous, "trial", str(number))
                client.set_tag(previous, "retry_of_trial", str(tune.retried_from(study, trial)))
                runs[number] = previous
            else:
                runs[number] = open_run(target, f"{name}/trial-{number}", {"trial": str(number)}, parent_id, source)
        return lambda number: {"mlflow_run_id": runs[number]}

    def on_trial(outcome):
        record_trial(target, runs[outcome.number], outcome)
        done.append(outcome.number)
        progress(f"[{name}] trial {outcome.number} {outcome.state.lower()} ({len(done)} here)")

    import torch

    torch.set_num_threads(job["threads"])  # one core a worker: several workers share a machine
    tensors = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, job["device"])
    best = tune.join(study, spec, tensors, space, job["n_trials"], job["seed"], on_trial, job["batch"], on_ask)
    if best is not None:
        number, member, trained = best
        _log_model(target, runs[number], trained, member, dataset.n_features)
    return len(done)


def _log_model(target, run_id: str, trained, member, n_features: int) -> None:
    """The worker's best model on its trial's run: weights, spec, curves, and their SHA-256."""
    import torch

    from pipeline import loading

    tracker = target.tracker()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(trained.model.state_dict(), folder / "model.pt")
        spec = asdict(member.spec) | {"n_features": n_features, "settings": asdict(member.settings)}
        (folder / "spec.json").write_text(json.dumps(spec, indent=2))
        history = {"train_loss": trained.history.train_loss, "val_loss": trained.history.val_loss}
        (folder / "history.json").write_text(json.dumps(history))
        for name in ("model.pt", "spec.json", "history.json"):
            tracker.client.log_artifact(run_id, str(folder / name), artifact_path="model")
        tracker.log(run_id, tags=loading.digests(folder))
