"""Loading a logged model without running any code from the artifact store.

`mlflow.pytorch.load_model` (and `mlflow.pyfunc.load_model`) trust the files they download: a
pickled `model.pth` planted in the artifact store runs its payload on every machine that loads it.
This loader downloads only the model directory's `spec.json` and `model.pt` and rebuilds the
module with `pipeline.model_files`, which checks both against the SHA-256 that `tune` recorded as
tags of the run when it logged them. The tags live in the tracking store, not the artifact store,
so whoever can swap files cannot update them.

    model = load_model("models:/equations-product@champion")   # or models:/NAME/VERSION, runs:/RUN_ID
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import model_files

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch import nn

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
RUN_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})(?:/.*)?")


def resolve_run(client: MlflowClient, uri: str) -> str:
    """The id of the run that logged the model `uri` points at."""
    if match := RUN_URI.fullmatch(uri):
        return match["run"]
    if match := MODEL_URI.fullmatch(uri):
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            version = client.get_model_version(match["name"], match["version"])
        return version.run_id
    raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID")


def load_model(uri: str, tracking_uri: str | None = None) -> nn.Module:
    """The torch module logged at `uri`, rebuilt from its spec, its files checked (see module doc)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id = resolve_run(client, uri)
    tags = client.get_run(run_id).data.tags
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_files.DIGEST_TAGS:
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        return model_files.load(Path(tmp), tags, f"{uri} (run {run_id})")
