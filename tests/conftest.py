"""Shared fixtures: the real params.yaml, shrunk, with every output under tmp_path."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _fast_tests_start_no_server(request):
    """A fast test that runs a Prefect flow fails (no API) rather than starting a temporary server:
    a server's start costs seconds, and the fast tests are the inner loop."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    from prefect.settings import PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}):
        yield


def sh(root: Path, *args: str, timeout: int = 600, env: dict | None = None) -> str:
    """Run a command in `root` with this venv first on PATH; fail the test with its output if it fails."""
    env = (env or os.environ) | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def git_commit_all(root: Path, message: str) -> None:
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", message)


def make_repo(root: Path, params_raw: dict) -> Path:
    """A git + DVC repo holding this project's code and dvc.yaml with the given params.

    Its DVC remote is the project's default (a folder beside the repo), so each repo has its own.
    """
    root.mkdir(parents=True, exist_ok=True)
    for package in ("pipeline", "flows"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "prefect.toml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (root / "params.yaml").write_text(yaml.safe_dump(params_raw, sort_keys=False))
    sh(root, "git", "init", "-q")
    git_commit_all(root, "pipeline")
    return root


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made, once a session: MLflow's migrations take 1.5 to
    2.5 s a store, copying the file 0.1 s."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path, _empty_mlflow_db) -> str:
    """A real, empty MLflow SQLite store of the test's own: `tmp_path/mlflow.db`, as MLflow makes it."""
    shutil.copy(_empty_mlflow_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def default_params_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def shrink(raw: dict, datasets: tuple[str, ...] = ("linear", "product"), n_samples: int = 300) -> dict:
    """The real params with fewer rows, trials and epochs: fast, yet every code path runs."""
    small = copy.deepcopy(raw)
    small["datasets"] = {name: small["datasets"][name] | {"n_samples": n_samples} for name in datasets}
    for tuning in small["tuning"].values():
        tuning["n_trials"] = 2
        tuning["space"]["epochs"] = {"low": 5, "high": 8}
        tuning["pruner"]["n_startup_trials"] = 1
        tuning["pruner"]["n_warmup_steps"] = 2
    small["tuning"]["mlp"]["space"]["width"] = [8]
    small["tuning"]["mlp"]["space"]["depth"] = [1]
    return small


@pytest.fixture
def shrunk_params_raw(default_params_raw) -> dict:
    return shrink(default_params_raw)


def lock_md5(root: Path, path: str) -> str:
    """The md5 that dvc.lock records for the output `path`."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise KeyError(path)


def stored(cache_or_remote: Path, md5: str) -> bool:
    """Whether a DVC cache or local remote holds the object with this md5."""
    return (cache_or_remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def run(root: Path, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Like `sh`, for commands that are expected to fail: the finished process, whatever its exit code."""
    env = (env or os.environ) | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


# Tests that need programs pip does not install: one message for them all, before anything runs.
NEEDS = {
    "browser": ("chromium", lambda: Path("/usr/bin/chromium").exists()),
    "test_scale_out": ("postgresql (initdb, pg_ctl)", lambda: _postgres_installed()),
    "test_prefect_workers": ("postgresql (initdb, pg_ctl)", lambda: _postgres_installed()),
}


MISSING = pytest.StashKey[str]()  # under xdist: what the workers found missing


def _postgres_installed() -> bool:
    return bool(shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")))


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what will not run
def pytest_collection_modifyitems(config, items):
    wanted = {key for item in items for key in NEEDS if item.get_closest_marker(key) or item.module.__name__ == key}
    missing = sorted({NEEDS[key][0] for key in wanted if not NEEDS[key][1]()})
    if not missing:
        return
    packages = " ".join(sorted({name.split()[0] for name in missing}))
    message = (
        f"missing system packages: {', '.join(missing)}. Install them (`sudo apt-get install {packages}`, "
        "as .ci/run does) or leave those tests out (`-m 'not browser'`, `--ignore tests/test_scale_out.py`)."
    )
    if hasattr(config, "workerinput"):  # an xdist worker: pytest.exit here would crash it, so it runs
        items[:] = []  # nothing and hands the message to the controller, which says it once
        config.workeroutput["missing"] = message
        return
    pytest.exit(message, returncode=4)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, on the controller: a worker is done
def pytest_testnodedown(node, error):
    message = getattr(node, "workeroutput", {}).get("missing")
    if message:
        node.config.stash[MISSING] = message


def pytest_sessionfinish(session, exitstatus):
    message = session.config.stash.get(MISSING, None)
    if message and not hasattr(session.config, "workerinput"):
        session.config.get_terminal_writer().line(message, red=True)
        session.exitstatus = 4
