"""Prefect beyond one process: the Prefect server on a throwaway PostgreSQL, two Prefect task workers
(`python -m flows.task_worker`), and the `experiment` flow with `--task-workers` run to Completed,
its two tunings taken one by each worker (the MLflow runs record which process tuned them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, make_repo, shrink
from mlflow import MlflowClient
from test_prefect_server import _healthy, free_port, start, stop, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import throwaway  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.slow


def test_the_experiment_runs_its_tunings_on_two_prefect_task_workers(tmp_path, default_params_raw):
    repo = make_repo(tmp_path / "repo", shrink(default_params_raw))
    api = f"http://127.0.0.1:{free_port()}/api"
    with throwaway.postgres(databases=("prefect",)) as pg:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
        env |= {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_API_URL": api,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"{pg.replace('+psycopg2', '+asyncpg')}/prefect",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        processes = []
        with open(tmp_path / "prefect.log", "w") as log:
            try:
                port = api.rsplit(":", 1)[1].split("/")[0]
                processes.append(start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
                                       tmp_path, env, log))  # fmt: skip
                wait_for(lambda: _healthy(api), 180, "the Prefect server on PostgreSQL")
                logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
                workers = [start(["python", "-m", "flows.task_worker"], repo, env, open(path, "w")) for path in logs]
                processes += workers
                # Both subscribed before the flow submits: else the first could take both tunings in turn.
                wait_for(lambda: all("Subscribing to runs" in path.read_text() for path in logs), 120, "task workers")
                run = subprocess.run(["python", "-m", "flows.experiment", "--no-push", "--task-workers"], cwd=repo,
                                     env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
                assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
                assert "Finished in state Completed()" in run.stderr + run.stdout
            finally:
                for process in reversed(processes):
                    stop(process)
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("equations").experiment_id
    parents = client.search_runs([experiment], "tags.role = 'parent'")
    pids = {run.data.tags["dataset"]: run.data.tags["owner.pid"] for run in parents}
    assert sorted(pids) == ["linear", "product"]
    assert pids["linear"] != pids["product"]  # one tuning per worker
    assert {int(pid) for pid in pids.values()} <= {w.pid for w in workers}
    # A busy worker holds no second run: each received exactly one (Prefect's own loop takes the next one in hand).
    assert [path.read_text().count("Received task run") for path in logs] == [1, 1]
