"""Typed params.yaml: loaded and validated once, at the entry point.

Library functions never see this module's models whole; the CLI and flows hand them the small
pieces they need. Every error names the key and the offending value, before any work starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline.equations import FUNCTIONS, EquationError, parse
from pipeline.errors import InputError
from pipeline.families import FAMILIES
from pipeline.terms import MAX_DEGREE, MAX_TERMS, canonical, library_size

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(InputError):
    """params.yaml (or an override) is missing, unreadable or invalid."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OodConfig(Strict):
    """Out-of-range test inputs: every feature uniform on [low, high]."""

    low: float = 3.0
    high: float = 5.0
    n_samples: Annotated[int, Field(ge=1, le=1_000_000)] = 200

    @model_validator(mode="after")
    def _ordered(self) -> Strict:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class DatasetConfig(Strict):
    n_features: Annotated[int, Field(ge=1, le=1000)]  # declared first: the equation check reads it
    equation: str
    n_samples: Annotated[int, Field(ge=10, le=10_000_000)] = 1000
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    noise: Annotated[float, Field(ge=0)] = 0.0
    seed: Annotated[int, Field(ge=0)] = 0
    ood: OodConfig = OodConfig()

    @field_validator("equation")
    @classmethod
    def _parses(cls, text: str, info: ValidationInfo) -> str:
        if "n_features" not in info.data:
            return text  # n_features itself is invalid and reported on its own
        try:
            parse(text, info.data["n_features"])
        except EquationError as exc:
            raise ValueError(str(exc)) from None
        return text


class LinearConfig(Strict):
    pass


class CrossConfig(Strict):
    """The cross family's library of terms, beside the raw inputs (see pipeline/terms.py)."""

    # `auto`: every monomial of degree 2..`degree`, plus `functions` of each input; or an explicit
    # list of terms such as [x0*x1*x2, sin(x0)], parsed by the equation parser.
    crosses: Literal["auto"] | Annotated[list[str], Field(min_length=1)] = "auto"
    degree: Annotated[int, Field(ge=1, le=MAX_DEGREE)] = 2
    functions: list[Literal[tuple(FUNCTIONS)]] = []  # noqa: F821 (a Literal of the allow-list)


class MLPConfig(Strict):
    depth: Annotated[int, Field(ge=1, le=16)] = 2
    width: Annotated[int, Field(ge=1, le=4096)] = 32


class ModelsConfig(Strict):
    linear: LinearConfig = LinearConfig()
    cross: CrossConfig = CrossConfig()
    mlp: MLPConfig = MLPConfig()


class FloatRange(Strict):
    low: Annotated[float, Field(gt=0)]
    high: Annotated[float, Field(gt=0)]
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Strict:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class IntRange(Strict):
    low: Annotated[int, Field(ge=1)]
    high: Annotated[int, Field(ge=1)]
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Strict:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


PositiveInts = Annotated[list[Annotated[int, Field(ge=1, le=100_000)]], Field(min_length=1)]


class SearchSpaceConfig(Strict):
    lr: FloatRange
    epochs: IntRange
    batch_size: PositiveInts = [32]
    optimizer: Annotated[list[Literal["sgd", "adam"]], Field(min_length=1)] = ["sgd"]
    width: PositiveInts | None = None  # MLP only: None keeps models.mlp.width
    depth: PositiveInts | None = None  # MLP only: None keeps models.mlp.depth


class PrunerConfig(Strict):
    name: Literal["median", "none"] = "median"
    n_startup_trials: Annotated[int, Field(ge=0)] = 3
    n_warmup_steps: Annotated[int, Field(ge=0)] = 10


class TuningConfig(Strict):
    n_trials: Annotated[int, Field(ge=1, le=10_000)]
    # Trials asked, trained and told together (one stacked model). Larger is faster; smaller lets
    # the sampler learn from more finished trials before it proposes the next ones.
    trials_per_batch: Annotated[int, Field(ge=1, le=1024)] = 16
    sampler_seed: Annotated[int, Field(ge=0)] = 0
    pruner: PrunerConfig = PrunerConfig()
    space: SearchSpaceConfig


class TrackingConfig(Strict):
    mlflow_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides it
    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "equations"
    optuna_storage: str = "sqlite:///optuna.db"  # OPTUNA_STORAGE overrides it

    def anchored(self, base: Path) -> TrackingConfig:
        """Relative SQLite paths made absolute against `base` (the params file's folder), so a
        flow run from another working directory writes to the same stores as `dvc repro`."""
        return self.model_copy(
            update={"mlflow_uri": _anchor(self.mlflow_uri, base), "optuna_storage": _anchor(self.optuna_storage, base)}
        )

    def mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow_uri

    def optuna_storage_url(self) -> str:
        return os.environ.get("OPTUNA_STORAGE") or self.optuna_storage


class TrainingConfig(Strict):
    device: str = "cpu"  # "cuda" where a GPU is present
    threads: Annotated[int, Field(ge=1, le=256)] = 1  # tiny models: one thread beats two


class Params(Strict):
    datasets: Annotated[dict[str, DatasetConfig], Field(min_length=1)]
    models: ModelsConfig = ModelsConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: dict[Literal["linear", "cross", "mlp"], TuningConfig]
    tracking: TrackingConfig = TrackingConfig()

    def check_dataset(self, name: str) -> None:
        """A dataset name given on the command line, refused unless params.yaml has it."""
        if name not in self.datasets:
            raise ConfigError(f"--dataset {name!r}: not in params.yaml datasets {sorted(self.datasets)}")

    @field_validator("datasets")
    @classmethod
    def _names(cls, datasets: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        for name in datasets:
            if not NAME.fullmatch(name):
                raise ValueError(f"dataset name {name!r} must be 1-64 letters, digits, '_' or '-'")
        return datasets

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        missing = [family for family in FAMILIES if family not in self.tuning]
        if missing:
            raise ValueError(f"tuning: no entry for model(s) {missing}")
        cross = self.models.cross
        for name, dataset in self.datasets.items():
            n = dataset.n_features
            if cross.crosses != "auto":
                for term in cross.crosses:
                    try:
                        canonical(term, n)
                    except EquationError as exc:
                        raise ValueError(f"models.cross.crosses = {cross.crosses}: {exc} (dataset {name!r})") from None
            elif (size := library_size(n, cross.degree, len(cross.functions))) > MAX_TERMS:
                raise ValueError(
                    f"models.cross.degree = {cross.degree}: with {len(cross.functions)} function(s) the library of "
                    f"dataset {name!r} ({n} inputs) has {size:,} terms, above the limit of {MAX_TERMS:,}; "
                    "lower the degree or list the terms you want under models.cross.crosses"
                )
        return self


def _anchor(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url == prefix + ":memory:":
        return url
    return prefix + str((base / url[len(prefix) :]).resolve())


def load_params(path: str | Path) -> Params:
    """Read and validate params.yaml, or raise ConfigError naming the key and the value.

    Relative SQLite store paths are anchored at the params file's folder.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    params = validate_params(raw, source=str(path))
    return params.model_copy(update={"tracking": params.tracking.anchored(path.resolve().parent)})


def validate_params(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid parameters\n" + _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        value = _short_repr(error.get("input"))
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {key} = {value}: {message}" if key else f"  {message}")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
