"""params.yaml, validated, turned into the library's records that several stages share: a
dataset's spec, the cross family's library of terms, the stores. (What only `tune` needs is in
`pipeline.stages.tune`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline import data
from pipeline.config import ConfigError
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


def library_for(params: Params, dataset: str) -> tuple[tuple[str, ...], dict[str, float]]:
    """The cross family's library beyond the raw inputs, canonical names in canonical order (the
    terms proposed from the data, `pipeline.proposals`, come on top, in `tune`); and the automatic
    library's terms left out on this dataset, with the size each reaches: those not computable in
    float32 where its inputs may be drawn (`pipeline.probe`; m1**2 of a planet's mass in kg). Such a
    term listed under models.cross.crosses is refused."""
    from pipeline import probe, terms

    cross, cfg = params.models.cross, params.datasets[dataset]
    if cross.crosses == "auto":
        library = terms.library(cfg.inputs, cross.degree, tuple(cross.functions), tuple(cross.powers))
    else:
        named = {terms.canonical(text, cfg.inputs) for text in cross.crosses}
        named = {name for name in named if terms.degree_of(name, cfg.inputs) != 1}  # the raw inputs are always there
        library = tuple(sorted(named, key=lambda name: terms.order(name, cfg.inputs)))
    unfit = probe.unfit_terms(cfg.ranges, library, cfg.inputs)
    if unfit and cross.crosses != "auto":
        term, size = next(iter(unfit.items()))
        raise ConfigError(
            f"models.cross.crosses: the term {term} reaches {size:.3g} where the inputs of dataset {dataset!r} "
            f"may be drawn, not a finite float32 (largest {probe.FLOAT32_MAX:.3g}; models train in float32): "
            "leave it out, or change the inputs' units"
        )
    return tuple(term for term in library if term not in unfit), unfit
