"""Screenshots of the UIs at table size, for the docs: MLflow's runs table opened from the link the
report prints (all parent runs, and one dataset's), and the report's summary rendered as GitHub
renders Markdown. Runs a real `mlflow server` on the repo's store and Debian's chromium.

    python tools/table_screenshots.py examples/feynman --dataset I_12_2 --prefix feynman-
    python tools/table_screenshots.py . --dataset product   # the default pipeline: mlflow-runs.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from markdown_it import MarkdownIt
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.tracking import runs_link  # noqa: E402
from tools.throwaway import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def served(command: list[str], health: str, what: str) -> Iterator[None]:
    """`command` running in a process group of its own until the block ends, once `health` answers."""
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not _up(health):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{what} did not start")
                time.sleep(0.5)
            yield
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(store: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1]]  # fmt: skip
    with served(command, f"{url}/health", "mlflow server"):
        yield url


@contextlib.contextmanager
def optuna_dashboard(store: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(BIN / "optuna-dashboard"), f"sqlite:///{store.resolve()}", "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1]]  # fmt: skip
    with served(command, f"{url}/dashboard/", "optuna-dashboard"):
        yield url


def shoot_studies(browser, url: str, dataset: str, path: Path) -> None:
    """The study list, searched for one dataset's studies."""
    page = browser.new_page(viewport={"width": 1600, "height": 700})
    page.set_default_timeout(90_000)
    page.goto(f"{url}/dashboard/")
    page.get_by_placeholder("Search study").fill(f"{dataset}/")
    page.get_by_text(f"{dataset}/mlp #", exact=False).first.wait_for()
    time.sleep(1)
    page.screenshot(path=str(path))
    page.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def close_assistant(page) -> None:
    """MLflow 3.17 opens an "MLflow Assistant" side panel over a third of the page."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def shoot_runs(browser, url: str, expect: str, path: Path) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(90_000)
    page.goto(url)
    page.get_by_text(expect, exact=True).first.wait_for()
    close_assistant(page)
    page.get_by_role("columnheader", name="val_mse").first.wait_for()
    time.sleep(1)
    page.screenshot(path=str(path))
    page.close()


def shoot_report(browser, summary: Path, path: Path) -> None:
    html = MarkdownIt("commonmark").enable("table").render(summary.read_text())
    style = ("body{font-family:sans-serif;max-width:1500px;margin:20px auto;font-size:13px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}")  # fmt: skip
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.set_content(f"<html><head><style>{style}</style></head><body>{html}</body></html>")
    page.screenshot(path=str(path))
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path, help="a pipeline folder after a run: mlflow.db, reports/summary.md")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: params.yaml's)")
    parser.add_argument("--dataset", required=True, help="the dataset of the filtered view")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--prefix", default="", help="before each file name (feynman-: feynman-mlflow-runs.png)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from pipeline.config import load_params

    experiment = args.experiment or load_params(args.repo / "params.yaml").tracking.experiment
    store = (args.repo / "mlflow.db").resolve()
    experiment_id = MlflowClient(f"sqlite:///{store}").get_experiment_by_name(experiment).experiment_id
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_server(store) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        shots = {
            "mlflow-runs.png": (runs_link(url, experiment_id), f"{args.dataset}/cross"),
            "mlflow-one-dataset.png": (runs_link(url, experiment_id, args.dataset), f"{args.dataset}/cross"),
        }
        for name, (link, expect) in shots.items():
            shoot_runs(browser, link, expect, args.out / f"{args.prefix}{name}")
            print(f"{args.out / (args.prefix + name)}: {link}")
        shoot_report(browser, args.repo / "reports" / "summary.md", args.out / f"{args.prefix}report.png")
        print(args.out / f"{args.prefix}report.png")
        with optuna_dashboard(args.repo / "optuna.db") as dashboard:
            shoot_studies(browser, dashboard, args.dataset, args.out / f"{args.prefix}optuna-search.png")
        print(args.out / f"{args.prefix}optuna-search.png")
        browser.close()


if __name__ == "__main__":
    main()
