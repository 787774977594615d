"""The model directory: one trained model as files, written and read here alone.

- `spec.json`: what to build (family, feature terms, depth, width, the number of inputs) and how it
  was trained (its `TrainSettings`), plain JSON;
- `model.pt`: its `state_dict`, tensors only, read back with `torch.load(weights_only=True)`;
- `history.json` (optional): its per-epoch training and validation losses;
- `coefficients.json` (linear families): the coefficients of the equation read back from it
  (`evaluation.readable` writes it), which `predict --equation` serves instead of the network.

Reading trusts nothing in the folder: the module is rebuilt from `spec.json` (terms re-parsed by
the safe equation parser), the weights are read without pickle, and both files must match the
SHA-256 digests the caller recorded when the model was written (`digests`); so must the
equation's file when it is read (`with_equation`).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle  # only for its exception: weights_only=True refuses anything but tensors
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import FaultError

if TYPE_CHECKING:
    from torch import nn

    from pipeline.models import ModelSpec
    from pipeline.train import History, Member

WEIGHTS, SPEC, HISTORY, EQUATION = "model.pt", "spec.json", "history.json", "coefficients.json"
# The tags (of the MLflow run that logged the files) holding the SHA-256 each file must still have.
DIGEST_TAGS = {WEIGHTS: "weights_sha256", SPEC: "spec_sha256"}
EQUATION_TAG = "equation_sha256"  # only where the directory holds an equation (linear families)
ALL_DIGEST_TAGS = (*DIGEST_TAGS.values(), EQUATION_TAG)


class ModelIntegrityError(FaultError):
    """A model directory whose files are missing, malformed or not the ones that were written."""


def write(folder: Path, model: nn.Module, member: Member, n_features: int) -> None:
    """`model.pt` and `spec.json` of a trained model into `folder` (which must exist)."""
    import torch

    torch.save(model.state_dict(), Path(folder) / WEIGHTS)
    spec = asdict(member.spec) | {"n_features": n_features, "settings": asdict(member.settings)}
    for key in ("variables", "log_inputs"):  # empty for the shorthand: spec.json as version 2 wrote it
        if not spec[key]:
            del spec[key]
    (Path(folder) / SPEC).write_text(json.dumps(spec, indent=2))


def write_history(folder: Path, history: History) -> None:
    curves = {"train_loss": history.train_loss, "val_loss": history.val_loss}
    (Path(folder) / HISTORY).write_text(json.dumps(curves))


def read_member(folder: Path) -> tuple[Member, History]:
    """The member (architecture and training settings) and the curves written into `folder`."""
    from pipeline.train import History, Member, TrainSettings

    spec = json.loads((Path(folder) / SPEC).read_text())
    history = json.loads((Path(folder) / HISTORY).read_text())
    member = Member(_model_spec(spec), TrainSettings(**spec["settings"]))
    return member, History(history["train_loss"], history["val_loss"])


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digests(folder: Path) -> dict[str, str]:
    """The tags that vouch for a model directory's files: record them when logging it."""
    found = {tag: sha256(Path(folder) / name) for name, tag in DIGEST_TAGS.items()}
    if (Path(folder) / EQUATION).exists():
        found[EQUATION_TAG] = sha256(Path(folder) / EQUATION)
    return found


def load(folder: Path, expected: dict[str, str], where: str) -> nn.Module:
    """Rebuild the module in `folder` once each file matches its digest in `expected`."""
    import torch

    from pipeline.equations import EquationError
    from pipeline.models import build_model

    for name, tag in DIGEST_TAGS.items():
        _check_digest(Path(folder) / name, expected.get(tag), tag, where)
    try:
        spec = json.loads((Path(folder) / SPEC).read_text())
        model = build_model(_model_spec(spec), int(spec["n_features"]))
        model.load_state_dict(torch.load(Path(folder) / WEIGHTS, weights_only=True, map_location="cpu"))
    except (KeyError, TypeError, ValueError, RuntimeError, EquationError, pickle.UnpicklingError) as exc:
        raise ModelIntegrityError(f"{where}: not a model this pipeline logged: {exc}") from None
    return model.eval()


def with_equation(folder: Path, expected: dict[str, str], where: str, model: nn.Module) -> nn.Module:
    """`model` (a linear family's, loaded by `load`) with the coefficients of the equation read back
    from it, from `coefficients.json` once it matches its digest: every feature of the model named,
    each a finite number."""
    _check_digest(Path(folder) / EQUATION, expected.get(EQUATION_TAG), EQUATION_TAG, where)
    try:
        table = json.loads((Path(folder) / EQUATION).read_text())
    except ValueError as exc:
        raise ModelIntegrityError(f"{where}: {EQUATION} is not JSON: {exc}") from None
    names = set(model.coefficients())
    if not (isinstance(table, dict) and set(table) == names and all(map(_finite_number, table.values()))):
        raise ModelIntegrityError(f"{where}: {EQUATION} does not give a finite coefficient to each of the model's "
                                  f"{len(names)} features")  # fmt: skip
    model.set_coefficients(table)
    return model


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_digest(path: Path, expected: str | None, tag: str, where: str) -> None:
    if expected is None:
        raise ModelIntegrityError(f"{where}: the run has no {tag} tag, so {path.name} cannot be verified; refused")
    actual = sha256(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{where}: {path.name} has SHA-256 {actual[:16]}..., not the {expected[:16]}... recorded when it "
            "was logged: the artifact was changed after logging; refused to load it"
        )


def _model_spec(spec: dict) -> ModelSpec:
    """The architecture in a parsed `spec.json`; term names go through the safe equation parser."""
    from pipeline.equations import NAME, RESERVED, shorthand
    from pipeline.models import ModelSpec
    from pipeline.terms import canonical

    n_features = int(spec["n_features"])
    variables = tuple(str(v) for v in spec.get("variables", ()))
    if variables and (len(variables) != n_features or any(not NAME.fullmatch(v) or v in RESERVED for v in variables)):
        raise ValueError(f"variables {list(variables)[:5]} do not name {n_features} inputs")
    inputs = variables or shorthand(n_features)
    names = tuple(canonical(str(term), inputs) for term in spec.get("terms", ()))
    logs = tuple(str(v) for v in spec.get("log_inputs", ()))
    if not set(logs) <= set(inputs):
        raise ValueError(f"log_inputs {list(logs)[:5]} are not among the inputs")
    return ModelSpec(spec["family"], names, int(spec.get("depth", 2)), int(spec.get("width", 32)), variables, logs)
