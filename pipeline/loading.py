"""Loading a logged model without running any code from the artifact store.

`mlflow.pytorch.load_model` (and `mlflow.pyfunc.load_model`) trust the files they download: a
pickled `model.pth` planted in the artifact store runs its payload on every machine that loads it.
This loader downloads only the model directory's `spec.json` and `model.pt` and rebuilds the
module with `pipeline.model_files`, which checks both against SHA-256 digests recorded apart from
the files: for a registered model (`models:/...`), those the registry recorded on the version when
it was promoted (`pipeline.registry`), which only the registered model's managers can change; for
a run (`runs:/...`), the run's tags, which anyone who may write that run's artifacts may also
rewrite (on a tracking server with authentication: the workers' account). A promoted model whose
run's tags no longer match the version's is refused too: someone rewrote them.

    model = load_model("models:/equations-product@champion")   # or models:/NAME/VERSION, runs:/RUN_ID
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import model_files
from pipeline.errors import InputError, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch import nn

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
RUN_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})(?:/.*)?")


def resolve_run(client: MlflowClient, uri: str) -> tuple[str, dict[str, str]]:
    """The id of the run that logged the model `uri` points at, and the digests its files must
    have: the model version's tags (the registry's record), else the run's. A URI that names
    nothing in this tracking store is bad input (`InputError`), said with the store."""
    from mlflow.exceptions import MlflowException

    try:
        return _resolve_run(client, uri)
    except MlflowException as exc:
        # Not found: an unknown run, model or version (RESOURCE_DOES_NOT_EXIST), or alias (INVALID_PARAMETER_VALUE).
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise InputError(
            f"model {uri!r}: {exc.message.rstrip('.')} in the tracking store {redact(client.tracking_uri)}"
        ) from None


def _resolve_run(client: MlflowClient, uri: str) -> tuple[str, dict[str, str]]:
    if match := RUN_URI.fullmatch(uri):
        return match["run"], client.get_run(match["run"]).data.tags
    if match := MODEL_URI.fullmatch(uri):
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            version = client.get_model_version(match["name"], match["version"])
        return version.run_id, _registered_digests(client, version, uri)
    raise InputError(f"model URI {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID")


def _registered_digests(client: MlflowClient, version: object, uri: str) -> dict[str, str]:
    """The version's digest tags; the run's where the version has none (promoted before the
    registry kept them). A run whose tags differ from the version's was rewritten: refused."""
    recorded = {tag: version.tags[tag] for tag in model_files.ALL_DIGEST_TAGS if tag in version.tags}
    run_tags = client.get_run(version.run_id).data.tags
    if not recorded:
        return run_tags
    if changed := [tag for tag, digest in recorded.items() if run_tags.get(tag) != digest]:
        raise model_files.ModelIntegrityError(
            f"{uri} (run {version.run_id}): the run's {', '.join(changed)} differ from what the registry recorded "
            f"at promotion (version {version.version}): the run was changed after promotion; refused to load it"
        )
    return recorded


def load_model(uri: str, tracking_uri: str | None = None, equation: bool = False) -> nn.Module:
    """The torch module logged at `uri`, rebuilt from its spec, its files checked (see module doc);
    with `equation`, a linear family's module holding the equation read back from it instead of
    the network's weights (its `coefficients.json`, checked the same way)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id, tags = resolve_run(client, uri)
    where = f"{uri} (run {run_id})"

    def download(name: str, folder: str) -> None:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=folder,
                                            tracking_uri=client.tracking_uri)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        for name in model_files.DIGEST_TAGS:
            download(name, tmp)
        model = model_files.load(Path(tmp), tags, where)
        if not equation:
            return model
        if not hasattr(model, "coefficients"):
            raise InputError(f"--equation: {where} is an MLP; no equation is read back from an MLP")
        if model_files.EQUATION_TAG not in tags:
            raise InputError(f"--equation: {where} was logged without an {model_files.EQUATION_TAG} tag (before "
                             "this version): its equation cannot be verified; rerun its tuning")  # fmt: skip
        download(model_files.EQUATION, tmp)
        return model_files.with_equation(Path(tmp), tags, where, model)
