"""Loading a logged model without running any code from the artifact store.

`mlflow.pytorch.load_model` (and `mlflow.pyfunc.load_model`) trust the files they download: a
pickled `model.pth` planted in the artifact store runs its payload on every machine that loads it.
This loader trusts nothing there:

- the module is rebuilt here from `spec.json` (plain JSON: family, features, widths);
- the weights are read with `torch.load(weights_only=True)`: tensors only, no objects;
- both files must match the SHA-256 that `tune` recorded as tags of the run when it logged them.
  The tags live in the tracking store, not the artifact store, so whoever can swap files cannot
  update them.

    model = load_model("models:/equations-product@champion")   # or models:/NAME/VERSION, runs:/RUN_ID
"""

from __future__ import annotations

import hashlib
import json
import pickle  # only for its exception: weights_only=True refuses anything but tensors
import re
import tempfile
from pathlib import Path

WEIGHTS, SPEC = "model.pt", "spec.json"
# Tags of the run that logged the files: the SHA-256 each file must still have.
DIGEST_TAGS = {WEIGHTS: "weights_sha256", SPEC: "spec_sha256"}
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
RUN_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})(?:/.*)?")


class ModelIntegrityError(RuntimeError):
    """A logged model whose files are missing, malformed or not the ones that were logged."""


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digests(model_dir: Path) -> dict[str, str]:
    """The tags that vouch for a model directory's files: record them when logging it."""
    return {tag: sha256(Path(model_dir) / name) for name, tag in DIGEST_TAGS.items()}


def resolve_run(client, uri: str) -> str:
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


def load_model(uri: str, tracking_uri: str | None = None):
    """The torch module logged at `uri`, rebuilt from its spec, its files checked (see module doc)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id = resolve_run(client, uri)
    tags = client.get_run(run_id).data.tags
    with tempfile.TemporaryDirectory() as tmp:
        for name in DIGEST_TAGS:
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        return load_dir(Path(tmp), tags, f"{uri} (run {run_id})")


def load_dir(model_dir: Path, expected: dict[str, str], where: str):
    """Rebuild the module in `model_dir` once each file matches its digest in `expected`."""
    import torch

    from pipeline.equations import EquationError
    from pipeline.models import ModelSpec, build_model
    from pipeline.terms import canonical

    for name, tag in DIGEST_TAGS.items():
        if tag not in expected:
            raise ModelIntegrityError(f"{where}: the run has no {tag} tag, so {name} cannot be verified; refused")
        actual = sha256(model_dir / name)
        if actual != expected[tag]:
            raise ModelIntegrityError(
                f"{where}: {name} has SHA-256 {actual[:16]}..., not the {expected[tag][:16]}... recorded when it "
                "was logged: the artifact was changed after logging; refused to load it"
            )
    try:
        spec = json.loads((model_dir / SPEC).read_text())
        n_features = int(spec["n_features"])
        # Term names go through the safe equation parser, like any equation.
        names = tuple(canonical(str(term), n_features) for term in spec.get("terms", ()))
        model_spec = ModelSpec(spec["family"], names, int(spec.get("depth", 2)), int(spec.get("width", 32)))
        model = build_model(model_spec, n_features)
        model.load_state_dict(torch.load(model_dir / WEIGHTS, weights_only=True, map_location="cpu"))
    except (KeyError, TypeError, ValueError, RuntimeError, EquationError, pickle.UnpicklingError) as exc:
        raise ModelIntegrityError(f"{where}: not a model this pipeline logged: {exc}") from None
    return model.eval()
