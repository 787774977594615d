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
    variables = tuple(
        data.Variable(name=v, dist=c.dist, low=c.low or 0.0, high=c.high or 0.0, mean=c.mean or 0.0,
                      std=c.std or 1.0, ood=c.ood)
        for v, c in (cfg.variables or {}).items()
    )  # fmt: skip
    return data.DatasetSpec(
        name=name,
        equation=parse(cfg.equation, cfg.inputs),
        n_samples=cfg.n_samples,
        val_fraction=cfg.val_fraction,
        noise=cfg.noise,
        seed=cfg.seed,
        ood_low=cfg.ood.low,
        ood_high=cfg.ood.high,
        ood_samples=cfg.ood.n_samples,
        noise_relative=cfg.noise_relative,
        variables=variables,
    )


def stores(params: Params) -> Stores:
    tracking = params.tracking
    return Stores(tracking.mlflow_tracking_uri(), tracking.experiment, tracking.optuna_storage_url())


def terms_for(params: Params, dataset: str) -> tuple[str, ...]:
    """The cross family's library beyond the raw inputs, canonical names in canonical order (the
    terms proposed from the data, `pipeline.proposals`, come on top, in `tune`)."""
    from pipeline import terms

    cross, inputs = params.models.cross, params.datasets[dataset].inputs
    if cross.crosses == "auto":
        return terms.library(inputs, cross.degree, tuple(cross.functions), tuple(cross.powers))
    named = {terms.canonical(text, inputs) for text in cross.crosses}
    named = {name for name in named if terms.degree_of(name, inputs) != 1}  # the raw inputs are always there
    return tuple(sorted(named, key=lambda name: terms.order(name, inputs)))
