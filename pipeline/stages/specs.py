"""params.yaml, validated, turned into the library's records that several stages share: a
dataset's spec, the cross family's library of terms, the stores. (What only `tune` needs is in
`pipeline.stages.tune`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import data
from pipeline.equations import parse
from pipeline.stores import Stores

if TYPE_CHECKING:
    from pipeline.config import Params


def dataset_spec(params: Params, name: str) -> data.DatasetSpec:
    cfg = params.datasets[name]
    return data.DatasetSpec(
        name=name,
        equation=parse(cfg.equation, cfg.n_features),
        n_samples=cfg.n_samples,
        val_fraction=cfg.val_fraction,
        noise=cfg.noise,
        seed=cfg.seed,
        ood_low=cfg.ood.low,
        ood_high=cfg.ood.high,
        ood_samples=cfg.ood.n_samples,
    )


def stores(params: Params) -> Stores:
    tracking = params.tracking
    return Stores(tracking.mlflow_tracking_uri(), tracking.experiment, tracking.optuna_storage_url())


def terms_for(params: Params, n_features: int) -> tuple[str, ...]:
    """The cross family's library beyond the raw inputs, canonical names in canonical order."""
    from pipeline import terms

    cross = params.models.cross
    if cross.crosses == "auto":
        return terms.library(n_features, cross.degree, tuple(cross.functions))
    named = {terms.canonical(text, n_features) for text in cross.crosses}
    return tuple(sorted((name for name in named if terms.degree_of(name) != 1), key=terms.order))
