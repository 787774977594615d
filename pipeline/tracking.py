"""MLflow tracking: the run layout the UI and the tests rely on.

One parent run per (dataset, model) tagged `dataset` and `model`; one nested run per Optuna
trial with its params and per-epoch `train_loss` / `val_loss` at step=epoch. Metrics go in
`log_batch` calls (one call per point costs ~5 ms on SQLite). Every run records the dataset's
DVC hash as an input digest and the git commit, and ends FINISHED or FAILED, never RUNNING.

MLflow is imported where it is used, not at the top: a process that only trains hands its record
to another one (`Target` says where), and importing MLflow would cost it a second for nothing.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import FaultError, redact

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from torch import nn

    from pipeline.data import DatasetRef

MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # the values of mlflow.utils.mlflow_tags
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
REQUEST = "owner.request"  # the call that made a run (`Tracker.start`)
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def git_commit(repo: Path | str = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # not a git repository, or no commit yet
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class LoggedModel:
    """A model to log in MLflow's PyTorch flavour: the module, a few input rows, its name."""

    model: nn.Module
    example: np.ndarray  # a few rows of inputs: the signature, and what the pt2 format traces it on
    name: str
    inputs: tuple[str, ...] = ()  # the input columns' names, in order (MLmodel metadata)


@dataclass(frozen=True)
class Target:
    """Where runs go and the tags each carries: what a process needs to open its own `Tracker`."""

    tracking_uri: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)

    def tracker(self) -> Tracker:
        """This process's tracker of the target's experiment: made once (finding the experiment
        costs a few queries and the store's lock), then only its tags differ."""
        key = (self.tracking_uri, self.experiment)
        if key not in _TRACKERS:
            _TRACKERS[key] = Tracker(self.tracking_uri, self.experiment)
        return _TRACKERS[key].tagged(self.tags)


_TRACKERS: dict[tuple[str, str], Tracker] = {}  # by (tracking URI, experiment), per process


class Tracker:
    """An MLflow experiment plus the tags every run of this process carries."""

    def __init__(self, tracking_uri: str, experiment: str, tags: dict[str, str] | None = None) -> None:
        from pipeline import stores

        self.tracking_uri = tracking_uri
        location = stores.artifact_location(tracking_uri)
        self.client, self.experiment_id = stores.mlflow_experiment(tracking_uri, experiment, location)
        self.tags = dict(tags or {})

    def tagged(self, tags: dict[str, str]) -> Tracker:
        """The same client and experiment, with other tags for the runs it starts."""
        other = copy.copy(self)
        other.tags = dict(tags)
        return other

    @contextmanager
    def run(
        self, name: str, tags: dict[str, str], parent_id: str | None = None, status: str = "FINISHED"
    ) -> Iterator[str]:
        """A run that ends with `status`, or FAILED if the body raises (even KeyboardInterrupt)."""
        run_id = self.start(name, tags, parent_id)
        try:
            yield run_id
        except BaseException:
            self.end(run_id, "FAILED")
            raise
        self.end(run_id, status)

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """A new run. Its tag `owner.request` names this call: a try that the server answered
        with an error (its database restarting) may still have made the run, and the next try
        finds it by that tag instead of making a second one."""
        from pipeline import stores

        all_tags = source_tags() | self.tags | tags | {MLFLOW_RUN_NAME: name, REQUEST: uuid.uuid4().hex}
        if parent_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        tries = 0

        def create() -> str:
            nonlocal tries
            tries += 1
            if tries > 1 and (made := self.client.search_runs(
                [self.experiment_id], f"tags.`{REQUEST}` = '{all_tags[REQUEST]}'", max_results=1
            )):  # fmt: skip
                return made[0].info.run_id
            return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

        return stores.mlflow_write(self.tracking_uri)(create)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def save_views(self, datasets: list[str]) -> None:
        """The runs-table views `runs_link` opens: all parent runs, and each dataset's."""
        import json

        for key, state in (parents_view(d) for d in [None, *datasets]):
            self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))

    def end_orphans(self) -> list[str]:
        """End KILLED every RUNNING run of the experiment whose owner process is gone (see
        `liveness`); returns their ids. Runs of live processes and of other hosts are left alone."""
        from pipeline import liveness

        ended = []
        for run in every_run(self.client, self.experiment_id, "attributes.status = 'RUNNING'"):
            if liveness.is_gone(run.data.tags):
                self.client.set_tag(run.info.run_id, "ended_by", "cleanup: its process was gone")
                self.end(run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
        return ended

    def log(  # noqa: PLR0913 (the parts of one log_batch call)
        self,
        run_id: str,
        params: dict | None = None,
        metrics: dict | None = None,
        tags: dict | None = None,
        curves: list | None = None,
    ) -> None:
        """Params, metrics (at step 0), tags and `curves` (`curve_points`) in as few calls as
        MLflow's batch limit allows: each call is a transaction of its own."""
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        points = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        points += curves or []
        params = [Param(k, str(v)) for k, v in (params or {}).items()]
        tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for start in range(0, max(len(points), 1), BATCH):
            first = start == 0
            self.client.log_batch(run_id, metrics=points[start : start + BATCH], params=params if first else [],
                                  tags=tags if first else [])  # fmt: skip

    def log_history(self, run_id: str, train_loss: list[float], val_loss: list[float]) -> None:
        self.log(run_id, curves=curve_points(train_loss, val_loss))

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        from pipeline import stores

        dataset = Dataset(name=name, digest=digest, source_type="dvc", source=source)
        context = InputTag(key="mlflow.data.context", value="training")
        # The server finds a dataset and input it holds already: safe to send again.
        write = stores.mlflow_write(self.tracking_uri)
        for attempt in range(3):
            try:
                write(self.client.log_inputs, run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])])
                return
            except MlflowException as exc:
                # MLflow's get-or-create of the dataset row races between concurrent writers (two
                # tunings of one dataset); the loser finds the row on its next try.
                if attempt == 2 or "unique constraint" not in str(exc).lower():
                    raise

    def log_artifacts(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            with self.storing(Path(path).name):
                self.client.log_artifact(run_id, str(path))

    @contextmanager
    def storing(self, what: str) -> Iterator[None]:
        """An artifact write that fails, said in one line with its cause where it can be known: a
        full or unwritable local disk names itself (OSError); a server's artifact store answers
        only HTTP 500 (the cause is in the server's log), after MLflow's bounded retries."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ArtifactError(f"artifact {what}: cannot be written: {exc.strerror or exc}{where}") from None
        except MlflowException as exc:
            if "error responses" not in str(exc):
                raise
            raise ArtifactError(
                f"artifact {what}: the tracking server {redact(self.tracking_uri)} refused it (HTTP 500 after "
                "retries); its log says why, most often a full or unwritable artifact store"
            ) from None

    def log_torch_model(
        self, run_id: str, logged: LoggedModel, params: dict, metrics: dict, dataset: DatasetRef
    ) -> str:
        """Log the model as an MLflow PyTorch model, with a signature, linked (MLflow 3 logged
        models) to the run's params and to its metrics on the dataset; return its models:/ URI. The
        run's metrics are logged here, once, with that link."""
        import mlflow
        import torch
        from mlflow.entities import Metric
        from mlflow.models import infer_signature

        with torch.no_grad():
            y_example = logged.model(torch.as_tensor(logged.example)).numpy()
        mlflow.set_tracking_uri(self.tracking_uri)  # log_model only speaks through the fluent API
        with self.storing(f"{logged.name} (the logged model)"), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                logged.model,
                name=logged.name,
                signature=infer_signature(logged.example, y_example),
                input_example=logged.example,  # the default pt2 format traces the model on it
                # Stated rather than inferred: inference loads the model in a subprocess (seconds).
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                params={key: str(value) for key, value in params.items()},
                # The pt2 format takes only an unnamed tensor signature: the columns' names go here.
                metadata={"inputs": list(logged.inputs)} if logged.inputs else None,
                # MLflow would load the model back to serve the example (1-2 s a model); the stage
                # has just scored this very module, and `predict` is tested on the logged one.
                validate_serving_input=False,
            )
        now = _now_ms()
        points = [
            Metric(key, float(value), now, 0, model_id=info.model_id, dataset_name=dataset.name,
                   dataset_digest=dataset.md5)
            for key, value in metrics.items()
            if value is not None
        ]  # fmt: skip
        self.client.log_batch(run_id, metrics=points)
        return info.model_uri


class ArtifactError(FaultError):
    """An artifact the tracking store could not take: a full disk, no permission, a server's error."""


def every_run(client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    """Every run of the experiment that `query` (MLflow's search syntax) matches, page by page:
    a search returns at most 1000 runs at a time."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def curve_points(train_loss: list[float], val_loss: list[float], max_points: int | None = None) -> list:
    """Per-epoch `train_loss` and `val_loss` at step=epoch: every epoch, or with `max_points`
    about that many evenly spaced epochs per curve, the last one always among them."""
    from mlflow.entities import Metric

    now = _now_ms()
    points = []
    for key, values in (("train_loss", train_loss), ("val_loss", val_loss)):
        every = max(1, -(-len(values) // max_points)) if max_points else 1
        steps = sorted(set(range(0, len(values), every)) | ({len(values) - 1} if values else set()))
        points += [Metric(key, float(values[step]), now, step) for step in steps]
    return points


def source_tags() -> dict[str, str]:
    """Who ran what: MLflow's own source and user tags (its UI shows "-" without them), and the
    DVC experiment's name when `dvc exp run` started the stage."""
    import getpass
    import os
    import sys

    command = (
        redact(" ".join(["python -m pipeline", *sys.argv[1:]]))[:500]
        if sys.argv[0].endswith("pipeline/__main__.py")
        else ""
    )
    tags = {
        "mlflow.source.name": command or Path(sys.argv[0]).name or "python",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": os.environ.get("USER") or getpass.getuser(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = os.environ["DVC_STAGE"]
    return tags


def edited_sources(repo: Path | str = ".") -> list[str] | None:
    """Tracked code and params files that differ from the commit (None outside git).

    Only code and config count (.py, .yaml, .toml): during `dvc repro` dvc.lock, metrics and plot
    tables change as stages finish, which says nothing about what shaped the run."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    paths = [line[3:].split(" -> ")[-1] for line in out.stdout.splitlines() if len(line) > 3]
    return [p for p in paths if p.endswith((".py", ".yaml", ".toml")) and Path(p).name != "dvc.lock"]


def ui_base(tracking_uri: str) -> str:
    """Where a person opens MLflow: the tracking server itself, or the README's `mlflow ui` for a
    local store; MLFLOW_UI_URL overrides both."""
    default = tracking_uri if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return os.environ.get("MLFLOW_UI_URL", default).rstrip("/")


# MLflow's UI restores a "shared view" (its search, sort and columns) from the experiment tag
# `mlflow.sharedViewState.<key>` when a link says `viewStateShareKey=<key>`: the one way to open
# the runs table with chosen columns, which the URL's own search parameters cannot set.
SHARED_VIEW_TAG = "mlflow.sharedViewState."
VIEW_COLUMNS = ["metrics.`val_mse`", "metrics.`recovered_val_mse`", "metrics.`r2`", "metrics.`ood_mse`",
                "tags.`recovered_equation`"]  # fmt: skip


def parents_view(dataset: str | None = None) -> tuple[str, dict]:
    """The runs table on the parent runs (of one dataset), best `val_mse` first, the scores and
    the equation read back as columns: (its share key, its state). Filtering on `role` leaves out
    the trials' nested runs, a hundred per family, which would fill the pages."""
    search = "tags.role = 'parent'" + (f" and tags.dataset = '{dataset}'" if dataset else "")
    state = {"searchFilter": search, "orderByKey": "metrics.`val_mse`", "orderByAsc": True,
             "selectedColumns": VIEW_COLUMNS}  # fmt: skip
    return ("parents" if dataset is None else f"parents-{dataset}"), state


def runs_link(ui: str, experiment_id: str, dataset: str | None = None) -> str:
    """The link to `parents_view(dataset)` (saved by `Tracker.save_views`); `workflowType` keeps
    MLflow 3 off its GenAI overview."""
    key, _ = parents_view(dataset)
    return f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={key}"


def commit_tags(repo: Path | str = ".") -> dict[str, str]:
    """The commit, and whether code or params.yaml were edited since: runs made from an edited
    params.yaml would otherwise carry the same commit as the committed one."""
    commit = git_commit(repo)
    if not commit:
        return {}
    edited = edited_sources(repo) or []
    tags = {MLFLOW_GIT_COMMIT: commit, "git_commit": commit, "git_dirty": str(bool(edited)).lower()}
    if edited:
        tags["git_edited"] = ", ".join(edited[:10]) + (f" (+{len(edited) - 10} more)" if len(edited) > 10 else "")
    return tags


def _now_ms() -> int:
    return int(time.time() * 1000)
