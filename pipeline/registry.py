"""Promotion in the MLflow Model Registry: one registered model per dataset, alias `champion`.

Every promotion registers the new best model as a version; the alias moves to it only when its
val_mse is strictly below the current champion's. The decision and its reason are recorded on
the new version and on the run that produced it, so a re-run that does no better says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str
    promoted: bool
    reason: str
    val_mse: float
    champion_version: str  # the champion after the decision


def register(client: MlflowClient, model_name: str, model_uri: str, val_mse: float, about: str) -> str:
    """Register the run's logged model as a new version of `model_name`; return its version."""
    try:
        client.create_registered_model(model_name, description=about)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_registered_model(model_name, description=about)
    mlflow.set_tracking_uri(client.tracking_uri)  # register_model resolves models:/ URIs fluently
    version = mlflow.register_model(model_uri, model_name, tags={"val_mse": repr(val_mse)})
    return version.version


def champion(client: MlflowClient, model_name: str):
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _same_files(client: MlflowClient, run_id: str, other_run_id: str) -> bool:
    """Whether two runs logged the very same model files (their SHA-256 tags, see pipeline.loading)."""
    from pipeline.loading import DIGEST_TAGS

    mine, theirs = client.get_run(run_id).data.tags, client.get_run(other_run_id).data.tags
    return all(mine.get(tag) and mine.get(tag) == theirs.get(tag) for tag in DIGEST_TAGS.values())


def promote(
    client: MlflowClient,
    model_name: str,
    run_id: str,
    model_uri: str,
    val_mse: float,
    about: str = "",
    family: str = "",
) -> Decision:
    """Register `model_uri` (logged by run `run_id`) as a version of `model_name` and decide whether
    it becomes the champion.

    A model identical to the champion (same files) makes no new version: the decision says so."""
    current = champion(client, model_name)
    if current is not None and _same_files(client, run_id, current.run_id):
        reason = f"identical to champion version {current.version} (same files, SHA-256): no new version"
        client.set_tag(run_id, "promotion", "identical")
        client.set_tag(run_id, "promotion_reason", reason)
        return Decision(model_name, current.version, False, reason, val_mse, current.version)
    version = register(client, model_name, model_uri, val_mse, about)
    if current is None:
        promoted, reason = True, f"first champion: val_mse {val_mse:.6g}"
    else:
        best = float(current.tags["val_mse"])
        promoted = val_mse < best
        verb = "beats" if promoted else "does not beat"
        reason = f"val_mse {val_mse:.6g} {verb} champion version {current.version} (val_mse {best:.6g})"
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.update_model_version(model_name, version, description=f"{family or 'model'} from run {run_id}: {reason}")
    outcome = "promoted" if promoted else "kept"
    for key, value in {"promotion": outcome, "promotion_reason": reason, "family": family}.items():
        client.set_model_version_tag(model_name, version, key, value)
        client.set_tag(run_id, key, value)
    return Decision(model_name, version, promoted, reason, val_mse, version if promoted else current.version)
