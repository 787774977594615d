"""Shared fixtures: the real params.yaml, shrunk, with every output under tmp_path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


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
