"""What a person sees, in a real headless chromium: the MLflow UI, optuna-dashboard, the DVC plots
page (with the network blocked) and the report rendered as Markdown, after a shrunk real `dvc repro`
and `python -m pipeline promote`.

Chromium is Debian's (/usr/bin/chromium, which `.ci/run` installs); Playwright drives it. Every
server starts on a free loopback port in its own process group and is stopped at the end. With
UPDATE_SCREENSHOTS=1 the screenshots are also written to docs/screenshots/ (the README's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, ROOT, make_repo, sh, shrink
from markdown_it import MarkdownIt
from mlflow import MlflowClient
from test_prefect_server import free_port, start, stop, wait_for

from pipeline.tracking import runs_link

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
TIMEOUT_MS = 90_000


def shoot(page, name: str, shots: Path, **options) -> None:
    page.screenshot(path=str(shots / name), **options)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shots / name, target / name)


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory, default_params_raw):
    """A repo after `dvc repro` and `promote`, with `mlflow server` and optuna-dashboard on it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it)")
    base = tmp_path_factory.mktemp("browser")
    repo = make_repo(base / "repo", shrink(default_params_raw))
    sh(repo, "dvc", "repro")
    sh(repo, "python", "-m", "pipeline", "promote")
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    mlflow_url, optuna_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    processes = []
    with open(base / "servers.log", "w") as log:
        try:
            port = mlflow_url.rsplit(":", 1)[1]
            processes.append(
                start(
                    [
                        "mlflow",
                        "server",
                        "--backend-store-uri",
                        f"sqlite:///{repo / 'mlflow.db'}",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        port,
                    ],
                    repo,
                    env,
                    log,
                )  # fmt: skip
            )
            port = optuna_url.rsplit(":", 1)[1]
            processes.append(
                start(
                    ["optuna-dashboard", f"sqlite:///{repo / 'optuna.db'}", "--host", "127.0.0.1", "--port", port],
                    repo,
                    env,
                    log,
                )  # fmt: skip
            )
            wait_for(lambda: _up(f"{mlflow_url}/health"), 120, "mlflow server")
            wait_for(lambda: _up(f"{optuna_url}/dashboard/"), 120, "optuna-dashboard")
            shots = base / "screenshots"
            shots.mkdir()
            yield {"repo": repo, "mlflow": mlflow_url, "optuna": optuna_url, "shots": shots}
        finally:
            for process in reversed(processes):
                stop(process)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def close_assistant(page) -> None:
    """MLflow 3.17 opens an "MLflow Assistant" side panel over a third of the page."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def experiment_id(site) -> str:
    return MlflowClient(f"sqlite:///{site['repo'] / 'mlflow.db'}").get_experiment_by_name("equations").experiment_id


def test_the_mlflow_experiment_opens_on_its_parent_runs_with_val_mse(site, page):
    # The link `compare` prints: the shared view it saved, parent runs only, val_mse shown and sorted.
    url = runs_link(site["mlflow"], experiment_id(site))
    said = sh(site["repo"], "python", "-m", "pipeline", "compare", "--metrics-dir", "metrics", "--models-dir",
              "models", "--plots-dir", "plots", "--out", "reports",
              env=os.environ | {"MLFLOW_UI_URL": site["mlflow"]})  # fmt: skip
    assert url in said
    page.goto(url)
    for name in ("linear/linear", "product/cross", "product/mlp"):
        page.get_by_text(name, exact=True).first.wait_for()
    # The experiment's description comes by a request of its own, after the runs at times (a CI run
    # read the page between the two): waited for, as the runs are.
    page.get_by_text("Can a neural network solve linear and nonlinear equations?").first.wait_for()
    body = page.inner_text("body")
    assert "Detect Issues" not in body and "No data available" not in body  # no GenAI overview
    assert "Can a neural network solve linear and nonlinear equations?" in body  # the experiment's description
    assert "trial-" not in body and "6 matching runs" in body  # two datasets x three families, no trials
    close_assistant(page)
    for column in ("val_mse", "recovered_val_mse", "r2"):
        page.get_by_role("columnheader", name=column).first.wait_for()
    shoot(page, "mlflow-runs.png", site["shots"])


def test_a_parent_run_says_what_it_is(site, page):
    client = MlflowClient(f"sqlite:///{site['repo'] / 'mlflow.db'}")
    parents = "tags.role = 'parent' and tags.dataset = 'product' and tags.model = 'cross'"
    run = client.search_runs([experiment_id(site)], parents)[0]
    assert run.data.tags["mlflow.source.name"].startswith("python -m pipeline tune --dataset product")
    assert run.data.tags["mlflow.user"] and run.data.params["dataset.equation"] == "(2*x0 - 3)*(x1 + 1)"
    assert run.data.metrics["n_parameters"] == 11 + 55  # 10 inputs, 55 terms, a bias
    page.goto(
        f"{site['mlflow']}/#/experiments/{experiment_id(site)}/runs/{run.info.run_id}?workflowType=machine_learning"
    )
    page.get_by_text("Equation read back from the weights", exact=False).first.wait_for()
    page.get_by_text("val_mse", exact=True).first.wait_for()
    close_assistant(page)
    shoot(page, "mlflow-run.png", site["shots"], full_page=True)


def test_the_registered_model_shows_its_champion_and_a_description(site, page):
    page.goto(f"{site['mlflow']}/#/models/equations-product?workflowType=machine_learning")
    page.get_by_text("champion", exact=True).first.wait_for()
    page.get_by_text("the simplest family that reaches the noise floor", exact=False).first.wait_for()
    close_assistant(page)
    shoot(page, "mlflow-model.png", site["shots"])


def test_optuna_dashboard_names_the_metric_and_links_the_run(site, page):
    page.goto(f"{site['optuna']}/dashboard/")
    page.get_by_text("equations/product/mlp #", exact=False).first.wait_for()
    shoot(page, "optuna-studies.png", site["shots"])  # the study list: short names, one line each
    page.get_by_text("equations/product/mlp #", exact=False).first.click()
    page.get_by_text("val_mse", exact=False).first.wait_for()
    shoot(page, "optuna-dashboard.png", site["shots"])
    import optuna

    storage = f"sqlite:///{site['repo'] / 'optuna.db'}"
    study = next(
        s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith("equations/product/mlp #")
    )
    assert study.user_attrs["dataset"] == "product" and study.user_attrs["model"] == "mlp"
    assert (
        study.user_attrs["equation"] == "(2*x0 - 3)*(x1 + 1)" and study.user_attrs["mlflow_experiment"] == "equations"
    )
    assert study.study_name == f"equations/product/mlp #{study.user_attrs['mlflow_run_id'][:8]}"
    assert len(study.user_attrs["mlflow_run_id"]) == 32  # the whole id, as an attribute
    client = MlflowClient(f"sqlite:///{site['repo'] / 'mlflow.db'}")
    for trial in optuna.load_study(study_name=study.study_name, storage=storage).trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])  # each trial links its nested run
        assert (
            run.data.tags["trial"] == str(trial.number)
            and run.data.tags["mlflow.parentRunId"] == study.user_attrs["mlflow_run_id"]
        )


def test_dvc_plots_draw_with_the_network_blocked(site, browser, tmp_path):
    sh(site["repo"], "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    blocked: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto((tmp_path / "plots" / "index.html").as_uri())
    page.wait_for_function("document.querySelectorAll('svg, canvas').length >= 18", timeout=TIMEOUT_MS)
    assert blocked == []  # nothing left the machine, and yet every chart was drawn
    assert console == []  # no vega warning ("Infinite extent for field ...")
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "per epoch of the best trial, log scale" in html and '"type": "log"' in html
    # Our templates: a colour per series (not per revision), y = x under the scatter, no smoothing.
    specs = {path: entry[0]["content"] for path, entry in
             json.loads(sh(site["repo"], "dvc", "plots", "show", "--json"))["data"].items()}  # fmt: skip
    for path, spec in specs.items():
        if path.startswith(("plots/loss/", "plots/slice/")):
            assert spec["encoding"]["color"]["field"] == "field" and "strokeDash" not in spec["encoding"]
            assert not [p for p in spec.get("params", []) if "smooth" in json.dumps(p)]
        else:
            assert [layer["mark"]["type"] for layer in spec["layer"]] == ["point", "rule"], path
    shoot(page, "dvc-plots.png", site["shots"])
    context.close()


def test_the_report_renders_every_star_of_its_equations(site):
    summary = (site["repo"] / "reports" / "summary.md").read_text()
    html = MarkdownIt("commonmark").enable("table").render(summary)
    equations = [p.read_text().strip() for p in (site["repo"] / "models").glob("*/equation.txt")]
    assert len(equations) == 4 and "<em>" not in html
    for equation in equations:
        assert f"<code>{equation}</code>" in html
    readme = MarkdownIt("commonmark").enable("table").render((ROOT / "README.md").read_text())
    assert "<code>y = 2.000*x0 - 3.000*x1 + 2.000*x0*x1 - 3.000</code>" in readme
    assert not re.search(r"<em>[^<]*x\d", readme)  # no equation's * taken as emphasis


def test_dataset_names_reach_no_shell(tmp_path, default_params_raw):
    params = shrink(default_params_raw, datasets=("product",))
    params["datasets"] = {"my data": params["datasets"]["product"]}
    repo = make_repo(tmp_path / "repo", params)
    result = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True, timeout=300,
                            env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})  # fmt: skip
    assert result.returncode != 0
    assert "dataset name 'my data' must be 1-64 letters, digits, '_' or '-'" in result.stdout + result.stderr
    assert not (repo / "data").exists()
