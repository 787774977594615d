"""End to end with a real Prefect server on loopback: serve the deployments, check the nightly
schedule, trigger the experiment with shrunk params, wait for Completed, check every output.

Everything started here (server, serving process) runs in its own process group and is stopped
at the end, whatever happens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import BIN, lock_md5, make_repo, sh, shrink, stored
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], cwd, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(check, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, default_params_raw):
    """A Prefect server on a free loopback port and `python -m flows.serve` serving a shrunk repo."""
    base = tmp_path_factory.mktemp("served")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    repo = make_repo(base / "repo", shrink(default_params_raw))
    processes = []
    with open(base / "server.log", "w") as server_log, open(base / "serve.log", "w") as serve_log:
        try:
            port = api.rsplit(":", 1)[1].split("/")[0]
            processes.append(
                start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", port], base, env, server_log)
            )
            wait_for(lambda: _healthy(api), 180, "the Prefect server")
            processes.append(start(["python", "-m", "flows.serve"], repo, env, serve_log))
            yield api, repo, env, processes[-1]
        finally:
            for process in reversed(processes):
                stop(process)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _post(api: str, path: str, body: dict | None = None):
    """POST as Prefect's own client does: a 503 or 429 (its database busy) is retried with backoff."""
    for attempt in range(6):
        response = httpx.post(f"{api}{path}", json=body or {}, timeout=10)
        if response.status_code not in (429, 503) or attempt == 5:
            break
        time.sleep(2**attempt)
    response.raise_for_status()
    return response.json()


def _deployment(api: str, flow: str, name: str) -> dict | None:
    response = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10)
    return response.json() if response.status_code == 200 else None


def test_nightly_schedule_is_registered_and_follows_the_cron(served):
    api, *_ = served
    nightly = wait_for(lambda: _deployment(api, "experiment", "nightly"), 120, "the nightly deployment")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["global_concurrency_limit"]["limit"] == 1 and not nightly["paused"]
    filters = {
        "deployments": {"id": {"any_": [nightly["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC",
    }
    scheduled = wait_for(lambda: _post(api, "/flow_runs/filter", filters), 60, "scheduled runs")
    first = datetime.fromisoformat(scheduled[0]["expected_start_time"]).astimezone(UTC)
    now = datetime.now(UTC)
    assert (first.hour, first.minute, first.second) == (2, 0, 0)
    assert now < first <= now + timedelta(days=1)


@pytest.fixture(scope="module")
def triggered(served):
    """Two runs of the experiment deployment triggered at once, polled every half second to the end."""
    api, repo, env, _ = served
    nightly = wait_for(lambda: _deployment(api, "experiment", "nightly"), 120, "the experiment deployment")
    runs = [
        _post(api, f"/deployments/{nightly['id']}/create_flow_run", {"parameters": {"max_concurrency": 2}})
        for _ in range(2)
    ]
    seen: list[list[str]] = []  # each poll: the state of both runs

    def finished():
        states = [httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state"] for run in runs]
        seen.append([state["type"] for state in states])
        return states if all(s["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states) else None

    states = wait_for(finished, 600, "both triggered runs to finish", interval=0.5)
    return {"deployment": nightly, "runs": runs, "states": states, "seen": seen}


def test_two_triggered_experiments_run_one_at_a_time_and_complete_with_every_output(served, triggered):
    api, repo, env, _ = served
    runs, states, seen = triggered["runs"], triggered["states"], triggered["seen"]
    assert [state["type"] for state in states] == ["COMPLETED", "COMPLETED"], states
    assert max(poll.count("RUNNING") for poll in seen) == 1  # never both at once ...
    assert any(poll.count("RUNNING") == 1 and "SCHEDULED" in poll for poll in seen)  # ... one waited for the other
    history = [httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json() for run in runs]
    starts = sorted((h["start_time"], h["end_time"]) for h in history)
    assert starts[0][1] <= starts[1][0]  # the second started after the first ended

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("equations").experiment_id
    for run in runs:
        tagged = client.search_runs([experiment_id], f"tags.prefect_flow_run_id = '{run['id']}'", max_results=1000)
        assert len(tagged) == 6 + 6 * 2 + 1  # 2 datasets x 3 models, each with 2 trials, and the report
        assert all(r.info.status == "FINISHED" for r in tagged)

    assert "up to date" in sh(repo, "dvc", "status", env=env)
    for dataset in ("linear", "product"):
        assert stored(repo.parent / "equations-dvc-remote", lock_md5(repo, f"data/{dataset}.npz"))
        champion = client.get_model_version_by_alias(f"equations-{dataset}", "champion")
        assert champion.tags["promotion"] == "promoted"


def test_schedule_stays_active_after_the_serving_process_stops(served):
    api, _, _, serving = served
    stop(serving)
    assert serving.returncode is not None
    nightly = _deployment(api, "experiment", "nightly")
    assert not nightly["paused"] and all(s["active"] for s in nightly["schedules"])


@pytest.mark.browser
def test_the_prefect_ui_names_task_runs_and_shows_the_report_artifact(served, triggered, tmp_path):
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, FLAGS, shoot

    api = served[0]
    ui = api.removesuffix("/api")
    run = triggered["runs"][0]
    artifacts = _post(api, "/artifacts/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert [a["key"] for a in artifacts] == ["equations-report"]
    report = artifacts[0]["data"]
    assert "## MLflow" in report and "viewStateShareKey=parents-product" in report  # a link per dataset
    assert "- **product**: [parent runs, best first]" in report and "cross val_mse" in report
    assert "## Champions" in report and "`equations-product` (" in report  # each decision names its model
    names = {t["name"] for t in _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})}
    assert {"compare: the report", "dvc commit and push", "promote champions"} <= names
    subflows = _post(api, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    tune_models = next(f for f in subflows if httpx.get(f"{api}/flows/{f['flow_id']}").json()["name"] == "tune-models")
    tune_names = {
        t["name"] for t in _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [tune_models["id"]]}}})
    }
    assert tune_names == {"tune linear: linear, cross, mlp", "tune product: linear, cross, mlp"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(90_000)
        page.goto(f"{ui}/runs/flow-run/{run['id']}")
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("equations-report", exact=False).first.wait_for()
        shoot(page, "prefect-artifact.png", tmp_path)
        page.goto(f"{ui}/artifacts/artifact/{artifacts[0]['id']}")  # the report itself, rendered
        page.get_by_text("parent runs, best first", exact=False).first.wait_for()
        page.wait_for_timeout(1000)
        shoot(page, "prefect-artifact-report.png", tmp_path, full_page=True)
        page.goto(f"{ui}/runs/flow-run/{tune_models['id']}")  # the subflow that tunes every dataset
        page.get_by_text("Task Runs", exact=True).first.click()
        page.get_by_text("tune product: linear, cross, mlp", exact=False).first.wait_for()
        page.get_by_text("tune linear: linear, cross, mlp", exact=False).first.wait_for()
        page.goto(f"{ui}/deployments/deployment/{triggered['deployment']['id']}")
        page.get_by_text("nightly", exact=False).first.wait_for()
        page.wait_for_timeout(2000)
        shoot(page, "prefect-deployment.png", tmp_path)
        browser.close()
