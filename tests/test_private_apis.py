"""The private names of our dependencies that we use, each in its one module, still exist in the
versions installed, and those versions are the ones pyproject pins (see optuna_private.py and
flows/prefect_private.py for why each is used)."""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib.metadata import version

import optuna
from conftest import ROOT
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def pinned(name: str) -> SpecifierSet:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if d.split(">")[0].split("=")[0].split("<")[0] == name)
    return SpecifierSet(spec[len(name) :])


def test_optuna_is_a_pinned_version_and_has_the_private_names_we_use(tmp_path):
    assert Version(version("optuna")) in pinned("optuna")
    from optuna.storages._rdb import models

    assert callable(models.TrialIntermediateValueModel.intermediate_value_to_stored_repr)
    assert callable(models.TrialValueModel.value_to_stored_repr)
    # optuna_private.store_trials writes these columns of Optuna's tables.
    for model, columns in {
        models.TrialModel: {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"},
        models.TrialParamModel: {"trial_id", "param_name", "param_value", "distribution_json"},
        models.TrialValueModel: {"trial_id", "objective", "value", "value_type"},
        models.TrialUserAttributeModel: {"trial_id", "key", "value_json"},
        models.TrialSystemAttributeModel: {"trial_id", "key", "value_json"},
        models.TrialIntermediateValueModel: {"trial_id", "step", "intermediate_value", "intermediate_value_type"},
    }.items():
        assert columns <= set(model.__table__.columns.keys()), model.__name__
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    assert isinstance(trial._trial_id, int) and isinstance(study._storage, optuna.storages.BaseStorage)
    assert study._study_id == study._storage.get_study_id_from_name(study.study_name)  # optuna_private.study_id
    backend = getattr(study._storage, "_backend", study._storage)
    assert callable(backend.scoped_session.remove)  # optuna_private.reset_session
    # optuna_private.retrying_storage: what Optuna's cache wrapper calls on the storage it wraps.
    from optuna.storages._heartbeat import BaseHeartbeat

    from pipeline.optuna_private import _BACKEND_CALLS

    assert isinstance(backend, optuna.storages.RDBStorage) and issubclass(optuna.storages.RDBStorage, BaseHeartbeat)
    assert all(callable(getattr(backend, name, None)) for name in _BACKEND_CALLS)
    cached = inspect.getsource(type(study._storage))
    assert set(re.findall(r"self\._backend\.(_\w+)\(", cached)) <= set(_BACKEND_CALLS) | {"_get_stale_trial_ids"}


def test_prefect_is_a_pinned_version_and_has_the_private_names_we_use():
    assert Version(version("prefect")) in pinned("prefect")
    from prefect.task_worker import TaskWorker

    for name in ("_subscribe_to_task_scheduling", "_acquire_token", "_safe_submit_scheduled_task_run"):
        assert callable(getattr(TaskWorker, name, None)), name
    # Instance attributes, set in __init__ (a TaskWorker can only be built inside an event loop).
    source = inspect.getsource(TaskWorker.__init__)
    assert "self._limiter" in source and "self._runs_task_group" in source


def test_torch_is_the_pinned_version_and_its_fused_adamw_step_moves_parameters_as_the_public_one():
    assert Version(version("torch").split("+")[0]) in pinned("torch")
    import torch
    from torch.optim.adamw import adamw

    from pipeline.torch_private import adam_direction

    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 50, generator=generator) for _ in range(4)]
    ours = [torch.zeros(3, 50), torch.zeros(3, 50), torch.zeros(3, 50), torch.zeros(())]
    public = [tensor.clone() for tensor in ours]
    for grad in grads:  # four steps: the bias corrections depend on the step count
        ours[0].zero_(), public[0].zero_()
        adam_direction(ours[0], grad, (ours[1], ours[2]), ours[3], (0.9, 0.999), 1e-8)
        scratch, exp_avg, exp_avg_sq, steps = public
        adamw([scratch], [grad], [exp_avg], [exp_avg_sq], [], [steps], fused=True, lr=1.0,
              beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(ours, public, strict=True))
    assert float(ours[3]) == 4.0 and ours[0].abs().min() > 0  # moved: a direction, not zeros
