"""Beyond one machine, with the real engines: a throwaway PostgreSQL cluster (initdb, pg_ctl) for
the Optuna study and the MLflow backend store, a real `mlflow server` with proxied artifacts and
MLflow's basic authentication (a user for the stage, one for the workers), and three `python -m
pipeline worker` processes in directories of their own (no shared disk: they get the job and the
dataset from the tracking server). One worker is killed with SIGKILL in the middle of its trials,
one is paused past the heartbeat grace and resumed, the database restarts: the study still ends
with exactly its n_trials finished trials. Then the database goes away for 30 s during tunings,
within the bound (waited out) and beyond it (one line, previous outputs intact, workers gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import BIN, shrink
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_prefect_server import wait_for

from pipeline.study_storage import optuna_storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mlflow_users  # noqa: E402  (tools/ is not a package)
import throwaway  # noqa: E402

pytestmark = pytest.mark.slow
N_TRIALS = 24


SECRET = "s3cret-Pw-4711"  # the database password: it must appear in no store and no output
# The MLflow users of the docs' set-up (tools/mlflow_users.py), with their passwords.
STAGE, WORKER = (mlflow_users.STAGE, "stage-Pw-0815-xyz"), (mlflow_users.WORKER, "worker-Pw-4242-abc")


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
    with throwaway.mlflow_server(f"{postgres}/mlflow", env={"PGPASSWORD": SECRET}, users=dict([STAGE, WORKER])) as url:
        # As the docs' step 2b: the experiment, managed by the stage's user, written by the workers'.
        mlflow_users.make_experiment(url, throwaway.ADMINS[url])
        yield url


def running_trials(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def stage_env(tracking: str, storage: str, user: tuple[str, str]) -> dict[str, str]:
    """What a machine of the docs' set-up exports: the two stores, and its MLflow user."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    return env | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": tracking,
                  "OPTUNA_STORAGE": storage, "MLFLOW_TRACKING_USERNAME": user[0],
                  "MLFLOW_TRACKING_PASSWORD": user[1]}  # fmt: skip


def start_stage(repo: Path, env: dict, workers: int, n_trials: int) -> tuple[subprocess.Popen, list[str], str]:
    """Generate `product` and start its MLP tuning with `workers` local workers; returns the stage's
    process, its output so far and the parent run id it asks workers to join."""
    shutil.copytree(Path(__file__).resolve().parents[1] / "pipeline", repo / "pipeline", dirs_exist_ok=True)
    params = shrink(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text()),
                    datasets=("product",))  # fmt: skip
    mlp = params["tuning"]["mlp"]
    mlp.update(n_trials=n_trials, trials_per_batch=4)
    mlp["pruner"]["name"] = "none"
    mlp["space"].update(epochs={"low": 300, "high": 400}, width=[16], depth=[2])
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    generate = ["python", "-m", "pipeline", "generate", "--dataset", "product", "--out", "data/product.npz",
                "--meta", "data/product.json"]  # fmt: skip
    subprocess.run(generate, cwd=repo, env=env, check=True, capture_output=True)
    tune = ["python", "-m", "pipeline", "tune", "--dataset", "product", "--models", "mlp", "--data",
            "data/product.npz", "--models-dir", "models", "--metrics-dir", "metrics", "--plots-dir", "plots",
            "--workers", str(workers)]  # fmt: skip
    stage = subprocess.Popen(tune, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    for line in stage.stdout:  # until it says which parent run the workers join
        lines.append(line)
        if match := re.search(r"worker --parent ([0-9a-f]{32})", line):
            return stage, lines, match.group(1)
    pytest.fail("the tune stage never asked for workers:\n" + "".join(lines))


def test_three_workers_on_postgres_and_an_authenticated_server_survive_a_kill_a_pause_and_a_restart(
    postgres, tracking, tmp_path, request
):
    repo = tmp_path / "repo"
    repo.mkdir()
    # The password in the URL, as users write it: the stage and the workers must not spread it.
    storage = f"{postgres}/optuna".replace("postgres@", f"postgres:{SECRET}@")
    env = stage_env(tracking, storage, STAGE)
    coordinator, lines, parent_id = start_stage(repo, env, 0, N_TRIALS)
    worker = ["python", "-m", "pipeline", "worker", "--parent", parent_id]  # the stores from the environment
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    workers = [
        subprocess.Popen(
            worker,
            cwd=tmp_path.joinpath(f"w{i}").mkdir() or tmp_path / f"w{i}",
            env=stage_env(tracking, storage, WORKER),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i, log in enumerate(logs)
    ]
    # A failure midway must not leave processes behind (a SIGSTOPped worker would wait forever).
    request.addfinalizer(lambda: [p.kill() for p in (coordinator, *workers) if p.poll() is None])
    # The test's own view of the study rides out the database's restart as the pipeline's do.
    study = optuna.load_study(study_name=study_name_of(parent_id), storage=optuna_storage(storage))
    with mlflow_users.as_user(STAGE):
        client = MlflowClient(tracking)

        def busy_worker(but: tuple = ()):
            """A worker with trials running: found through the trial's MLflow run and its owner pid."""
            for trial in running_trials(study):
                if run_id := trial.user_attrs.get("mlflow_run_id"):
                    pid = int(client.get_run(run_id).data.tags["owner.pid"])
                    found = next((w for w in workers if w.pid == pid and w not in but), None)
                    if found:
                        return found
            return None

        # Killed right after its first trial is told: that trial's MLflow run is still being written
        # (or not yet ended), and the rest of its batch is still training (they stop beating).
        first = wait_for(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), 180,
                         "a trial told COMPLETE", interval=0.01)[0]  # fmt: skip
        victim = next(w for w in workers if w.pid == int(first.user_attrs["owner.pid"]))
        victim.send_signal(signal.SIGKILL)

        def held_by(process) -> set[int]:
            return {
                t.number
                for t in running_trials(study)
                if "mlflow_run_id" in t.user_attrs
                and client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["owner.pid"] == str(process.pid)
            }

        # Paused past the heartbeat grace (20 s) while holding trials: they are retried elsewhere. A
        # worker that finished its batch between being found busy and stopped holds none: it is
        # resumed and the pause tried again.
        for _ in range(50):
            sleeper = wait_for(lambda: busy_worker((victim,)), 180, "another worker mid-trials", interval=0.2)
            sleeper.send_signal(signal.SIGSTOP)
            if paused := held_by(sleeper):
                break
            sleeper.send_signal(signal.SIGCONT)
        assert paused, "no worker could be paused while holding trials"
        throwaway.pg_ctl(postgres, "restart")  # a database blip under everyone
        # Failed once the grace is over and another worker looks (between its batches): only then resume.
        try:
            wait_for(lambda: all(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False)
                                 if t.number in paused), 300, "the paused worker's trials failed")  # fmt: skip
        except TimeoutError:
            states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
            tails = "\n".join(f"--- worker {i}\n{log.read_text()[-2000:]}" for i, log in enumerate(logs))
            raise AssertionError(f"paused {sorted(paused)}; trials {states}\n{tails}") from None
        sleeper.send_signal(signal.SIGCONT)
        output, _ = coordinator.communicate(timeout=600)
        assert coordinator.returncode == 0, "".join(lines) + output
        for process in workers:
            if process is not victim:
                assert process.wait(timeout=120) == 0, logs[workers.index(process)].read_text()[-3000:]
        # The resumed worker stopped cleanly, saying why, and wrote nothing into the retried trials.
        assert "was retried by another worker" in logs[workers.index(sleeper)].read_text()

        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
        assert len(finished) == N_TRIALS and not running_trials(study)
        assert len(failed) >= 2, "the killed and the paused worker had trials running"
        assert not [t.number for t in failed if t.intermediate_values], "curves written into failed trials"
        # Each failed trial was retried; a retry still waiting when the count was reached is never run.
        retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None and t.state != TrialState.FAIL]
        assert {t.system_attrs["failed_trial"] for t in retries} <= {t.number for t in failed}

        experiment = client.get_experiment_by_name("equations")
        nested = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                    max_results=500)  # fmt: skip
        by_status: dict[str, int] = {}
        for run in nested:
            by_status[run.info.status] = by_status.get(run.info.status, 0) + 1
        # One run per finished trial (a retry takes over the run of the trial it retries); the run of
        # a failed trial whose retry never ran ended KILLED; none RUNNING.
        assert by_status.get("RUNNING", 0) == 0 and by_status["FINISHED"] == N_TRIALS, by_status
        killed = {int(run.data.tags["trial"]) for run in nested if run.info.status == "KILLED"}
        assert killed <= {t.number for t in failed}
        assert sorted(int(r.data.tags["trial"]) for r in nested if r.info.status == "FINISHED") == sorted(
            t.number for t in finished
        )
        # A retried run names the worker that trained it, not the one that died.
        for run in nested:
            if run.info.status == "FINISHED" and "retry_of_trial" in run.data.tags:
                assert int(run.data.tags["owner.pid"]) in {w.pid for w in workers if w is not victim}
        # The run of the trial its worker had just told: complete, by the worker or else by the stage.
        told = client.get_run(first.user_attrs["mlflow_run_id"])
        assert told.info.status == "FINISHED" and told.data.metrics["val_mse"] == pytest.approx(first.value)
        assert client.get_run(parent_id).info.status == "FINISHED"
    # The stage's DVC outputs have the shape of a one-process run's.
    assert sorted(p.name for p in (repo / "models" / "product-mlp").iterdir()) == [
        "loss_curve.png", "model.pt", "predictions.png", "slice.png", "spec.json"
    ]  # fmt: skip
    assert (repo / "metrics" / "product-mlp.json").exists() and (repo / "plots" / "loss" / "product-mlp.csv").exists()
    assert not list(repo.rglob(".*.tmp")), "staged outputs left behind"
    # No password is anywhere: not in what the stage and the workers printed, not in either
    # database (every table, dumped), not in the stage's outputs.
    said = "".join(lines) + output + "".join(log.read_text() for log in logs)
    assert "OPTUNA_STORAGE" in said
    for secret in (SECRET, STAGE[1], WORKER[1]):
        assert secret not in said
        for database in ("mlflow", "optuna"):
            assert secret not in dump(postgres, database), f"a password is stored in the {database} database"
        assert not [p for p in repo.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    check_the_server_guards_the_champion(tracking, parent_id, tmp_path)


def check_the_server_guards_the_champion(tracking: str, parent_id: str, tmp_path: Path) -> None:
    """Anonymous writes are refused; a champion whose weights and tag a worker's account rewrote
    (it may write runs, not the registry) is refused by `load_model`."""
    import httpx
    import torch

    import pipeline
    from pipeline import registry
    from pipeline.model_files import ModelIntegrityError, sha256

    with mlflow_users.as_user(STAGE):
        client = MlflowClient(tracking)
        experiment_id = client.get_run(parent_id).info.experiment_id
    anonymous = [
        httpx.post(f"{tracking}/api/2.0/mlflow/runs/set-tag", json={"run_id": parent_id, "key": "weights_sha256",
                                                                    "value": "0" * 64}),
        httpx.put(f"{tracking}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{parent_id}/artifacts/model.pt",
                  content=b"planted"),
        httpx.post(f"{tracking}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}),
    ]  # fmt: skip
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    with mlflow_users.as_user(STAGE):
        run = client.get_run(parent_id)
        model_uri = f"models:/{run.outputs.model_outputs[0].model_id}"
        os.environ["MLFLOW_TRACKING_URI"] = tracking  # register_model speaks through the fluent API
        try:
            registry.promote(client, "equations-product", registry.Candidate(parent_id, model_uri, 1.0, "mlp"))
            model = pipeline.load_model("models:/equations-product@champion", tracking)
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]
    # The workers' account plants other weights (a valid state_dict) and a tag that matches them.
    planted = tmp_path / "planted" / "model.pt"
    planted.parent.mkdir()
    torch.save({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, planted)
    with mlflow_users.as_user(WORKER):
        worker = MlflowClient(tracking)
        worker.log_artifact(parent_id, str(planted))
        worker.set_tag(parent_id, "weights_sha256", sha256(planted))
        with pytest.raises(Exception, match="403"):  # the registry's record is not the workers' to change
            worker.set_model_version_tag("equations-product", "1", "weights_sha256", sha256(planted))
    with mlflow_users.as_user(STAGE), pytest.raises(ModelIntegrityError, match="changed after promotion"):
        pipeline.load_model("models:/equations-product@champion", tracking)


@pytest.mark.parametrize("bound_s", [None, 8], ids=["outage-within-the-bound", "outage-beyond-the-bound"])
def test_a_30_s_database_outage_is_waited_out_within_the_bound_and_fails_cleanly_beyond_it(
    postgres, tracking, tmp_path, bound_s
):
    repo = tmp_path / "repo"
    # The outputs of an earlier tuning: a failed one must leave them as they were.
    previous = {"models/product-mlp/model.pt": b"earlier weights", "metrics/product-mlp.json": b'{"val_mse": 1}\n',
                "plots/loss/product-mlp.csv": b"epoch,train_loss,val_loss\n0,1,1\n"}  # fmt: skip
    for path, content in previous.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(content)
    storage = f"{postgres}/optuna".replace("postgres@", f"postgres:{SECRET}@")
    env = stage_env(tracking, storage, STAGE) | ({"EQUATIONS_STORE_WAIT_S": str(bound_s)} if bound_s else {})
    stage, lines, parent_id = start_stage(repo, env, 1, 8)
    study = optuna.load_study(study_name=study_name_of(parent_id), storage=optuna_storage(storage))
    wait_for(lambda: running_trials(study), 180, "trials running", interval=0.2)
    throwaway.pg_ctl(postgres, "stop")
    started = time.monotonic()
    try:
        time.sleep(30)
    finally:
        throwaway.pg_ctl(postgres, "start")
    output, _ = stage.communicate(timeout=600)
    said = "".join(lines) + output
    workers_left = subprocess.run(["pgrep", "-f", f"pipeline worker --parent {parent_id}"], capture_output=True)
    assert workers_left.returncode == 1, "a worker outlived its stage"
    if bound_s is None:
        assert stage.returncode == 0, said
        finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 8 and "reachable again" in said
        with mlflow_users.as_user(STAGE):
            assert MlflowClient(tracking).get_run(parent_id).info.status == "FINISHED"
        assert (repo / "models/product-mlp/model.pt").read_bytes() != previous["models/product-mlp/model.pt"]
        return
    assert stage.returncode == 1, said
    assert time.monotonic() - started < 30 + 120, "the stage did not give up within its bound"
    last = said.strip().splitlines()[-1]
    assert re.fullmatch(r"error: Optuna storage postgresql\+psycopg2://postgres:\*\*\*@127\.0\.0\.1:\d+/optuna: "
                        r"unreachable for 8 s: .+", last), last  # fmt: skip
    for path, content in previous.items():
        assert (repo / path).read_bytes() == content, f"{path} changed by a failed tuning"
    assert sorted(p.name for p in (repo / "models/product-mlp").iterdir()) == ["model.pt"]


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


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root (CI runs as root)")
@pytest.mark.parametrize("store", ["server", "local"])
def test_a_full_artifact_disk_fails_the_stage_in_bounded_time_naming_the_cause_and_keeps_the_outputs(tmp_path, store):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "filler").write_bytes(b"")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:  # the disk is full
            filler.write(b"\0" * (2 << 20))
        repo = tmp_path / "repo"
        shutil.copytree(Path(__file__).resolve().parents[1] / "pipeline", repo / "pipeline")
        params = shrink(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text()),
                        datasets=("product",))  # fmt: skip
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        previous = {"models/product-linear/model.pt": b"earlier weights", "metrics/product-linear.json": b"{}\n"}
        for path, content in previous.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(content)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "EQUATIONS_STORE_WAIT_S": "8",
            "OPTUNA_STORAGE": f"sqlite:///{tmp_path / 'optuna.db'}"}  # fmt: skip
        subprocess.run(["python", "-m", "pipeline", "generate", "--dataset", "product", "--out", "data/product.npz",
                        "--meta", "data/product.json"], cwd=repo, env=env, check=True, capture_output=True)  # fmt: skip
        tune = ["python", "-m", "pipeline", "tune", "--dataset", "product", "--models", "linear", "--data",
                "data/product.npz", "--models-dir", "models", "--metrics-dir", "metrics",
                "--plots-dir", "plots"]  # fmt: skip
        with contextlib.ExitStack() as stack:
            if store == "server":
                backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
                env["MLFLOW_TRACKING_URI"] = stack.enter_context(throwaway.mlflow_server(backend, artifacts=disk))
            else:  # a local store: its artifacts beside the database (`mlruns`), on the full disk
                (tmp_path / "store").mkdir()
                (tmp_path / "store" / "mlruns").symlink_to(disk)
                env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
            start = time.monotonic()
            done = subprocess.run(tune, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
            seconds = time.monotonic() - start
            client = MlflowClient(env["MLFLOW_TRACKING_URI"])
            experiment = client.get_experiment_by_name("equations")
            (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'parent'")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    cause = (
        "refused it \\(HTTP 500 after retries\\); its log says why" if store == "server" else "No space left on device"
    )
    assert re.match(rf"error: artifact \S+: .*{cause}", last), last
    assert seconds < 120, f"the stage took {seconds:.0f} s to give up"
    assert parent.info.status == "FAILED"
    for path, content in previous.items():
        assert (repo / path).read_bytes() == content, f"{path} changed by a run that failed"
    assert not list(repo.rglob(".*.tmp")), "staged outputs left behind"
