"""The pipeline's stages, each one function from validated params and caller-given paths.

dvc.yaml reaches them through the CLI and the Prefect flows call them directly, so both run the
very same code and write the very same artifacts. This is the only module that reads the typed
config; below it, library functions take plain arguments.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline import data as datasets
from pipeline.config import Params, TuningConfig
from pipeline.equations import parse

Progress = Callable[[str], None]


def dataset_spec(params: Params, name: str) -> datasets.DatasetSpec:
    cfg = params.datasets[name]
    return datasets.DatasetSpec(
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


def terms_for(params: Params, n_features: int) -> tuple[str, ...]:
    """The cross family's library beyond the raw inputs, canonical names in canonical order."""
    from pipeline import terms

    cross = params.models.cross
    if cross.crosses == "auto":
        return terms.library(n_features, cross.degree, tuple(cross.functions))
    named = {terms.canonical(text, n_features) for text in cross.crosses}
    return tuple(sorted((name for name in named if terms.degree_of(name) != 1), key=terms.order))


def model_spec(params: Params, family: str, n_features: int):
    from pipeline.models import ModelSpec

    if family == "cross":
        return ModelSpec("cross", terms=terms_for(params, n_features))
    if family == "mlp":
        return ModelSpec("mlp", depth=params.models.mlp.depth, width=params.models.mlp.width)
    return ModelSpec(family)


def search_space(cfg: TuningConfig):
    from pipeline.tune import FloatSpace, IntSpace, SearchSpace

    space = cfg.space
    return SearchSpace(
        lr=FloatSpace(space.lr.low, space.lr.high, space.lr.log),
        epochs=IntSpace(space.epochs.low, space.epochs.high, space.epochs.log),
        batch_size=tuple(space.batch_size),
        optimizer=tuple(space.optimizer),
        width=tuple(space.width) if space.width else None,
        depth=tuple(space.depth) if space.depth else None,
    )


def study_settings(cfg: TuningConfig):
    from pipeline.tune import StudySettings

    return StudySettings(
        n_trials=cfg.n_trials,
        sampler_seed=cfg.sampler_seed,
        pruner=cfg.pruner.name,
        n_startup_trials=cfg.pruner.n_startup_trials,
        n_warmup_steps=cfg.pruner.n_warmup_steps,
    )


# What `validate` writes: the same text whenever params.yaml is valid, so that the stages that
# depend on it (all of them) rerun for their own params, never because the check ran again.
VALID = (
    "params.yaml is valid.\n"
    "Written by the `validate` stage, which every other stage depends on: DVC runs it first, so a\n"
    "params.yaml mistake stops `dvc repro` before any stage's outputs are removed.\n"
)


def validate(params: Params, out: Path) -> None:
    """Stage `validate`: `params` were validated when they were loaded; record that in `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_text() != VALID:  # unchanged: not even its mtime moves
        out.write_text(VALID)


def generate(params: Params, name: str, data_path: Path, meta_path: Path, progress: Progress = print) -> None:
    """Stage `generate`: draw one dataset and write its arrays and metadata."""
    spec = dataset_spec(params, name)
    dataset = datasets.generate(spec)
    datasets.save(dataset, spec, Path(data_path), Path(meta_path))
    progress(
        f"[{name}] {spec.equation.text}: train {len(dataset.y_train)}, val {len(dataset.y_val)}, "
        f"ood {len(dataset.y_ood)} rows -> {data_path}"
    )


def prepare_stores(params: Params) -> None:
    """Open both stores once (creating their schema under a lock if they are new): a clear
    `StoreError` now rather than in the middle of a tuning."""
    from pipeline import stores
    from pipeline.tracking import Tracker

    Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment)
    stores.optuna_storage(params.tracking.optuna_storage_url())


def cleanup(params: Params, progress: Progress = print) -> tuple[list[str], int]:
    """End the runs and trials of processes that died without ending them (SIGKILL, power loss):
    MLflow runs become KILLED, Optuna trials FAIL. Live processes and other hosts are left alone.
    Returns the ended run ids and the number of failed trials."""
    from pipeline import stores
    from pipeline.tracking import Tracker
    from pipeline.tune import fail_orphans

    runs = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment).end_orphans()
    trials = fail_orphans(stores.optuna_storage(params.tracking.optuna_storage_url()))
    _report_cleanup(runs, trials, progress)
    if not runs and not trials:
        progress("cleanup: nothing left RUNNING by a dead process")
    return runs, trials


def locked_md5(path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The MD5 that dvc.lock records for `path` as a stage output, or None if it records none.

    Paths in dvc.lock are relative to its folder (the repo root, where DVC runs the stages)."""
    if not lock.is_file():
        return None
    try:
        key = Path(path).resolve().relative_to(lock.resolve().parent).as_posix()
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (ValueError, OSError, yaml.YAMLError, AttributeError):
        return None
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and out.get("path") == key:
                return out.get("md5")
    return None


@dataclass(frozen=True)
class TuneOutputs:
    """Where stage `tune` writes: dvc.yaml's outs for one (dataset, model)."""

    model_dir: Path  # weights, spec, readable artifacts (a DVC-cached directory)
    metrics: Path  # JSON scores (a DVC metrics file)
    loss_curve: Path  # CSV epoch, train_loss, val_loss (a DVC plot)
    predictions: Path  # CSV y_true, y_pred on validation (a DVC plot)
    slice: Path  # CSV t, y_true, y_pred along the diagonal x_i = t, far beyond training (a DVC plot)

    @classmethod
    def under(cls, models_dir: Path, metrics_dir: Path, plots_dir: Path, dataset: str, family: str) -> TuneOutputs:
        """The files of one (dataset, model) under the three output folders, named `<dataset>-<model>`."""
        key = f"{dataset}-{family}"
        plots_dir = Path(plots_dir)
        return cls(
            model_dir=Path(models_dir) / key,
            metrics=Path(metrics_dir) / f"{key}.json",
            loss_curve=plots_dir / "loss" / f"{key}.csv",
            predictions=plots_dir / "predictions" / f"{key}.csv",
            slice=plots_dir / "slice" / f"{key}.csv",
        )


SLICE = np.linspace(-6.0, 6.0, 241)  # training inputs are N(0, 1): |t| > 3 is unseen territory


def tune(
    params: Params,
    dataset_name: str,
    data_path: Path,
    outputs: dict[str, TuneOutputs],
    tags: dict[str, str] | None = None,
    progress: Progress = print,
    expected_md5: str | None = None,
    workers: int | None = None,
) -> dict[str, dict]:
    """Stage `tune`: tune each family of `outputs` on one dataset, one after another, tracked in MLflow.

    Training runs here; the record (MLflow runs, plots, stage outputs) is written by a `Recorder`
    process meanwhile. Returns, per family, the metrics plus the MLflow parent run's id (`run_id`)
    and its model's URI (`model_uri`). Parent runs end FAILED if anything fails or is interrupted.
    The dataset is refused unless its MD5 is `expected_md5` (when given: what DVC recorded). Runs
    and trials that dead processes left RUNNING in the same stores are ended first. With `workers`
    (0 or more), worker processes run the trials instead (`pipeline.workers`): that many started
    here, and any started elsewhere with `python -m pipeline worker`.
    """
    from pipeline import liveness, stores
    from pipeline.recorder import Recorder
    from pipeline.tracking import Target, commit_tags, source_tags

    dataset = datasets.load(Path(data_path), expected_md5)  # refused here, before any run is opened
    source = (dataset_name, datasets.file_md5(Path(data_path)), str(data_path))  # name, DVC hash, path
    base_tags = commit_tags() | source_tags() | {"dataset": dataset_name} | liveness.owner() | (tags or {})
    uri, experiment = params.tracking.mlflow_tracking_uri(), params.tracking.experiment
    targets = {family: Target(uri, experiment, base_tags | {"model": family}) for family in outputs}
    with Recorder() as recorder:
        # Submitted first: the recorder starts (imports, store set-up) while this process loads torch.
        orphans = recorder.submit(end_orphan_runs, Target(uri, experiment))
        opened = recorder.submit(open_runs, targets, dataset_name, {"role": "parent"}, source)
        from pipeline.tune import fail_orphans  # torch and optuna: imported while the recorder starts

        _use_threads(params.training.threads)
        storage = stores.optuna_storage(params.tracking.optuna_storage_url())
        _report_cleanup(orphans.result(), fail_orphans(storage), progress)
        parents = opened.result()
        unrecorded = dict(parents)  # parent runs not yet handed to `record_best`
        trials: list = []
        try:
            futures = {}
            for family, family_outputs in outputs.items():
                futures[family] = _tune_family(
                    params,
                    dataset,
                    (storage, workers, Path(data_path)),
                    family,
                    family_outputs,
                    recorder,
                    targets[family],
                    parents[family],
                    source,
                    trials,
                    progress,
                )
                del unrecorded[family]
            for trial in trials:
                trial.result()  # a trial that could not be recorded fails the stage
            return {family: future.result() for family, future in futures.items()}
        except BaseException:
            for family, run_id in unrecorded.items():
                recorder.submit(close_run, targets[family], run_id, "FAILED")
            raise


def _use_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _report_cleanup(runs: list[str], trials: int, progress: Progress) -> None:
    if runs or trials:
        progress(
            f"cleanup: {len(runs)} MLflow run(s) ended KILLED and {trials} Optuna trial(s) failed: "
            "their processes died without ending them"
        )


def end_orphan_runs(target) -> list[str]:
    return target.tracker().end_orphans()


def study_name(experiment: str, name: str, parent_id: str) -> str:
    """One study per tuning run, named after its MLflow parent run: `equations/product/mlp/<run id>`."""
    return f"{experiment}/{name}/{parent_id}"


def _tune_family(params, dataset, where, family, outputs, recorder, target, parent_id, source, trials: list, progress):
    """Run every trial of one family (here, or by workers); returns the recorder's future of its results."""
    storage, workers, data_path = where
    from pipeline import liveness, train
    from pipeline.tune import create_study
    from pipeline.tune import tune as run_study

    name = f"{source[0]}/{family}"
    tuning = params.tuning[family]
    tensors = train.Tensors.from_arrays(
        dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, device=params.training.device
    )
    attrs = {
        "dataset": source[0],
        "model": family,
        "equation": params.datasets[source[0]].equation,
        "mlflow_experiment": params.tracking.experiment,
        "mlflow_run_id": parent_id,
    } | liveness.owner()
    study_id = study_name(params.tracking.experiment, name, parent_id)
    study = create_study(study_id, storage, study_settings(tuning), attrs)
    recorder.submit(tag_run, target, parent_id, {"optuna_study": study.study_name})
    if workers is not None:
        result = _by_workers(
            params, study, family, dataset, data_path, tuning, recorder, target, parent_id, source, workers, progress
        )
        return _finish(params, result, recorder, target, parent_id, dataset, outputs, tuning, source, progress)
    on_ask, on_trial = _trial_logger(
        recorder, target, parent_id, name, tuning.n_trials, source, trials, progress,
        params.tracking.optuna_storage_url(),
    )  # fmt: skip
    result = run_study(
        study,
        model_spec(params, family, dataset.n_features),
        tensors,
        search_space(tuning),
        tuning.n_trials,
        tuning.sampler_seed,
        on_trial,
        batch=tuning.trials_per_batch,
        on_ask=on_ask,
    )
    return _finish(params, result, recorder, target, parent_id, dataset, outputs, tuning, source, progress)


def _finish(params, result, recorder, target, parent_id, dataset, outputs, tuning, source, progress):
    name = f"{source[0]}/{result.spec.family}"
    progress(
        f"[{name}] best trial {result.best_trial}: val_mse={result.best_value:.4g} in {result.seconds:.1f}s; "
        f"MLflow run {parent_id}"
    )
    result.model = result.model.cpu().eval()
    data_spec = dataset_spec(params, source[0])
    facts = _facts(params, source[0], tuning)
    return recorder.submit(record_best, target, parent_id, result, dataset, data_spec, outputs, facts, source[1])


def _by_workers(params, study, family, dataset, data_path, tuning, recorder, target, parent_id, source, n, progress):
    """The study's trials run by worker processes (`pipeline.workers`); the best trial's model back
    from MLflow. Returns what `tune.tune` returns."""
    import time

    from optuna.trial import TrialState

    from pipeline import workers
    from pipeline.models import ModelSpec
    from pipeline.train import History, TrainSettings
    from pipeline.tune import CHOICES, TuneResult

    start = time.perf_counter()
    name = f"{source[0]}/{family}"
    spec = model_spec(params, family, dataset.n_features)
    job = workers.job(
        study.study_name, source[0], source[1], spec, search_space(tuning), study_settings(tuning), tuning,
        params.training.device, params.training.threads,
    )  # fmt: skip
    recorder.submit(workers.publish, target, parent_id, job, data_path).result()
    uri, url = params.tracking.mlflow_tracking_uri(), params.tracking.optuna_storage_url()
    progress(f"[{name}] waiting for workers: python -m pipeline worker --parent {parent_id} --tracking-uri {uri} "
             "--storage <the study's database URL>")  # fmt: skip
    processes = workers.start_local(n, parent_id, uri, url)
    try:
        workers.wait(study, tuning.n_trials, processes, progress, name)
    finally:
        for process in processes:
            process.wait()
    if ended := workers.end_stale_runs(study, uri):
        progress(f"[{name}] {ended} trial run(s) of workers that died ended KILLED; their trials were retried")
    trial, model, spec_json, history = workers.collect(study, uri)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return TuneResult(
        best_params=trial.params | {k: v for k, v in trial.user_attrs.items() if k in CHOICES},
        best_value=trial.value,
        best_trial=trial.number,
        model=model,
        spec=ModelSpec(spec_json["family"], tuple(spec_json["terms"]), spec_json["depth"], spec_json["width"]),
        settings=TrainSettings(**spec_json["settings"]),
        history=History(history["train_loss"], history["val_loss"]),
        n_complete=states.count(TrialState.COMPLETE),
        n_pruned=states.count(TrialState.PRUNED),
        seconds=time.perf_counter() - start,
    )


def _facts(params: Params, dataset: str, tuning: TuningConfig) -> dict[str, str]:
    """What the parent run's params say beside the best trial's: the dataset and the tuning budget."""
    cfg = params.datasets[dataset]
    return {
        "dataset.equation": cfg.equation,
        "dataset.n_features": cfg.n_features,
        "dataset.n_samples": cfg.n_samples,
        "dataset.noise": cfg.noise,
        "dataset.seed": cfg.seed,
        "tuning.n_trials": tuning.n_trials,
        "tuning.trials_per_batch": tuning.trials_per_batch,
        "tuning.sampler": f"TPE, seed {tuning.sampler_seed}, constant_liar",
        "tuning.pruner": tuning.pruner.name,
        "tuning.space": json.dumps(tuning.space.model_dump(exclude_none=True)),
    }


def open_runs(targets: dict, dataset_name: str, tags: dict[str, str], source: tuple[str, str, str]) -> dict:
    """One new run per target (named `<dataset>/<key>`), each recording its dataset; their ids by key."""
    return {key: open_run(target, f"{dataset_name}/{key}", tags, None, source) for key, target in targets.items()}


def open_run(target, name: str, tags: dict[str, str], parent_id: str | None, source: tuple[str, str, str]) -> str:
    """A new MLflow run recording its dataset (name, DVC hash, path); returns its id."""
    tracker = target.tracker()
    run_id = tracker.start(name, tags, parent_id)
    tracker.log_dataset(run_id, *source)
    return run_id


def open_trial_run(target, name, tags, parent_id, source, storage_url: str, trial_id: int) -> str:
    """A trial's nested run, its id recorded on the Optuna trial (`mlflow_run_id`, for
    optuna-dashboard); runs in the recorder process."""
    from pipeline.tune import record_user_attrs

    run_id = open_run(target, name, tags, parent_id, source)
    record_user_attrs(storage_url, trial_id, {"mlflow_run_id": run_id})
    _OPENED[(parent_id, int(tags["trial"]))] = run_id
    return run_id


# Trial runs this recorder process opened, by (parent run, trial number): `record_trial` jobs name
# their run so, and the one worker process runs jobs in order, so the run is always there.
_OPENED: dict[tuple[str, int], str] = {}


def tag_run(target, run_id: str, tags: dict[str, str]) -> None:
    target.tracker().log(run_id, tags=tags)


def close_run(target, run_id: str, status: str) -> None:
    target.tracker().end(run_id, status)


def _trial_logger(recorder, target, parent_id, name, n_trials, source, pending: list, progress, storage_url: str):
    """(on_ask, on_trial) for `tune.tune`: each trial's nested MLflow run is opened by the recorder
    as soon as the trial is asked (its id becomes the trial's user attribute `mlflow_run_id`, for
    optuna-dashboard), and filled and ended when the trial is over."""
    best = {"value": float("inf"), "done": 0}

    def on_ask(asked):
        for trial in asked:
            number, tags = trial.number, {"trial": str(trial.number)}
            run = f"{name}/trial-{number}"
            job = (open_trial_run, target, run, tags, parent_id, source, storage_url, trial._trial_id)
            pending.append(recorder.submit(*job))
        return None  # the recorder gives each trial its run id (`open_trial_run`): no waiting here

    def on_trial(outcome) -> None:
        value = outcome.history.val_loss[-1] if outcome.history.val_loss else float("nan")
        if outcome.state == "COMPLETE":
            best["value"] = min(best["value"], value)
        best["done"] += 1
        pending.append(recorder.submit(record_trial, target, (parent_id, outcome.number), outcome))
        # Optuna's trial number, as in "best trial N", the study and the run name; then how many are done.
        progress(
            f"[{name}] trial {outcome.number} ({best['done']} of {n_trials}) {outcome.state.lower()}: "
            f"val_mse={value:.4g} after {len(outcome.history.val_loss)} epochs; best {best['value']:.4g}"
        )

    return on_ask, on_trial


def record_trial(target, run: str | tuple[str, int], outcome) -> None:
    """Fill a trial's nested run (its id, or (parent run, trial number) of a run `open_trial_run`
    opened in this process): its params, final val_mse if it completed, per-epoch curves; end it."""
    run_id = _OPENED.pop(run) if isinstance(run, tuple) else run
    value = outcome.history.val_loss[-1] if outcome.history.val_loss else float("nan")
    # A diverged trial failed; an interrupted one (Ctrl-C, SIGTERM) was killed.
    status = {"DIVERGED": "FAILED", "FAIL": "KILLED"}.get(outcome.state, "FINISHED")
    tracker = target.tracker()
    try:
        metrics = {"val_mse": value} if outcome.state == "COMPLETE" else None
        tracker.log(run_id, params=outcome.params, metrics=metrics, tags={"optuna_state": outcome.state})
        tracker.log_history(run_id, outcome.history.train_loss, outcome.history.val_loss)
    except BaseException:
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id, status)


def record_best(
    target,
    parent_id: str,
    result,
    dataset,
    data_spec,
    outputs: TuneOutputs,
    facts: dict | None = None,
    source_digest: str = "",
) -> dict:
    """Score the best model, write the stage outputs, complete the parent run; returns the metrics,
    `run_id` and `model_uri`. The parent run ends FAILED if any of it fails."""
    from pipeline import loading

    tracker = target.tracker()
    name = f"{data_spec.name}/{result.spec.family}"
    try:
        sparse = recover(result.model, dataset)
        metrics = evaluate(dataset, data_spec.equation, result.model, result.spec, sparse) | {
            # The best trial's own val_mse, as its nested run and the study have it (float32, during
            # training); `val_mse` is the final model's, re-measured in float64 (for the linear
            # families: the sparse equation read back from it).
            "best_trial_val_mse": result.best_value,
            "n_trials_complete": result.n_complete,
            "n_trials_pruned": result.n_pruned,
            "tune_seconds": round(result.seconds, 3),
            "train_seconds": round(result.history.seconds, 3),
        }
        metrics["n_parameters"] = sum(p.numel() for p in result.model.parameters())
        files = write_artifacts(result.model, result, metrics, dataset, data_spec, name, outputs, sparse)
        # The files' SHA-256 go to the tracking store: `pipeline.load_model` refuses files that differ.
        tags = _equation_tags(result.model) | loading.digests(outputs.model_dir)
        tags["mlflow.note.content"] = _description(data_spec, result, metrics, tags.get("recovered_equation"))
        params = _run_params(result) | (facts or {})
        tracker.log(parent_id, params=params, tags=tags)
        tracker.log_history(parent_id, result.history.train_loss, result.history.val_loss)
        tracker.log_artifacts(parent_id, files)
        X_example = np.asarray(dataset.X_val[:5], dtype=np.float32)
        model_name = f"{data_spec.name}-{result.spec.family}"
        model_uri = tracker.log_torch_model(
            parent_id, result.model, X_example, model_name, params, metrics, (data_spec.name, source_digest)
        )
    except BaseException:
        tracker.end(parent_id, "FAILED")
        raise
    tracker.end(parent_id, "FINISHED")
    return metrics | {"run_id": parent_id, "model_uri": model_uri, "experiment_id": tracker.experiment_id}


@dataclass
class Recovered:
    """A linear-family model made sparse: what training gave, what was kept and how it scores."""

    trained: dict[str, float]  # the trained model's coefficient of every feature
    sparse: object  # reference.Sparse
    trained_val_mse: float


def recover(model, dataset: datasets.Dataset) -> Recovered | None:
    """For the linear families, replace the trained weights by the sparse equation read from them
    (`reference.sparse_refit`); the MLP is left as it is (None)."""
    from pipeline import reference

    if not hasattr(model, "coefficients"):
        return None
    trained = model.coefficients()
    trained_val_mse = float(np.mean((predict(model, dataset.X_val) - dataset.y_val) ** 2))
    sparse = reference.sparse_refit(
        dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, model.terms, trained
    )
    model.set_coefficients(sparse.table)
    return Recovered(trained, sparse, trained_val_mse)


def evaluate(dataset: datasets.Dataset, equation, model, spec, recovered: Recovered | None = None) -> dict:
    """Scores of the final model against the noise floor (every family) and against the best its
    family can reach (the linear families' least-squares optimum), with its recovery of the terms."""
    from pipeline import reference

    def mse(X, y) -> float:
        return float(np.mean((predict(model, X) - y) ** 2))

    val_mse = mse(dataset.X_val, dataset.y_val)
    floor = reference.floor_mse(equation, dataset.X_val, dataset.y_val)
    metrics = {
        "val_mse": val_mse,
        "train_mse": mse(dataset.X_train, dataset.y_train),
        "ood_mse": mse(dataset.X_ood, dataset.y_ood),
        "floor_mse": floor,
        "excess": val_mse - floor,  # above what no model can beat
    }
    if recovered is None:  # the MLP: no closed form to compare with; the report sets it beside the others
        return metrics
    optimum = reference.optimum_mse(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, spec.terms)
    found = reference.recovery(recovered.sparse.table, reference.true_coefficients(equation))
    return metrics | {
        "optimum_mse": optimum,
        "gap": val_mse - optimum,
        # A ratio only means something against a non-zero optimum (not an exact-fit problem).
        "gap_ratio": (val_mse - optimum) / optimum if optimum > 1e-8 else None,
        "trained_val_mse": recovered.trained_val_mse,
        "n_terms": len(recovered.sparse.kept),
        "terms_found": len(found["found"]) if found else None,
        "terms_spurious": len(found["spurious"]) if found else None,
        "terms_missed": len(found["missed"]) if found else None,
        "coef_error": found.get("coef_error"),
    }


def predict(model, X: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X, dtype=np.float32))).double().numpy()


def write_artifacts(
    model, result, metrics, dataset, data_spec, title, outputs: TuneOutputs, recovered: Recovered | None = None
) -> list[Path]:
    """Write the stage outputs; the model directory appears whole or not at all."""
    import torch

    from pipeline import reference, report

    y_val_pred = predict(model, dataset.X_val)
    X_slice = np.repeat(SLICE[:, None], dataset.n_features, axis=1)
    slice_columns = {"t": SLICE, "y_true": data_spec.equation(X_slice), "y_pred": predict(model, X_slice)}

    model_dir = Path(outputs.model_dir)
    staging = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.save(model.state_dict(), staging / "model.pt")
    (staging / "spec.json").write_text(
        json.dumps(
            asdict(result.spec) | {"n_features": dataset.n_features, "settings": asdict(result.settings)}, indent=2
        )
    )
    report.plot_loss_curve(staging / "loss_curve.png", result.history.train_loss, result.history.val_loss, title)
    report.plot_predictions(staging / "predictions.png", {title: (dataset.y_val, y_val_pred)}, title)
    report.plot_slice(staging / "slice.png", {title: slice_columns}, title, (data_spec.ood_low, data_spec.ood_high))
    if recovered is not None:
        coefficients = model.coefficients()
        truth = reference.true_coefficients(data_spec.equation)
        readable = {
            "coefficients.json": coefficients,  # the final model's, every feature (0 where dropped)
            "trained_coefficients.json": recovered.trained,  # as training left them, before the sparse refit
            "recovery.json": {
                "kept": recovered.sparse.kept,
                "threshold": recovered.sparse.threshold,
                "path": [{"terms": n, "val_mse": mse} for n, mse in recovered.sparse.path],
                **{k: v for k, v in reference.recovery(coefficients, truth).items() if k != "coef_error"},
            },
        }
        for file, content in readable.items():
            (staging / file).write_text(json.dumps(content, indent=2) + "\n")
        (staging / "equation.txt").write_text(reference.format_equation(coefficients) + "\n")
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)
    report.write_table(
        outputs.loss_curve,
        {
            "epoch": range(len(result.history.val_loss)),
            "train_loss": result.history.train_loss,
            "val_loss": result.history.val_loss,
        },
    )
    report.write_table(outputs.predictions, {"y_true": dataset.y_val, "y_pred": y_val_pred})
    report.write_table(outputs.slice, slice_columns)
    Path(outputs.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(outputs.metrics).write_text(json.dumps({k: v for k, v in metrics.items() if v is not None}, indent=2) + "\n")
    return sorted(model_dir.iterdir())


def _description(data_spec, result, metrics: dict, recovered: str | None) -> str:
    """The parent run's description in the MLflow UI: what was fitted, how well, what came back."""
    spec = data_spec
    text = (
        f"**{spec.name} / {result.spec.family}**: `y = {spec.equation.text}` ({spec.equation.n_features} inputs, "
        f"{spec.n_samples} rows, noise {spec.noise}). Best of {result.n_complete + result.n_pruned} trials "
        f"(trial {result.best_trial}): val_mse {metrics['val_mse']:.3g} against a noise floor of "
        f"{metrics['floor_mse']:.3g}, out of range {metrics['ood_mse']:.3g}."
    )
    if recovered:
        text += f" Equation read back from the weights: `{recovered}`."
    return text + " The verdict across families is in the `report` run (summary.md)."


def _run_params(result) -> dict:
    return result.best_params | {"family": result.spec.family, "best_trial": result.best_trial}


def _equation_tags(model) -> dict:
    from pipeline.reference import format_equation

    return {"recovered_equation": format_equation(model.coefficients())} if hasattr(model, "coefficients") else {}


def compare(
    params: Params,
    metrics_dir: Path,
    models_dir: Path,
    plots_dir: Path,
    out_dir: Path,
    tags: dict[str, str] | None = None,
    progress: Progress = print,
) -> dict:
    """Stage `compare`: collect every (dataset, model) result and write the report to `out_dir`."""
    from pipeline import reference, report
    from pipeline.config import FAMILIES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    images = ["comparison.png"]
    for dataset in params.datasets:
        spec = dataset_spec(params, dataset)
        truth = reference.true_coefficients(spec.equation)
        predictions, slices = {}, {}
        for family in FAMILIES:
            outputs = TuneOutputs.under(models_dir, metrics_dir, plots_dir, dataset, family)
            if not outputs.metrics.exists():
                raise FileNotFoundError(f"{outputs.metrics}: missing; run the tune stage for {dataset} first")
            entry = json.loads(outputs.metrics.read_text())
            equation = outputs.model_dir / "equation.txt"
            entry["equation"] = equation.read_text().strip() if equation.exists() else None
            entry["true_equation"] = reference.format_equation(truth) if truth else f"y = {spec.equation.text}"
            entry |= _context(params, dataset, family, truth)
            found = outputs.model_dir / "recovery.json"
            if found.exists():
                entry["recovery"] = json.loads(found.read_text())
                entry["recovery"]["suggestions"] = [
                    reference.suggestion(term, params.models.cross.degree) for term in entry["recovery"]["outside"]
                ]
            results.setdefault(dataset, {})[family] = entry
            table = report.read_table(outputs.predictions)
            predictions[family] = (table["y_true"], table["y_pred"])
            slices[family] = report.read_table(outputs.slice)
        report.plot_dataset(out_dir / f"{dataset}.png", dataset, predictions, slices, (spec.ood_low, spec.ood_high))
        images.append(f"{dataset}.png")
    _remove_stale_plots(params, metrics_dir, models_dir, plots_dir, progress)
    report.plot_comparison(out_dir / "comparison.png", results)
    (out_dir / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write_summary(out_dir / "summary.md", results, images)
    _log_report(params, out_dir, tags or {})
    progress(f"report written to {out_dir / 'summary.md'}")
    return results


def _remove_stale_plots(params: Params, metrics_dir, models_dir, plots_dir, progress: Progress) -> None:
    """Plot tables of datasets no longer in params.yaml: DVC leaves the outputs of stages that are
    gone, and `dvc plots show` would still draw them."""
    from pipeline.config import FAMILIES

    current = {
        getattr(TuneOutputs.under(models_dir, metrics_dir, plots_dir, d, f), kind)
        for d in params.datasets
        for f in FAMILIES
        for kind in ("loss_curve", "predictions", "slice")
    }
    for folder in {path.parent for path in current}:
        for table in sorted(Path(folder).glob("*.csv")):
            if table not in current:
                table.unlink()
                progress(f"removed {table}: its dataset is no longer in params.yaml")


def _context(params: Params, dataset: str, family: str, truth: dict | None) -> dict:
    """What the verdicts need to know of a dataset beside the scores: rows, features, noise, shape."""
    from pipeline import terms

    cfg = params.datasets[dataset]
    n_train = cfg.n_samples - max(1, round(cfg.n_samples * cfg.val_fraction))  # as `data.generate` splits
    n_terms = len(terms_for(params, cfg.n_features)) if family == "cross" else 0
    linear = truth is not None and all(name == terms.CONSTANT or terms.degree_of(name) == 1 for name in truth)
    return {
        "n_train": n_train,
        "n_inputs": cfg.n_features,
        "n_model_features": cfg.n_features + n_terms if family != "mlp" else None,
        "noise": cfg.noise,
        # Linear in its inputs: straight-line extrapolation is then exactly right.
        "linear_truth": linear,
    }


def _log_report(params: Params, out_dir: Path, tags: dict[str, str]) -> None:
    """The report as one MLflow run (tag role=report) beside the parent runs it summarises."""
    from pipeline.tracking import Tracker, commit_tags

    tracker = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment, tags=commit_tags() | tags)
    with tracker.run("report", {"role": "report"}) as run_id:
        tracker.log_artifacts(run_id, sorted(out_dir.iterdir()))


def latest_results(params: Params) -> dict[str, dict[str, dict]]:
    """The latest finished parent run of each (dataset, family) of params.yaml, as `tune` returns
    them: what `python -m pipeline promote` promotes after a `dvc repro`."""
    from pipeline.config import FAMILIES
    from pipeline.tracking import Tracker

    tracker = Tracker(params.tracking.mlflow_tracking_uri(), params.tracking.experiment)
    tuned: dict[str, dict[str, dict]] = {}
    for dataset in params.datasets:
        for family in FAMILIES:
            found = tracker.client.search_runs(
                [tracker.experiment_id],
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
                "experiment_id": tracker.experiment_id,
            }
    return tuned


def promote(params: Params, tuned: dict[str, dict[str, dict]], progress: Progress = print) -> list:
    """Register each dataset's best model (the report's rule, `report.best_family`); move its
    `champion` alias only if it is better.

    `tuned[dataset][family]` is what `tune` returned (metrics, `run_id` and `model_uri`).
    """
    from mlflow import MlflowClient

    from pipeline import registry, report

    client = MlflowClient(params.tracking.mlflow_tracking_uri())
    decisions = []
    for dataset, by_family in tuned.items():
        family = report.best_family(by_family)
        best = by_family[family]
        name = f"{params.tracking.experiment}-{dataset}"
        about = (
            f"The best model for dataset `{dataset}` (`y = {params.datasets[dataset].equation}`), chosen as the "
            "report chooses: the simplest family that reaches the noise floor, else the lowest val_mse. "
            "`champion` points at the version with the lowest val_mse so far. Load it without pickle: "
            f"`python -m pipeline predict --model models:/{name}@champion --row=...`."
        )
        decision = registry.promote(client, name, best["run_id"], best["model_uri"], best["val_mse"], about, family)
        progress(f"[{dataset}] {family}: {decision.reason}")
        decisions.append(decision)
    return decisions
