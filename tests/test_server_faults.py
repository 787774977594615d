"""A tracking server whose database restarts answers TEMPORARILY_UNAVAILABLE (HTTP 503), sometimes
after it committed the write. MLflow (since 3.18) does not retry such an answer to a write that is
not safe to repeat (creating a run, logging a dataset input): `stores.mlflow_write` does, and the
run's `owner.request` tag makes the retry find a run the failed try made.

A real `mlflow server` (SQLite) behind a small fault proxy: the proxy passes every request on, and
answers chosen ones with the server's own 503 body, before the server saw them or after it
committed them. The store is read back directly, past the proxy.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from pipeline.stores import StoreError
from pipeline.tracking import REQUEST, Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import throwaway  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.slow

SHUTTING_DOWN = "(psycopg2.OperationalError) the database system is shutting down"
UNAVAILABLE = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": SHUTTING_DOWN}).encode()


class FaultProxy(ThreadingHTTPServer):
    """Forwards to `upstream`; `faults[path]` is a list of "before" / "after", one per request to
    come: 503 without forwarding, or forward and then 503. `seen[path]` counts requests."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.faults: dict[str, list[str]] = {}
        self.seen: dict[str, int] = {}
        self.always_503 = False


class _Forward(BaseHTTPRequestHandler):
    server: FaultProxy

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        self.server.seen[path] = self.server.seen.get(path, 0) + 1
        queued = self.server.faults.get(path) or []
        fault = queued.pop(0) if queued else ("before" if self.server.always_503 and path.startswith("/api") else None)
        if fault != "before":
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = httpx.request(self.command, self.server.upstream + self.path, headers=headers, content=body)
        if fault:
            status, content, kind = 503, UNAVAILABLE, "application/json"
        else:
            status, content, kind = answer.status_code, answer.content, answer.headers.get("content-type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory, _empty_mlflow_db) -> Iterator[str]:
    database = tmp_path_factory.mktemp("server") / "mlflow.db"
    shutil.copy(_empty_mlflow_db, database)
    with throwaway.mlflow_server(f"sqlite:///{database}") as url:
        yield url


@pytest.fixture
def proxy(server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def url_of(proxy: FaultProxy) -> str:
    return f"http://127.0.0.1:{proxy.server_address[1]}"


CREATE = "/api/2.0/mlflow/runs/create"


# (the answers to the first creates, how many creates the server sees): a try after one that
# committed finds its run and creates none.
@pytest.mark.parametrize(("faults", "creates"), [(["after"], 1), (["before"], 2), (["before", "after"], 2),
                                                 (["before", "before"], 3)])  # fmt: skip
def test_a_run_is_made_once_whether_the_failed_tries_committed_or_not(server, proxy, faults, creates, request, capfd):
    name = f"run-{request.node.callspec.id}"
    tracker = Tracker(url_of(proxy), "faults", tags={"dataset": "d"})
    proxy.faults[CREATE] = list(faults)
    run_id = tracker.start(name, {"model": "m"})

    direct = MlflowClient(server)
    runs = direct.search_runs([tracker.experiment_id], f"tags.mlflow.runName = '{name}'")
    assert [r.info.run_id for r in runs] == [run_id]  # one run, the one returned
    assert proxy.seen[CREATE] == creates
    assert runs[0].data.tags["model"] == "m" and len(runs[0].data.tags[REQUEST]) == 32
    err = capfd.readouterr().err
    assert "unreachable" in err and "retrying for up to 60 s" in err and "reachable again" in err


def test_a_dataset_input_logged_again_is_held_once(server, proxy):
    tracker = Tracker(url_of(proxy), "faults")
    run_id = tracker.start("inputs", {})
    proxy.faults["/api/2.0/mlflow/runs/log-inputs"] = ["after"]
    tracker.log_dataset(run_id, "product", "0123456789abcdef0123456789abcdef", "data/product.npz")
    inputs = MlflowClient(server).get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("product", "0123456789abcdef0123456789abcdef")]


def test_a_server_unavailable_past_the_bound_fails_in_one_line_and_makes_no_run(server, proxy, monkeypatch):
    tracker = Tracker(url_of(proxy), "faults")
    before = len(MlflowClient(server).search_runs([tracker.experiment_id]))
    monkeypatch.setenv("EQUATIONS_STORE_WAIT_S", "3")
    # MLflow's own retries of the reads between tries, as `stores.reach_server` bounds them for 3 s
    # (this process set them for the default minute when it first reached the server).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    proxy.always_503 = True
    start = time.monotonic()
    with pytest.raises(StoreError) as raised:
        tracker.start("never", {})
    assert 3 <= time.monotonic() - start < 15
    message = str(raised.value)
    assert message.startswith(f"MLflow tracking server {url_of(proxy)}: unreachable for 3 s:"), message
    assert "TEMPORARILY_UNAVAILABLE" in message and "\n" not in message
    assert len(MlflowClient(server).search_runs([tracker.experiment_id])) == before
