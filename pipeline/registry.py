"""Promotion in the MLflow Model Registry: one registered model per dataset, alias `champion`.

Each dataset's best family (`families.best_family`, the report's rule) is registered as a new
version; the alias moves to it only when its val_mse is strictly below the current champion's.
The decision and its reason are recorded on the new version and on the run that produced it, so
a re-run that does no better says why. `latest_results` finds, after a `dvc repro`, the runs to
promote.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.families import FAMILIES, best_family
from pipeline.model_files import ALL_DIGEST_TAGS, DIGEST_TAGS

CHAMPION = "champion"


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str
    promoted: bool
    reason: str
    val_mse: float
    champion_version: str  # the champion after the decision
    family: str = ""


def register(client: MlflowClient, model_name: str, model_uri: str, val_mse: float, about: str) -> str:
    """Register the run's logged model as a new version of `model_name`; return its version."""
    try:
        client.create_registered_model(model_name, description=about)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_registered_model(model_name, description=about)
    mlflow.set_tracking_uri(client.tracking_uri)  # register_model resolves models:/ URIs fluently
    # register_model says "Registered model ... already exists" of the model made just above, even
    # on the first promotion: keep its other lines ("Created version 1 ...") and drop that one.
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        version = mlflow.register_model(model_uri, model_name, tags={"val_mse": repr(val_mse)})
    sys.stderr.write("".join(line for line in said.getvalue().splitlines(True) if "already exists" not in line))
    return version.version


def champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _same_files(client: MlflowClient, run_id: str, other_run_id: str) -> bool:
    """Whether two runs logged the very same model files (their SHA-256 tags, see pipeline.model_files)."""
    mine, theirs = client.get_run(run_id).data.tags, client.get_run(other_run_id).data.tags
    return all(mine.get(tag) and mine.get(tag) == theirs.get(tag) for tag in DIGEST_TAGS.values())


def _run_digests(client: MlflowClient, run_id: str) -> dict[str, str]:
    tags = client.get_run(run_id).data.tags
    return {tag: tags[tag] for tag in ALL_DIGEST_TAGS if tag in tags}


@dataclass(frozen=True)
class Candidate:
    """A tuned model that may become a champion: the run that logged it, its model, its score."""

    run_id: str
    model_uri: str
    val_mse: float
    family: str = ""
    # The model files' SHA-256 as the stage that wrote them computed them (`model_files.digests`);
    # None: the run's tags at promotion time. The registry keeps them: see `load_model`.
    digests: dict[str, str] | None = None


def promote_best(client: MlflowClient, model_name: str, by_family: dict[str, dict], about: str) -> Decision:
    """Promote the best family of one dataset (`by_family[family]`: what `tune` returned)."""
    family = best_family(by_family)
    best = by_family[family]
    candidate = Candidate(best["run_id"], best["model_uri"], best["val_mse"], family, best.get("digests"))
    return promote(client, model_name, candidate, about)


def promote(client: MlflowClient, model_name: str, candidate: Candidate, about: str = "") -> Decision:
    """Register the candidate's model as a version of `model_name` and decide whether it becomes
    the champion. A model identical to the champion (same files) makes no new version: the
    decision says so."""
    run_id, model_uri, val_mse, family = candidate.run_id, candidate.model_uri, candidate.val_mse, candidate.family
    current = champion(client, model_name)
    if current is not None and _same_files(client, run_id, current.run_id):
        reason = f"identical to champion version {current.version} (same files, SHA-256): no new version"
        client.set_tag(run_id, "promotion", "identical")
        client.set_tag(run_id, "promotion_reason", reason)
        return Decision(model_name, current.version, False, reason, val_mse, current.version, family)
    version = register(client, model_name, model_uri, val_mse, about)
    # The registry's own record of the files: a run's tags can be rewritten by anyone who may write
    # runs (a worker's account), a model version's only by those who manage the registered model.
    for tag, digest in (candidate.digests or _run_digests(client, run_id)).items():
        client.set_model_version_tag(model_name, version, tag, digest)
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
    return Decision(model_name, version, promoted, reason, val_mse, version if promoted else current.version, family)


def latest_results(client: MlflowClient, experiment_id: str, datasets: list[str]) -> dict[str, dict[str, dict]]:
    """The latest finished parent run of each (dataset, family), as `tune` returns them: what
    `python -m pipeline promote` promotes after a `dvc repro`."""
    tuned: dict[str, dict[str, dict]] = {}
    for dataset in datasets:
        for family in FAMILIES:
            found = client.search_runs(
                [experiment_id],
                f"tags.role = 'parent' and tags.dataset = '{dataset}' and tags.model = '{family}' "
                "and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if not found:
                raise FileNotFoundError(f"no finished tuning of {dataset}/{family} in MLflow: run `dvc repro` first")
            run = found[0]
            tuned.setdefault(dataset, {})[family] = dict(run.data.metrics) | {
                "run_id": run.info.run_id,
                "model_uri": f"models:/{run.outputs.model_outputs[0].model_id}",  # its logged model
                "experiment_id": experiment_id,
            }
    return tuned
