"""Prefect flows: the same stages as dvc.yaml, run as thin tasks, then versioned by DVC.

One source of truth: every task calls the very function its DVC stage calls (`pipeline.stages`),
with the paths dvc.yaml declares (`Layout`). After the stages, the flow drives DVC through its
Python API: `commit` records every stage's hashes in dvc.lock exactly as `dvc repro` would (so
`dvc status` is clean) and caches the outputs, and `push` sends them to the DVC remote. Tunings
are independent and run concurrently in worker processes, up to `max_concurrency` at once.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from pydantic import Field

from pipeline.config import Params, load_params
from pipeline.data import DatasetRef, file_md5, locked_md5
from pipeline.families import FAMILIES
from pipeline.outputs import OutputDirs
from pipeline.stages import compare, generate, promote, specs, tune, validate
from pipeline.study_storage import prepare

# Transient failures (a busy SQLite file, a tracking server restarting, a remote timing out).
RETRIES = {"retries": 2, "retry_delay_seconds": 10}


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, relative to the repo root: the paths of dvc.yaml, in one place."""

    root: Path

    def checks(self) -> Path:
        return self.root / "checks"

    def data(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}.npz"

    def meta(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}.json"

    def outputs(self) -> OutputDirs:
        return OutputDirs(self.root / "models", self.root / "metrics", self.root / "plots")


def _log(message: str) -> None:
    try:
        get_run_logger().info(message)
    except MissingContextError:  # a task's function called directly (`task.fn`), outside any run
        print(message)


def _flow_run_tags() -> dict[str, str]:
    """The Prefect run behind these MLflow runs: the root (the `experiment` run when this is one of
    its subflows), and this flow run's name and page, so a run found in MLflow leads back to it."""
    tags = {"prefect_flow_run_id": str(flow_run.root_flow_run_id or flow_run.id)}
    if flow_run.name:
        tags["prefect_flow_run_name"] = f"{flow_run.flow_name}/{flow_run.name}"
    if str(flow_run.ui_url).startswith("http"):  # no UI URL with an ephemeral API
        tags["prefect_flow_run_url"] = str(flow_run.ui_url)
    return tags


@task(task_run_name="generate {dataset}", **RETRIES)
def generate_task(params: Params, dataset: str, layout: Layout) -> str:
    """Draw one dataset; returns the MD5 of the file written, which its tuning checks."""
    generate.generate(params, dataset, layout.data(dataset), layout.meta(dataset), progress=_log)
    return file_md5(layout.data(dataset))


@task(task_run_name="tune {dataset}: linear, cross, mlp", **RETRIES)
def tune_task(params: Params, dataset: str, layout: Layout, tags: dict[str, str], md5: str | None) -> dict[str, dict]:
    """Every family on one dataset, as the `tune@<dataset>` stage: one recorder process for all three.
    The dataset must still have the MD5 `generate` wrote (or dvc.lock records, when not given)."""
    import os
    import socket

    _log(f"tuning {dataset} on {socket.gethostname()} (pid {os.getpid()})")  # which worker took it
    outputs = {family: layout.outputs().of(dataset, family) for family in FAMILIES}
    data = layout.data(dataset)
    source = DatasetRef(dataset, md5 or locked_md5(data, layout.root / "dvc.lock"), str(data))
    return tune.tune(params, source, outputs, tags=tags, progress=_log)


@task(task_run_name="compare: the report", **RETRIES)
def compare_task(params: Params, layout: Layout) -> None:
    compare.compare(params, layout.outputs(), layout.root / "reports", tags=_flow_run_tags(), progress=_log)


@task(task_run_name="dvc commit and push", **RETRIES)
def version_task(root: Path, push: bool) -> None:
    """Record the stages' hashes in dvc.lock and cache the outputs; push them to the remote."""
    from dvc.repo import Repo

    # DVC resolves stage paths against the working directory, so it must be the repo's root.
    # Nothing else runs in this process meanwhile: the tunings have all finished. The code
    # fingerprints (dvc.yaml's `code-` stages) take DVC a second to run; then every stage's hashes.
    # Only this folder's dvc.yaml: in a pipeline of a subfolder (examples/feynman) DVC finds the
    # repo's root above, and a bare `commit` would record the root pipeline's stages as well.
    with contextlib.chdir(root), _this_python_on_path(), Repo(str(root)) as repo:
        stages = repo.stage.collect("dvc.yaml")
        repo.reproduce([s.addressing for s in stages if s.name.startswith("code-")], single_item=True)
        repo.commit("dvc.yaml", force=True)
        if push:
            _log(f"dvc push: {repo.push()} files sent to the default remote")


@contextlib.contextmanager
def _this_python_on_path() -> Iterator[None]:
    """DVC runs a stage's command (`python -m pipeline fingerprint ...`) through the shell, with the
    `python` that PATH finds first. A flow started as `.venv/bin/python -m flows.experiment`
    without the venv activated (a cron job, a Prefect worker) would find another interpreter,
    without this project installed: this one's folder goes first while DVC runs."""
    import os
    import sys

    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before


@task(task_run_name="promote champions", **RETRIES)
def promote_task(params: Params, tuned: dict[str, dict[str, dict]]) -> list[str]:
    # Each line names its dataset's registered model: the artifact lists one per dataset.
    return [f"`{d.model_name}` ({d.family}): {d.reason}" for d in promote.promote(params, tuned, progress=_log)]


def publish_report(params: Params, layout: Layout, tuned: dict[str, dict[str, dict]], decisions: list[str]) -> None:
    """The run's report as a Prefect artifact (its Artifacts tab): the verdicts and the table of
    reports/summary.md, MLflow's runs table for each dataset, and the champion decisions."""
    from prefect.artifacts import create_markdown_artifact

    from pipeline.tracking import runs_link, ui_base

    summary = (layout.root / "reports" / "summary.md").read_text()
    body = summary.split("\n![", 1)[0]  # the images are files beside summary.md: not here
    ui = ui_base(params.tracking.mlflow_tracking_uri())
    experiment_id = next((r["experiment_id"] for by in tuned.values() for r in by.values()), None)
    links = [
        f"- **{dataset}**: [parent runs, best first]({runs_link(ui, str(experiment_id), dataset)}) ("
        + ", ".join(f"{family} val_mse {result['val_mse']:.3g}" for family, result in by_family.items())
        + ")"
        for dataset, by_family in tuned.items()
    ]
    everything = f"[All parent runs, best first]({runs_link(ui, str(experiment_id))})"
    decided = [f"- {reason}" for reason in decisions] or ["- none: promotion was not run"]
    markdown = "\n".join([body, "## MLflow", everything, "", *links, "", "## Champions", *decided, ""])
    create_markdown_artifact(markdown=markdown, key="equations-report", description="The experiment's report")


@flow(name="generate-datasets")
def generate_datasets(repo: str = ".", params_file: str = "params.yaml") -> dict[str, str]:
    """Draw every dataset of params.yaml; returns the MD5 of each dataset file by name."""
    root = Path(repo).resolve()
    params = load_params(root / params_file)
    futures = {name: generate_task.submit(params, name, Layout(root)) for name in params.datasets}
    return {name: future.result() for name, future in futures.items()}


@flow(name="tune-models")
def tune_models(
    repo: str = ".",
    params_file: str = "params.yaml",
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 2,
    data_md5: dict[str, str] | None = None,
    task_workers: bool = False,
) -> dict:
    """Tune every model family on every dataset, up to `max_concurrency` datasets at once. Each
    dataset file must have the MD5 in `data_md5` (by default: the one dvc.lock records)."""
    root = Path(repo).resolve()
    params = load_params(root / params_file)
    tags = _flow_run_tags()
    prepare(specs.stores(params))  # create the stores' tables once, not in racing threads
    if task_workers:  # Prefect task workers (`python -m flows.task_worker`, anywhere) run the tunings
        futures = {
            dataset: tune_task.delay(params, dataset, Layout(root), tags, (data_md5 or {}).get(dataset))
            for dataset in params.datasets
        }
        return {dataset: future.result() for dataset, future in futures.items()}
    # Processes, not threads: torch.export and matplotlib are not thread-safe, and the GIL would
    # serialise these small-step training loops anyway. One at a time needs no worker process
    # (each costs seconds of imports), so it runs in a single thread of this one.
    pool = ThreadPoolTaskRunner if max_concurrency == 1 else ProcessPoolTaskRunner
    with _api_shared_with_workers(), pool(max_workers=max_concurrency) as runner:
        futures = {
            dataset: runner.submit(
                tune_task,
                {
                    "params": params,
                    "dataset": dataset,
                    "layout": Layout(root),
                    "tags": tags,
                    "md5": (data_md5 or {}).get(dataset),
                },
            )
            for dataset in params.datasets
        }
        wait(list(futures.values()))
    return {dataset: future.result() for dataset, future in futures.items()}


@contextlib.contextmanager
def _api_shared_with_workers() -> Iterator[None]:
    """Worker processes report to this run's API. Without a configured PREFECT_API_URL this
    process talks to an ephemeral API of its own, and each worker process would start another
    (seconds of CPU, and its runs out of this one's sight): the workers get this one's URL."""
    import os

    from prefect.client.orchestration import get_client

    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]


@flow(name="experiment")
def experiment(
    repo: str = ".",
    params_file: str = "params.yaml",
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 2,
    push: bool = True,
    promote: bool = True,
    task_workers: bool = False,
) -> dict:
    """The whole pipeline: datasets, tunings, report, DVC versioning, champion promotion."""
    root = Path(repo).resolve()
    params = load_params(root / params_file)  # a bad params.yaml fails the run here, before any work
    validate.validate(params, Layout(root).checks())  # the `validate` stage's output, for dvc.lock
    data_md5 = generate_datasets(repo=str(root), params_file=params_file)
    tuned = tune_models(
        repo=str(root),
        params_file=params_file,
        max_concurrency=max_concurrency,
        data_md5=data_md5,
        task_workers=task_workers,
    )
    compare_task(params, Layout(root))
    version_task(root, push)
    decisions = promote_task(params, tuned) if promote else []
    publish_report(params, Layout(root), tuned, decisions)
    return {"val_mse": {d: {f: r["val_mse"] for f, r in by.items()} for d, by in tuned.items()}, "promotion": decisions}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.experiment", description=main.__doc__)
    parser.add_argument("--repo", default=".", help="the repo's root (default: here)")
    parser.add_argument("--params-file", default="params.yaml")
    parser.add_argument("--max-concurrency", type=int, default=2, help="datasets tuned at once (default: 2)")
    parser.add_argument("--no-push", action="store_true", help="do not `dvc push` the outputs")
    parser.add_argument("--no-promote", action="store_true", help="do not register champions")
    parser.add_argument(
        "--task-workers", action="store_true", help="tune on Prefect task workers (python -m flows.task_worker)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.experiment`: the experiment flow once, here, without a Prefect server."""
    from pipeline.cli import describe

    args = build_parser().parse_args(argv)
    try:
        # Checked before Prefect starts its API (seconds): a params.yaml mistake is told in its own
        # lines, not in the traceback of a failed flow run.
        load_params(Path(args.repo).resolve() / args.params_file)
        experiment(
            args.repo, args.params_file, args.max_concurrency, not args.no_push, not args.no_promote, args.task_workers
        )
    except Exception as exc:  # the flow run's own log has the traceback; the command ends on one message
        code, message = describe(exc)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
