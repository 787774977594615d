"""Beyond one machine, with the real engines: a throwaway PostgreSQL cluster (initdb, pg_ctl) for
the Optuna study and the MLflow backend store, a real `mlflow server` with proxied artifacts, and
three `python -m pipeline worker` processes in directories of their own (no shared disk: they
get the job and the dataset from the tracking server). One worker is killed with SIGKILL in the
middle of its trials; the study still ends with exactly its n_trials finished trials.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import BIN, shrink
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_prefect_server import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import throwaway  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.slow
N_TRIALS = 24


SECRET = "s3cret-Pw-4711"  # the database password: it must appear in no store and no output


@pytest.fixture(scope="module")
def postgres():
    """A throwaway cluster on 127.0.0.1, a free port, a temp dir; databases `optuna` and `mlflow`;
    every connection needs the password."""
    with throwaway.postgres(password=SECRET) as url:
        yield url


@pytest.fixture(scope="module")
def tracking(postgres):
    """`mlflow server` on PostgreSQL with proxied artifacts, on loopback; the database password in
    its environment (PGPASSWORD), not on its command line."""
    with throwaway.mlflow_server(f"{postgres}/mlflow", env={"PGPASSWORD": SECRET}) as url:
        yield url


def running_trials(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_three_workers_on_postgres_and_a_tracking_server_survive_a_kill(
    postgres, tracking, tmp_path, default_params_raw
):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(Path(__file__).resolve().parents[1] / "pipeline", repo / "pipeline")
    params = shrink(default_params_raw, datasets=("product",))
    mlp = params["tuning"]["mlp"]
    mlp.update(n_trials=N_TRIALS, trials_per_batch=4)
    mlp["pruner"]["name"] = "none"
    mlp["space"].update(epochs={"low": 300, "high": 400}, width=[16], depth=[2])
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    # The password in the URL, as users write it: the stage and the workers must not spread it.
    storage = f"{postgres}/optuna".replace("postgres@", f"postgres:{SECRET}@")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    env |= {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": tracking,
            "OPTUNA_STORAGE": storage}  # fmt: skip
    generate = ["python", "-m", "pipeline", "generate", "--dataset", "product", "--out", "data/product.npz",
                "--meta", "data/product.json"]  # fmt: skip
    subprocess.run(generate, cwd=repo, env=env, check=True, capture_output=True)
    tune = ["python", "-m", "pipeline", "tune", "--dataset", "product", "--models", "mlp", "--data",
            "data/product.npz", "--models-dir", "models", "--metrics-dir", "metrics", "--plots-dir", "plots",
            "--workers", "0"]  # fmt: skip
    coordinator = subprocess.Popen(tune, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)  # fmt: skip
    lines: list[str] = []
    for line in coordinator.stdout:  # until it says which parent run the workers join
        lines.append(line)
        if match := re.search(r"worker --parent ([0-9a-f]{32})", line):
            parent_id = match.group(1)
            break
    else:
        pytest.fail("the tune stage never asked for workers:\n" + "".join(lines))
    worker = ["python", "-m", "pipeline", "worker", "--parent", parent_id]  # the stores from the environment
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    workers = [
        subprocess.Popen(
            worker,
            cwd=tmp_path.joinpath(f"w{i}").mkdir() or tmp_path / f"w{i}",
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i, log in enumerate(logs)
    ]
    study_name = study_name_of(parent_id)
    study = optuna.load_study(study_name=study_name, storage=storage)
    client = MlflowClient(tracking)

    def busy_worker():
        """A worker with trials running: found through the trial's MLflow run and its owner pid."""
        for trial in running_trials(study):
            if run_id := trial.user_attrs.get("mlflow_run_id"):
                pid = int(client.get_run(run_id).data.tags["owner.pid"])
                return next((w for w in workers if w.pid == pid), None)
        return None

    victim = wait_for(busy_worker, 180, "a worker in the middle of its trials", interval=0.2)
    victim.send_signal(signal.SIGKILL)  # mid-batch: its trials stop beating
    output, _ = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, "".join(lines) + output
    for process in workers:
        if process is not victim:
            assert process.wait(timeout=120) == 0

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert len(finished) == N_TRIALS and not running_trials(study)
    assert failed, "the killed worker had trials running"
    # Each failed trial was retried; a retry still waiting when the count was reached is never run.
    retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None and t.state != TrialState.FAIL]
    assert {t.system_attrs["failed_trial"] for t in retries} == {t.number for t in failed}
    assert {t.state for t in retries} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING}

    experiment = client.get_experiment_by_name("equations")
    nested = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=500)
    by_status: dict[str, int] = {}
    for run in nested:
        by_status[run.info.status] = by_status.get(run.info.status, 0) + 1
    assert by_status.get("RUNNING", 0) == 0
    # One run per finished trial: a retried trial took over the run of the trial whose worker died.
    assert by_status == {"FINISHED": N_TRIALS} and len(nested) == N_TRIALS
    assert sorted(int(run.data.tags["trial"]) for run in nested) == sorted(t.number for t in finished)
    assert client.get_run(parent_id).info.status == "FINISHED"
    # The stage's DVC outputs have the shape of a one-process run's.
    assert sorted(p.name for p in (repo / "models" / "product-mlp").iterdir()) == [
        "loss_curve.png", "model.pt", "predictions.png", "slice.png", "spec.json"
    ]  # fmt: skip
    assert (repo / "metrics" / "product-mlp.json").exists() and (repo / "plots" / "loss" / "product-mlp.csv").exists()
    # The password is nowhere: not in what the stage and the workers printed, not in either
    # database (every table, dumped), not in the stage's outputs.
    said = "".join(lines) + output + "".join(log.read_text() for log in logs)
    assert "OPTUNA_STORAGE" in said and SECRET not in said
    for database in ("mlflow", "optuna"):
        assert SECRET not in dump(postgres, database), f"the password is stored in the {database} database"
    assert not [p for p in repo.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def study_name_of(parent_id: str) -> str:
    from pipeline.tuning import study_name

    return study_name("equations", "product/mlp", parent_id)


def dump(url_prefix: str, database: str) -> str:
    """Every table of `database` as text (pg_dump --data-only)."""
    port = url_prefix.rsplit(":", 1)[1]
    command = [throwaway.pg_bin("pg_dump"), "--data-only", "-h", "127.0.0.1", "-p", port, "-U", "postgres", database]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PGPASSWORD": SECRET}, check=True)
    assert "COPY public." in done.stdout  # it did dump the tables
    return done.stdout
