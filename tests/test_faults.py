"""Faults, concurrency and hostile input, with real processes and real SQLite stores.

Each test starts `python -m pipeline ...` the way dvc.yaml does, in a fresh folder with stores
of its own, breaks something (kills, races, truncates, tampers) and asserts the end state, read
back through MlflowClient and Optuna's API.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import BIN, git_commit_all, make_repo, run, sh, shrink
from mlflow import MlflowClient
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

EXPLODING = "(x0+x1+x2+x3+x4+x5+x6+x7+x8+x9)**10"  # 92,378 terms once expanded


def env() -> dict:
    base = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return {k: v for k, v in base.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}


def slow_mlp(raw: dict, epochs: int = 3000, n_trials: int = 4) -> dict:
    """Shrunk params whose MLP trials take seconds: long enough to be killed mid-batch."""
    params = shrink(raw, datasets=("product",))
    mlp = params["tuning"]["mlp"]
    mlp.update(n_trials=n_trials, trials_per_batch=n_trials)
    mlp["pruner"]["name"] = "none"
    mlp["space"].update(epochs={"low": epochs, "high": epochs + 500}, width=[32], depth=[3])
    return params


def folder(root: Path, params: dict) -> Path:
    """A folder with params.yaml and the `product` dataset generated: what a tune stage starts from."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "python", "-m", "pipeline", "generate", "--dataset", "product", "--out", "data/product.npz",
       "--meta", "data/product.json")  # fmt: skip
    return root


def tune_cmd(out: str, *models: str) -> list[str]:
    return [
        "python", "-m", "pipeline", "tune", "--dataset", "product", "--data", "data/product.npz",
        "--models-dir", f"{out}/models", "--metrics-dir", f"{out}/metrics", "--plots-dir", f"{out}/plots",
        *(["--models", *models] if models else []),
    ]  # fmt: skip


def start(root: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def all_runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("equations")
    return client.search_runs([experiment.experiment_id], max_results=5000)


def all_studies(root: Path) -> dict[str, optuna.Study]:
    storage = f"sqlite:///{root / 'optuna.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}  # fmt: skip


def running_trials(root: Path) -> int:
    """Counted with plain SQL while a tuning writes: no Optuna cache in the way."""
    try:
        with sqlite3.connect(f"file:{root / 'optuna.db'}?mode=ro", uri=True, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def open_trial_runs(root: Path, model: str) -> int:
    """The model's trials whose MLflow runs are open (RUNNING): a batch asked and training. (The
    Optuna study of a one-process tuning holds a batch only once it is over.)"""
    query = """SELECT COUNT(*) FROM runs r WHERE r.status = 'RUNNING'
               AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'trial')
               AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'model' AND t.value = ?)"""
    try:
        with sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(query, (model,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def test_four_tunings_at_once_on_fresh_stores_all_succeed(tmp_path, default_params_raw):
    root = folder(tmp_path / "w", shrink(default_params_raw, datasets=("product",)))
    assert not (root / "mlflow.db").exists() and not (root / "optuna.db").exists()
    processes = [start(root, tune_cmd(f"out{i}")) for i in range(4)]
    results = [finish(p) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0, 0], "\n".join(out[-2000:] for _, out in results)
    runs = all_runs(root)
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 4 * 3 and len(trials) == 4 * 3 * 2  # 4 tunings x 3 families, 2 trials each
    assert {r.info.status for r in runs} == {"FINISHED"}
    studies = all_studies(root)
    assert len(studies) == 12
    assert all([t.state for t in s.trials] == [TrialState.COMPLETE] * 2 for s in studies.values())
    # Made in write-ahead-log mode, under the lock, by whichever process came first (`stores.journaled`).
    for store in ("mlflow.db", "optuna.db"):
        with contextlib.closing(sqlite3.connect(root / store)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal", store


def test_two_dvc_stages_at_once_on_fresh_stores_both_succeed(tmp_path, default_params_raw):
    root = make_repo(tmp_path / "repo", shrink(default_params_raw))
    sh(root, "dvc", "repro", "generate@linear", "generate@product", "code-tune")  # what tune@ reads
    git_commit_all(root, "data")
    assert not (root / "mlflow.db").exists()
    stages = [start(root, ["dvc", "repro", "--single-item", f"tune@{d}"]) for d in ("linear", "product")]
    results = [finish(p) for p in stages]
    assert [code for code, _ in results] == [0, 0], "\n".join(out[-2000:] for _, out in results)
    parents = [r for r in all_runs(root) if r.data.tags.get("role") == "parent"]
    assert sorted((r.data.tags["dataset"], r.info.status) for r in parents) == sorted(
        [("linear", "FINISHED")] * 3 + [("product", "FINISHED")] * 3
    )


def test_two_tunings_of_one_pair_a_second_apart_keep_their_own_studies(tmp_path, default_params_raw):
    root = folder(tmp_path / "w", slow_mlp(default_params_raw, epochs=1500))
    first = start(root, tune_cmd("a", "mlp"))
    time.sleep(1.0)
    second = start(root, tune_cmd("b", "mlp"))
    results = [finish(first), finish(second)]
    assert [code for code, _ in results] == [0, 0], "\n".join(out[-2000:] for _, out in results)
    studies = all_studies(root)
    assert len(studies) == 2 and all(name.startswith("equations/product/mlp #") for name in studies)
    runs = {r.info.run_id: r for r in all_runs(root)}
    values = []
    for study in studies.values():
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
        parent = runs[study.user_attrs["mlflow_run_id"]]
        assert parent.info.status == "FINISHED" and parent.data.tags["optuna_study"] == study.study_name
        children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(int(r.data.tags["trial"]) for r in children) == [0, 1, 2, 3]
        # Each Optuna trial names its nested run (optuna-dashboard shows the id), and that run is its own.
        by_trial = {int(r.data.tags["trial"]): r for r in children}
        assert [t.user_attrs["mlflow_run_id"] for t in study.trials] == [by_trial[n].info.run_id for n in range(4)]
        assert [by_trial[t.number].data.metrics["val_mse"] for t in study.trials] == [t.value for t in study.trials]
        values.append(study.best_value)
    assert values[0] == values[1]  # same params, same result: nothing of one leaked into the other
    metrics = [json.loads((root / out / "metrics" / "product-mlp.json").read_text()) for out in ("a", "b")]
    assert metrics[0]["val_mse"] == metrics[1]["val_mse"]


def test_sigkill_then_the_next_run_leaves_nothing_running(tmp_path, default_params_raw):
    root = folder(tmp_path / "w", slow_mlp(default_params_raw))
    victim = start(root, tune_cmd("a", "mlp"))
    wait_for(lambda: open_trial_runs(root, "mlp") == 4, 120, "the batch of 4 trials to be training")
    victim.send_signal(signal.SIGKILL)
    assert finish(victim)[0] == -signal.SIGKILL
    time.sleep(2.5)  # the recorder process notices its parent is gone and exits within a second
    left = [r for r in all_runs(root) if r.info.status == "RUNNING"]
    parent = [r for r in left if r.data.tags.get("role") == "parent"]
    assert len(parent) == 1 and len(left) == 5  # and the trials' runs the recorder had opened
    # The batch never ended, so its study holds none of its trials: nothing RUNNING in Optuna.
    assert running_trials(root) == 0

    code, output = finish(start(root, tune_cmd("b", "linear")))  # the next run of the stage
    assert code == 0, output
    assert f"cleanup: {len(left)} MLflow run(s) ended KILLED and 0 Optuna trial(s) failed" in output
    runs = {r.info.run_id: r for r in all_runs(root)}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"] and running_trials(root) == 0
    assert {runs[r.info.run_id].info.status for r in left} == {"KILLED"}
    killed = [s for s in all_studies(root).values() if s.user_attrs["model"] == "mlp"]
    assert killed[0].trials == [] and killed[0].user_attrs["tuning_ended"]  # looked at once, then left alone


def test_sigterm_fails_the_trials_and_ends_every_run(tmp_path, default_params_raw):
    root = folder(tmp_path / "w", slow_mlp(default_params_raw))
    victim = start(root, tune_cmd("a", "linear", "mlp"))
    wait_for(lambda: open_trial_runs(root, "mlp") == 4, 120, "the MLP batch of 4 trials to be training")
    victim.send_signal(signal.SIGTERM)
    code, output = finish(victim)
    assert code == 128 + signal.SIGTERM, output
    runs = all_runs(root)
    assert not [r for r in runs if r.info.status == "RUNNING"] and running_trials(root) == 0
    parents = {r.data.tags["model"]: r.info.status for r in runs if r.data.tags.get("role") == "parent"}
    assert parents == {"linear": "FINISHED", "mlp": "FAILED"}
    mlp = next(s for s in all_studies(root).values() if s.user_attrs["model"] == "mlp")
    assert [t.state for t in mlp.trials] == [TrialState.FAIL] * 4
    interrupted = [r for r in runs if r.data.tags.get("optuna_state") == "FAIL"]
    assert sorted(int(r.data.tags["trial"]) for r in interrupted) == [0, 1, 2, 3]
    assert {r.info.status for r in interrupted} == {"KILLED"}
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for r in interrupted:  # both stores hold the epochs each trial had run when it was stopped
        curve = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "val_loss")}
        trial = mlp.trials[int(r.data.tags["trial"])]
        assert curve == pytest.approx({e: trial.intermediate_values[e] for e in curve})
        # To the epoch it was stopped at (none, when SIGTERM came before its first epoch ended).
        assert (max(curve) if curve else -1) == len(trial.intermediate_values) - 1
        assert 0 in curve or not trial.intermediate_values
    assert "Traceback" not in output


def test_an_exploding_polynomial_is_refused_in_under_a_second(tmp_path, default_params_raw):
    from pipeline.config import ConfigError, validate_params

    params = shrink(default_params_raw, datasets=("product",))
    params["datasets"]["product"]["equation"] = EXPLODING
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"datasets.product.equation = .*92,378 terms"):
        validate_params(params)
    assert time.perf_counter() - started < 1.0

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    started = time.perf_counter()
    refused = run(tmp_path, "python", "-m", "pipeline", "generate", "--dataset", "product", "--out", "d.npz",
                  "--meta", "d.json")  # fmt: skip
    assert time.perf_counter() - started < 10  # a process start; the check itself is microseconds
    assert refused.returncode == 2 and "datasets.product.equation" in refused.stderr and "92,378" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_a_truncated_or_changed_dataset_is_one_line_naming_the_file(tmp_path, default_params_raw):
    root = make_repo(tmp_path / "repo", shrink(default_params_raw, datasets=("product",)))
    sh(root, "dvc", "repro", "generate@product")
    data = root / "data" / "product.npz"
    data.write_bytes(data.read_bytes()[:300])
    stage = ["--models-dir", "models", "--metrics-dir", "metrics", "--plots-dir", "plots"]
    tune = ["python", "-m", "pipeline", "tune", "--dataset", "product", "--data", "data/product.npz", *stage]
    changed = run(root, *tune)  # dvc.lock recorded another MD5
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1, changed.stderr
    assert changed.stderr.startswith("error: data/product.npz: MD5 ") and "dvc checkout" in changed.stderr
    (root / "dvc.lock").unlink()  # no record to compare with: the file itself is refused
    truncated = run(root, *tune)
    assert truncated.returncode == 2 and truncated.stderr.count("\n") == 1, truncated.stderr
    assert truncated.stderr.startswith("error: data/product.npz: not a readable dataset file")
    assert not (root / "mlflow.db").exists() and not (root / "models").exists()  # refused before any run


def test_store_faults_are_one_line_naming_the_store(tmp_path, default_params_raw):
    root = folder(tmp_path / "w", shrink(default_params_raw, datasets=("product",)))
    junk = root / "junk.db"
    junk.write_text("not a database " * 100)
    newer = root / "newer.db"
    MlflowClient(f"sqlite:///{newer}").search_experiments()  # a real store, then a schema from the future
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    cases = {
        f"sqlite:///{root / 'missing' / 'mlflow.db'}": "folder",
        f"sqlite:///{junk}": "not an SQLite database",
        f"sqlite:///{newer}": "newer than this MLflow",
    }
    for uri, reason in cases.items():
        result = subprocess.run(
            ["python", "-m", "pipeline", "cleanup"], cwd=root, capture_output=True, text=True, timeout=120,
            env=env() | {"MLFLOW_TRACKING_URI": uri},
        )  # fmt: skip
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: MLflow tracking store {uri}: ") and reason in result.stderr


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, default_params_raw):
    """A tuned linear model on `product`, registered as `equations-product@champion`; tuned once
    for the tests that use it (a tuning costs about 20 s), which get it through `champion`."""
    from pipeline import registry

    root = folder(tmp_path_factory.mktemp("champion") / "w", shrink(default_params_raw, datasets=("product",)))
    sh(root, *tune_cmd("out", "linear"))
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    parent = next(r for r in all_runs(root) if r.data.tags.get("role") == "parent")
    # Registering sets MLflow's tracking URI, which also exports MLFLOW_TRACKING_URI: the patch
    # takes it back afterwards, so later tests do not write to this store.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
        candidate = registry.Candidate(parent.info.run_id, f"runs:/{parent.info.run_id}/product-linear", 1.0)
        registry.promote(client, "equations-product", candidate)
        yield root, client, parent


@pytest.fixture
def champion(promoted):
    """The promoted champion, its artifacts as they were logged: the tests plant files in the
    artifact store, and each one's plants are taken out after it."""
    artifacts = Path(promoted[2].info.artifact_uri.removeprefix("file://"))
    logged = {path: path.read_bytes() for path in artifacts.rglob("*") if path.is_file()}
    yield promoted
    for path in artifacts.rglob("*"):
        if path.is_file() and path not in logged:
            path.unlink()
    for path, content in logged.items():
        path.write_bytes(content)


def test_a_champion_loads_back_without_pickle(champion):
    import pipeline

    root, client, parent = champion
    model = pipeline.load_model("models:/equations-product@champion", client.tracking_uri)
    X = np.load(root / "data" / "product.npz")["X_val"][:3]
    rows = [",".join(repr(float(v)) for v in x) for x in X]
    printed = sh(root, "python", "-m", "pipeline", "predict", "--model", "models:/equations-product@champion",
                 *[f"--row={row}" for row in rows])  # fmt: skip
    from pipeline.evaluation import predict

    assert [float(line) for line in printed.split()] == pytest.approx(predict(model, X).tolist(), rel=1e-5)
    metrics = json.loads((root / "out" / "metrics" / "product-linear.json").read_text())
    y_val = np.load(root / "data" / "product.npz")["y_val"]
    X_val = np.load(root / "data" / "product.npz")["X_val"]
    assert float(np.mean((predict(model, X_val) - y_val) ** 2)) == pytest.approx(metrics["val_mse"], rel=1e-6)


def test_a_champion_predicts_with_its_equation_checked_like_its_weights(champion):
    root, client, parent = champion
    X = np.load(root / "data" / "product.npz")["X_val"][:3]
    rows = [f"--row={','.join(repr(float(v)) for v in x)}" for x in X]
    champion_uri = ["--model", "models:/equations-product@champion"]
    printed = sh(root, "python", "-m", "pipeline", "predict", *champion_uri, "--equation", *rows)
    # The equation read back (its file in the stage's outputs), evaluated here in float64.
    table = json.loads((root / "out" / "models" / "product-linear" / "coefficients.json").read_text())
    expected = X @ np.array([table[f"x{i}"] for i in range(10)]) + table["1"]
    assert [float(line) for line in printed.split()] == pytest.approx(expected.tolist(), rel=1e-5)
    network = sh(root, "python", "-m", "pipeline", "predict", *champion_uri, *rows)
    assert network != printed  # the network's own weights are not the sparse equation's
    # The equation's file changed in the artifact store: refused like the weights, nothing printed.
    planted = Path(parent.info.artifact_uri.removeprefix("file://")) / "coefficients.json"
    planted.write_text(json.dumps(table | {"x0": 1000.0}))
    refused = run(root, "python", "-m", "pipeline", "predict", *champion_uri, "--equation", *rows)
    assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1, refused.stderr
    assert "coefficients.json has SHA-256" in refused.stderr and "refused to load it" in refused.stderr


def test_a_tampered_champion_is_refused_and_its_payload_never_runs(champion, tmp_path):
    import pipeline
    from pipeline.model_files import ModelIntegrityError, digests, load

    root, client, parent = champion
    marker = tmp_path / "payload-ran"

    class Payload:  # what an attacker with write access to the artifact store plants
        def __reduce__(self):
            return (Path.touch, (marker,))

    planted = pickle.dumps(Payload())
    weights = Path(parent.info.artifact_uri.removeprefix("file://")) / "model.pt"
    weights.write_bytes(planted)

    with pytest.raises(ModelIntegrityError, match=r"model.pt has SHA-256 .* not the .* recorded when it was logged"):
        pipeline.load_model("models:/equations-product@champion", client.tracking_uri)
    refused = run(root, "python", "-m", "pipeline", "predict", "--model", "models:/equations-product@champion",
                  "--row", ",".join(["0"] * 10))  # fmt: skip
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "refused to load it" in refused.stderr
    # Even with digests that match the planted file, the weights are read without pickle.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.pt").write_bytes(planted)
    (copy / "spec.json").write_bytes((weights.parent / "spec.json").read_bytes())
    with pytest.raises(ModelIntegrityError, match="not a model this pipeline logged"):
        load(copy, digests(copy), "a planted copy")
    assert not marker.exists()
    pickle.loads(planted)  # the payload is live: plain pickle runs it
    assert marker.exists()
