"""params.yaml validation: the defaults load; a bad value is named with its key, before any work."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def test_default_params_hold_the_three_problems():
    params = load_params(ROOT / "params.yaml")
    assert {name: (d.equation, d.n_features) for name, d in params.datasets.items()} == {
        "linear": ("2*x0 - 3*x1 + 1", 10),
        "product": ("(2*x0 - 3)*(x1 + 1)", 10),
        "square": ("x0**2", 1),
    }
    assert all(d.n_samples == 1000 and d.val_fraction == 0.2 and d.noise == 0 for d in params.datasets.values())
    # Relative SQLite paths are anchored at the params file's folder, whatever the working directory.
    assert params.tracking.mlflow_uri == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert params.tracking.optuna_storage == f"sqlite:///{ROOT / 'optuna.db'}"


def _with(raw: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[leaf] = value
    return changed


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("datasets.linear.n_samples", -5, "datasets.linear.n_samples = -5"),
        ("datasets.linear.val_fraction", 1.5, "datasets.linear.val_fraction = 1.5"),
        ("datasets.linear.noise", -1, "datasets.linear.noise = -1"),
        ("datasets.linear.equation", "x12 + 1", "datasets.linear.equation = 'x12 + 1': variable out of range"),
        ("datasets.square.equation", "__import__('os')", "datasets.square.equation = \"__import__('os')\""),
        ("datasets.linear.n_featurez", 3, "datasets.linear.n_featurez = 3: Extra inputs are not permitted"),
        ("tuning.mlp.n_trials", 0, "tuning.mlp.n_trials = 0"),
        ("tuning.mlp.space.optimizer", ["rmsprop"], "tuning.mlp.space.optimizer.0 = 'rmsprop'"),
        ("tuning.linear.space.lr", {"low": 0.5, "high": 0.1}, "low (0.5) is above high (0.1)"),
        ("models.cross.crosses", ["x0+x1"], "models.cross.crosses = ['x0+x1']: 'x0+x1' is not a single term"),
        ("models.cross.crosses", ["x0*x1"], "'x1' at column 4 of 'x0*x1' (dataset 'square')"),
        ("models.cross.crosses", ["__import__('os')"], "only these functions can be called"),
        ("models.cross.degree", 5, "models.cross.degree = 5: Input should be less than or equal to 4"),
        ("models.cross.functions", ["system"], "models.cross.functions.0 = 'system': Input should be 'sin'"),
        ("models.mlp.depth", "deep", "models.mlp.depth = 'deep'"),
        ("training.device", "tpu", "training.device = 'tpu': String should match pattern '^(cpu|cuda(:\\d+)?|mps)$'"),
        ("training.device", "cuda:x", "training.device = 'cuda:x'"),
    ],
)
def test_bad_value_names_key_and_value(default_params_raw, key, value, expected):
    with pytest.raises(ConfigError) as info:
        validate_params(_with(default_params_raw, key, value))
    assert expected in str(info.value)


def test_missing_tuning_entry_is_named(default_params_raw):
    raw = copy.deepcopy(default_params_raw)
    del raw["tuning"]["cross"]
    with pytest.raises(ConfigError, match=r"no entry for model\(s\) \['cross'\]"):
        validate_params(raw)


def test_bad_dataset_name_is_refused(default_params_raw):
    raw = copy.deepcopy(default_params_raw)
    raw["datasets"]["../evil"] = raw["datasets"]["linear"]
    with pytest.raises(ConfigError, match=r"dataset name '\.\./evil'"):
        validate_params(raw)


def test_unreadable_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("datasets: [unclosed")
    with pytest.raises(ConfigError, match="cannot read YAML"):
        load_params(broken)


def test_a_key_twice_in_a_mapping_is_refused_naming_it_and_its_lines(default_params_raw, tmp_path):
    # A dataset copied and not renamed: PyYAML alone would keep the second and drop the first.
    text = yaml.safe_dump(default_params_raw, sort_keys=False)
    lines = text.splitlines()
    first, second = lines.index("  linear:") + 1, lines.index("  product:") + 1
    (tmp_path / "params.yaml").write_text(text.replace("  product:\n", "  linear:\n", 1))
    message = f"the key 'linear' is twice in one mapping (lines {first} and {second})"
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'params.yaml'}: cannot read YAML: {message}")):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(text.replace("dataset_defaults: {}", "dataset_defaults: {seed: 1, seed: 2}"))
    with pytest.raises(ConfigError, match=r"the key 'seed' is twice in one mapping \(line 1\)"):
        load_params(tmp_path / "params.yaml")
    # The same name in different mappings (datasets, models, tuning) is fine, and so is a key that
    # overrides one merged in from an anchor, as YAML intends.
    raw = copy.deepcopy(default_params_raw)
    raw["datasets"]["square"] = {"equation": "x0**2", "seed": 5}
    merged = yaml.safe_dump(raw, sort_keys=False).replace("  linear:\n", "  linear: &base\n", 1)
    (tmp_path / "params.yaml").write_text(merged.replace("  square:\n", "  square:\n    <<: *base\n", 1))
    square = load_params(tmp_path / "params.yaml").datasets["square"]
    assert (square.equation, square.n_features, square.seed, square.n_samples) == ("x0**2", 10, 5, 1000)


def test_absolute_and_server_urls_are_kept(default_params_raw, tmp_path):
    raw = copy.deepcopy(default_params_raw)
    raw["tracking"] |= {"mlflow_uri": "http://127.0.0.1:5000", "optuna_storage": "sqlite:////srv/optuna.db"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    tracking = load_params(tmp_path / "params.yaml").tracking
    assert (tracking.mlflow_uri, tracking.optuna_storage) == ("http://127.0.0.1:5000", "sqlite:////srv/optuna.db")


def test_environment_overrides_storage_urls(monkeypatch):
    params = load_params(ROOT / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@h/db")
    assert params.tracking.mlflow_tracking_uri() == "http://127.0.0.1:5000"
    assert params.tracking.optuna_storage_url() == "postgresql://u@h/db"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_validate_writes_the_same_checks_wherever_the_checkout_lies(tmp_path):
    """checks/tune.json is a DVC dependency of every `tune` stage: the stores' paths as written,
    not anchored at the checkout (a clone elsewhere retrained every dataset)."""
    written = []
    for folder in ("one", "two/deeper"):
        checkout = tmp_path / folder
        checkout.mkdir(parents=True)
        (checkout / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        result = run_cli("--params", str(checkout / "params.yaml"), "validate", "--out", str(checkout / "checks"))
        assert result.returncode == 0, result.stderr
        written.append({p.relative_to(checkout): p.read_bytes() for p in (checkout / "checks").rglob("*.json")})
    assert written[0] == written[1] and len(written[0]) == 5  # three datasets, tune.json, compare.json
    tracking = json.loads(written[0][Path("checks/tune.json")])["tracking"]
    assert (tracking["mlflow_uri"], tracking["optuna_storage"]) == ("sqlite:///mlflow.db", "sqlite:///optuna.db")
    # What the stages use is still anchored at the params file's folder.
    anchored = load_params(tmp_path / "one" / "params.yaml").tracking.mlflow_uri
    assert anchored == f"sqlite:///{(tmp_path / 'one' / 'mlflow.db').resolve()}"


def test_cli_refuses_bad_params_before_writing_anything(default_params_raw, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with(default_params_raw, "datasets.linear.seed", -1)))
    data = tmp_path / "data"
    result = run_cli(
        *f"--params {params} generate --dataset linear --out {data}/linear.npz --meta {data}/linear.json".split()
    )
    assert result.returncode == 2
    assert "datasets.linear.seed = -1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()


def test_the_flow_command_refuses_bad_params_before_prefect_starts(default_params_raw, tmp_path, capsys):
    from flows.experiment import main  # `python -m flows.experiment`, in this process: no server (conftest)

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(default_params_raw, "training.device", "tpu")))
    with pytest.raises(SystemExit) as exit:
        main(["--repo", str(tmp_path), "--no-push"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'params.yaml'}: invalid parameters",
        "  training.device = 'tpu': String should match pattern '^(cpu|cuda(:\\d+)?|mps)$'",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no Prefect API, no store, no output


def test_cli_names_an_unknown_dataset(tmp_path):
    result = run_cli(
        "generate", "--dataset", "cubic", "--out", str(tmp_path / "a.npz"), "--meta", str(tmp_path / "a.json")
    )
    assert result.returncode == 2
    assert "--dataset 'cubic': not in params.yaml datasets ['linear', 'product', 'square']" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_help_lists_the_stages():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("generate", "tune", "compare"):
        assert command in result.stdout


def test_cli_tune_without_data_says_what_to_run(tmp_path):
    outputs = f"--models-dir {tmp_path}/m --metrics-dir {tmp_path}/m --plots-dir {tmp_path}/p"
    result = run_cli(*f"tune --dataset product --models mlp --data {tmp_path}/none.npz {outputs}".split())
    assert result.returncode == 2
    assert "none.npz: not found; run `dvc repro generate@product` first" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_compare_without_tunings_says_what_to_run_and_writes_nothing(tmp_path):
    dirs = f"--metrics-dir {tmp_path}/m --models-dir {tmp_path}/mo --plots-dir {tmp_path}/p --out {tmp_path}/r"
    result = run_cli(*f"compare {dirs}".split())
    assert result.returncode == 2
    assert f"{tmp_path}/m/linear-linear.json: missing; run the tune stage for linear first" in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even an empty reports folder


def test_cli_refuses_an_unknown_model_family():
    outputs = "--models-dir m --metrics-dir m --plots-dir p"
    result = run_cli(*f"tune --dataset product --models linear svm --data x {outputs}".split())
    assert result.returncode == 2 and "invalid choice: 'svm'" in result.stderr


def _missing_keys(model: type, node: dict, where: str, optional: set[str]) -> list[str]:
    """Fields of a config model that `node` (params.yaml's text for it) does not write out."""
    from pydantic import BaseModel

    missing = []
    for name, field in model.model_fields.items():
        if f"{model.__name__}.{name}" in optional:
            continue
        if name not in node:
            missing.append(f"{where}.{name}")
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(node[name], dict):
            missing += _missing_keys(sub, node[name], f"{where}.{name}", optional)
    return missing


def test_params_yaml_writes_out_every_key_so_dvc_exp_run_can_set_it():
    """`dvc exp run -S key=value` needs the key in params.yaml (else: "Key 'degree' is not in struct")."""
    from pipeline import config

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Alternatives and MLP-only keys: a dataset gives n_features or variables; width/depth are the MLP's.
    alternatives = {"DatasetConfig.variables", "Params.dataset_defaults"}
    missing = _missing_keys(config.Params, raw, "params", alternatives | {"Params.datasets", "Params.tuning"})
    for name, dataset in raw["datasets"].items():
        missing += _missing_keys(config.DatasetConfig, dataset, f"datasets.{name}", alternatives)
    for family, tuning in raw["tuning"].items():
        mlp_only = set() if family == "mlp" else {"SearchSpaceConfig.width", "SearchSpaceConfig.depth"}
        missing += _missing_keys(config.TuningConfig, tuning, f"tuning.{family}", mlp_only)
    assert missing == []
    assert set(raw["tuning"]) == {"linear", "cross", "mlp"} and "dataset_defaults" in raw


def test_store_errors_never_show_a_password_and_name_a_missing_driver(monkeypatch, capsys):
    import sys

    from pipeline import cli, stores, study_storage
    from pipeline.errors import redact

    assert redact("postgresql+psycopg2://equations:s3cret@db/optuna") == "postgresql+psycopg2://equations:***@db/optuna"
    assert redact("http://u@h:5000 sqlite:///mlflow.db") == "http://u@h:5000 sqlite:///mlflow.db"  # no password
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as on a machine without the postgres extra
    with pytest.raises(stores.StoreError) as error:
        study_storage.optuna_storage("postgresql+psycopg2://u:s3cret@127.0.0.1:1/optuna")
    message = str(error.value)
    assert "s3cret" not in message and "u:***@127.0.0.1" in message
    assert "pip install 'equation-pipeline[postgres]'" in message
    # A worker given no store at all: one line naming the option and the variable.
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:s3cret@127.0.0.1:1")
    assert cli.main(["worker", "--parent", "0" * 32]) == 2
    assert capsys.readouterr().err.strip() == "error: --storage: not given and OPTUNA_STORAGE is not set"


def test_start_up_errors_come_in_seconds_and_say_what_is_wrong(tmp_path, monkeypatch, capsys):
    import time

    from pipeline import cli, stores, study_storage

    # A tracking server nobody answers at: seconds, not MLflow's minutes of retries; no password shown.
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:s3cret@127.0.0.1:1")
    start = time.monotonic()
    assert cli.main(["worker", "--parent", "0" * 32]) == 1
    error = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 10 and "s3cret" not in error
    assert error.startswith("error: MLflow tracking server http://u:***@127.0.0.1:1: unreachable (ConnectError")
    # postgres:// (Heroku's spelling) is no SQLAlchemy dialect: said so, with the spelling that works.
    with pytest.raises(stores.StoreError, match=r"unsupported URL scheme postgres://: write postgresql\+psycopg2://"):
        study_storage.optuna_storage("postgres://u:s3cret@127.0.0.1:1/optuna")
    # A worker's database without Optuna's tables (a wrong name): said, and no tables made there.
    empty = tmp_path / "other.db"
    with pytest.raises(stores.StoreError, match="holds no Optuna studies .* the database the tuning stage uses"):
        study_storage.optuna_storage(f"sqlite:///{empty}", existing=True)
    import sqlite3

    assert sqlite3.connect(empty).execute("select name from sqlite_master").fetchall() == []
    # The bound on waiting out a store: a bad value names the variable and the value.
    monkeypatch.setenv("EQUATIONS_STORE_WAIT_S", "a minute")
    with pytest.raises(stores.StoreWaitError, match="EQUATIONS_STORE_WAIT_S='a minute': expected seconds"):
        stores.wait_s()
