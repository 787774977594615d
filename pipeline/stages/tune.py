"""Stage `tune`: tune the model families on one dataset, tracked in MLflow; write their outputs.

Per family: `<models-dir>/<dataset>-<family>/`, `<metrics-dir>/<dataset>-<family>.json` and
`<plots-dir>/{loss,predictions,slice}/<dataset>-<family>.csv` (`pipeline.outputs`). The work is
`pipeline.tuning`'s; this module turns params.yaml into its plan.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import data
from pipeline.config import Params
from pipeline.families import FAMILIES
from pipeline.outputs import OutputDirs, TuneOutputs
from pipeline.stages import specs

if TYPE_CHECKING:
    from pipeline.config import TuningConfig
    from pipeline.models import ModelSpec
    from pipeline.space import SearchSpace
    from pipeline.tune import StudySettings, TuningJob


def tune(
    params: Params,
    source: data.DatasetRef,
    outputs: dict[str, TuneOutputs],
    tags: dict[str, str] | None = None,
    workers: int | None = None,
    progress: Callable = print,
) -> dict[str, dict]:
    """Tune each family of `outputs` on the dataset `source` names, one after another.

    The dataset is refused unless its MD5 is `source.md5` (when given: what DVC recorded). Returns,
    per family, the metrics plus the MLflow parent run's id (`run_id`) and its model's URI
    (`model_uri`). With `workers` (0 or more), worker processes run the trials (`pipeline.workers`):
    that many started here, and any started elsewhere with `python -m pipeline worker`.
    """
    from pipeline.tuning import Plan, tune_dataset

    # The cross library, once (probing its terms costs up to 13 ms on the Feynman table's largest).
    library, unfit = specs.library_for(params, source.name) if "cross" in outputs else ((), {})  # refused, or said
    if unfit:
        sizes = ", ".join(f"{term} ({size:.3g})" for term, size in unfit.items())
        progress(f"[{source.name}/cross] left out of the library, not finite in float32 on the inputs' ranges: {sizes}")
    dataset, source = data.load_ref(source)  # refused here, before any run is opened
    plan = Plan(
        source=source,
        data_spec=specs.dataset_spec(params, source.name),
        jobs={family: tuning_job(params, family, source.name, dataset, library) for family in outputs},
        outputs=outputs,
        facts={family: facts(params, source.name, family, unfit) for family in outputs},
    )
    return tune_dataset(plan, dataset, specs.stores(params), workers, progress, tags)


def model_spec(
    params: Params, family: str, dataset: str, proposed: tuple[str, ...] = (), library: tuple[str, ...] | None = None
) -> ModelSpec:
    """The family's architecture on a dataset. Cross: `library` (`specs.library_for`'s, computed
    here when not given) and `proposed`, terms proposed from its data."""
    from pipeline.models import ModelSpec

    cfg, mlp = params.datasets[dataset], params.models.mlp
    variables = tuple(cfg.variables) if cfg.variables is not None else ()
    if family == "cross":
        library = specs.library_for(params, dataset)[0] if library is None else library
        terms = library + tuple(term for term in proposed if term not in library)
        return ModelSpec("cross", terms=terms, variables=variables)
    if family == "mlp":
        positive = specs.dataset_spec(params, dataset).positive
        logs = tuple(name for name in variables if name in positive)
        return ModelSpec("mlp", depth=mlp.depth, width=mlp.width, variables=variables, log_inputs=logs)
    return ModelSpec(family, variables=variables)


def search_space(cfg: TuningConfig) -> SearchSpace:
    from pipeline.space import FloatSpace, IntSpace, SearchSpace

    space = cfg.space
    return SearchSpace(
        lr=FloatSpace(space.lr.low, space.lr.high, space.lr.log),
        epochs=IntSpace(space.epochs.low, space.epochs.high, space.epochs.log),
        batch_size=tuple(space.batch_size),
        optimizer=tuple(space.optimizer),
        width=tuple(space.width) if space.width else None,
        depth=tuple(space.depth) if space.depth else None,
    )


def study_settings(cfg: TuningConfig) -> StudySettings:
    from pipeline.tune import StudySettings

    return StudySettings(
        n_trials=cfg.n_trials,
        sampler_seed=cfg.sampler_seed,
        pruner=cfg.pruner.name,
        n_startup_trials=cfg.pruner.n_startup_trials,
        n_warmup_steps=cfg.pruner.n_warmup_steps,
    )


def tuning_job(params: Params, family: str, name: str, dataset: data.Dataset, library: tuple[str, ...]) -> TuningJob:
    """What tuning `family` on the dataset `name` needs; `library`: the cross family's (`specs.library_for`)."""
    from pipeline.tune import TuningJob

    cfg, declared = params.tuning[family], params.datasets[name].variables is not None
    proposed = proposed_terms(params, name, dataset) if family == "cross" else ()
    return TuningJob(
        spec=model_spec(params, family, name, proposed, library),
        space=search_space(cfg),
        settings=study_settings(cfg),
        batch=cfg.trials_per_batch,
        device=params.training.device,
        threads=params.training.threads,
        # Declared (physical) quantities train standardised; the shorthand's N(0, 1) inputs need not.
        standardize=declared,
    )


def proposed_terms(params: Params, name: str, dataset: data.Dataset) -> tuple[str, ...]:
    """Terms proposed from the training rows (`pipeline.proposals`), when the library is `auto`."""
    cross = params.models.cross
    if cross.crosses != "auto" or not cross.proposals:
        return ()
    from pipeline.proposals import propose

    return propose(dataset.X_train, dataset.y_train, params.datasets[name].inputs, tuple(cross.functions))


def facts(params: Params, dataset: str, family: str, left_out: dict[str, float]) -> dict[str, str]:
    """What the parent run's params say beside the best trial's: the dataset and the tuning budget;
    `left_out`: the cross library's terms float32 cannot hold on this dataset (`specs.library_for`)."""
    cfg, tuning = params.datasets[dataset], params.tuning[family]
    variables = {name: v.model_dump(exclude_none=True) for name, v in (cfg.variables or {}).items()}
    said = {
        "dataset.equation": cfg.equation,
        "dataset.inputs": ", ".join(cfg.inputs) if variables else f"x0..x{len(cfg.inputs) - 1}",
        "dataset.variables": json.dumps(variables) if variables else "x0..x{n-1} ~ N(0, 1)",
        "dataset.n_features": len(cfg.inputs),
        "dataset.noise_relative": cfg.noise_relative,
        "dataset.n_samples": cfg.n_samples,
        "dataset.noise": cfg.noise,
        "dataset.seed": cfg.seed,
        "tuning.n_trials": tuning.n_trials,
        "tuning.trials_per_batch": tuning.trials_per_batch,
        "tuning.sampler": f"TPE, seed {tuning.sampler_seed}, constant_liar",
        "tuning.pruner": tuning.pruner.name,
        "tuning.space": json.dumps(tuning.space.model_dump(exclude_none=True)),
        # Every other value of params.yaml this family's training read, so two runs that differ
        # only in, say, models.cross.degree differ in their params too.
        **{f"models.{family}.{k}": _value(v) for k, v in params.models.model_dump()[family].items()},
        **{f"tuning.{k}": _value(v) for k, v in tuning.model_dump(exclude={"space", "pruner"}).items()},
        **{f"tuning.pruner.{k}": _value(v) for k, v in tuning.pruner.model_dump().items()},
        **{f"training.{k}": _value(v) for k, v in params.training.model_dump().items()},
    }
    if family == "cross" and left_out:
        said["models.cross.left_out"] = ", ".join(left_out)
    return said


def _value(value: object) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Tune each model family on one dataset. Writes, per family, <models-dir>/<dataset>-<model>/, "
        "<metrics-dir>/<dataset>-<model>.json and <plots-dir>/{loss,predictions,slice}/<dataset>-<model>.csv."
    )
    parser.add_argument("--dataset", required=True, help="a key under `datasets:` in params.yaml")
    parser.add_argument(
        "--models", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="model families (default: all)"
    )
    parser.add_argument("--data", type=Path, required=True, help="arrays file written by `generate`")
    parser.add_argument("--models-dir", type=Path, required=True, help="directory for weights and readable artifacts")
    parser.add_argument("--metrics-dir", type=Path, required=True, help="directory for the metrics files (.json)")
    parser.add_argument("--plots-dir", type=Path, required=True, help="directory for the plot tables (.csv)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the trials in N worker processes here (0: only in workers started elsewhere); "
        "the study's storage should then be PostgreSQL",
    )


def main(args: argparse.Namespace, params: Params) -> None:
    params.check_dataset(args.dataset)
    if not args.data.exists():
        raise FileNotFoundError(f"--data {args.data}: not found; run `dvc repro generate@{args.dataset}` first")
    dirs = OutputDirs(args.models_dir, args.metrics_dir, args.plots_dir)
    outputs = {family: dirs.of(args.dataset, family) for family in args.models}  # in the order given, each once
    source = data.DatasetRef(args.dataset, data.locked_md5(args.data), str(args.data))
    tune(params, source, outputs, workers=args.workers)
