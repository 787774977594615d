"""MLflow tracking: the run layout the UI and the tests rely on.

One parent run per (dataset, model) tagged `dataset` and `model`; one nested run per Optuna
trial with its params and per-epoch `train_loss` / `val_loss` at step=epoch. Metrics go in
`log_batch` calls (one call per point costs ~5 ms on SQLite). Every run records the dataset's
DVC hash as an input digest and the git commit, and ends FINISHED or FAILED, never RUNNING.

MLflow is imported where it is used, not at the top: a process that only trains hands its record
to another one (`Target` says where), and importing MLflow would cost it a second for nothing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from pipeline.data import DatasetRef

MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # the values of mlflow.utils.mlflow_tags
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
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


@dataclass(frozen=True)
class Target:
    """Where runs go and the tags each carries: what a process needs to open its own `Tracker`."""

    tracking_uri: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.experiment, self.tags)


class Tracker:
    """An MLflow experiment plus the tags every run of this process carries."""

    def __init__(self, tracking_uri: str, experiment: str, tags: dict[str, str] | None = None) -> None:
        from pipeline import stores

        self.tracking_uri = tracking_uri
        location = stores.artifact_location(tracking_uri)
        self.client, self.experiment_id = stores.mlflow_experiment(tracking_uri, experiment, location)
        self.tags = dict(tags or {})

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
        all_tags = source_tags() | self.tags | tags | {MLFLOW_RUN_NAME: name}
        if parent_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def end_orphans(self) -> list[str]:
        """End KILLED every RUNNING run of the experiment whose owner process is gone (see
        `liveness`); returns their ids. Runs of live processes and of other hosts are left alone."""
        from pipeline import liveness

        ended, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000, page_token=token
            )
            for run in page:
                if liveness.is_gone(run.data.tags):
                    self.client.set_tag(run.info.run_id, "ended_by", "cleanup: its process was gone")
                    self.end(run.info.run_id, "KILLED")
                    ended.append(run.info.run_id)
            token = page.token
            if not token:
                return ended

    def log(
        self, run_id: str, params: dict | None = None, metrics: dict | None = None, tags: dict | None = None
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_history(self, run_id: str, train_loss: list[float], val_loss: list[float]) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        points = [Metric("train_loss", v, now, step) for step, v in enumerate(train_loss)]
        points += [Metric("val_loss", v, now, step) for step, v in enumerate(val_loss)]
        for start in range(0, len(points), BATCH):
            self.client.log_batch(run_id, metrics=points[start : start + BATCH])

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(name=name, digest=digest, source_type="dvc", source=source)
        context = InputTag(key="mlflow.data.context", value="training")
        for attempt in range(3):
            try:
                self.client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])])
                return
            except MlflowException as exc:
                # MLflow's get-or-create of the dataset row races between concurrent writers (two
                # tunings of one dataset); the loser finds the row on its next try.
                if attempt == 2 or "unique constraint" not in str(exc).lower():
                    raise

    def log_artifacts(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path))

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
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                logged.model,
                name=logged.name,
                signature=infer_signature(logged.example, y_example),
                input_example=logged.example,  # the default pt2 format traces the model on it
                # Stated rather than inferred: inference loads the model in a subprocess (seconds).
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                params={key: str(value) for key, value in params.items()},
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


def source_tags() -> dict[str, str]:
    """Who ran what: MLflow's own source and user tags (its UI shows "-" without them), and the
    DVC experiment's name when `dvc exp run` started the stage."""
    import getpass
    import os
    import sys

    command = (
        " ".join(["python -m pipeline", *sys.argv[1:]])[:500] if sys.argv[0].endswith("pipeline/__main__.py") else ""
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


def commit_tags(repo: Path | str = ".") -> dict[str, str]:
    commit = git_commit(repo)
    return {MLFLOW_GIT_COMMIT: commit, "git_commit": commit} if commit else {}


def _now_ms() -> int:
    return int(time.time() * 1000)
