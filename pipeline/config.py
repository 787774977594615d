"""Typed params.yaml: loaded and validated once, at the entry point.

Library functions never see this module's models whole; the CLI and flows hand them the small
pieces they need. Every error names the key and the offending value, before any work starts.
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline import probe, user_yaml
from pipeline.equations import FUNCTIONS, MAX_EXPONENT, RESERVED, EquationError, parse, shorthand
from pipeline.equations import NAME as VARIABLE_NAME
from pipeline.errors import InputError
from pipeline.families import FAMILIES
from pipeline.terms import MAX_DEGREE, MAX_TERMS, canonical, library_size

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(InputError):
    """params.yaml (or an override) is missing, unreadable or invalid."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


class VariableConfig(Strict):
    """A declared input: uniform on [low, high] (the default), log-uniform, or normal (mean, std)."""

    dist: Literal["uniform", "loguniform", "normal"] = "uniform"
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: Annotated[float, Field(gt=0)] | None = None
    ood: tuple[float, float] | None = None  # out-of-range interval; default: as far again beyond high

    @model_validator(mode="before")
    @classmethod
    def _kind(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "dist" not in raw and ("mean" in raw or "std" in raw):
            return raw | {"dist": "normal"}
        return raw

    @field_validator("ood", mode="before")
    @classmethod
    def _interval(cls, ood: Any) -> Any:  # pydantic's own message for [3] names a position, `ood.1`
        if ood is not None and (not isinstance(ood, list | tuple) or len(ood) != 2):
            raise ValueError("ood is an interval, [low, high]: two numbers")
        return ood

    @model_validator(mode="after")
    def _complete(self) -> VariableConfig:
        if self.dist == "normal":
            if self.mean is None or self.std is None or self.low is not None or self.high is not None:
                raise ValueError("a normal variable takes mean and std (and no low, high)")
        else:
            if self.low is None or self.high is None or self.mean is not None or self.std is not None:
                raise ValueError(f"a {self.dist} variable takes low and high (and no mean, std)")
            if self.low == self.high:  # G of 6.674e-11 declared as a variable that does not vary
                raise ValueError(f"low and high are both {self.low}: a fixed value is a number in the equation")
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.dist == "loguniform" and self.low <= 0:
                raise ValueError(f"a loguniform variable needs low > 0, got low = {self.low}")
        if self.ood is not None and not self.ood[0] < self.ood[1]:
            raise ValueError(f"ood ({self.ood[0]}, {self.ood[1]}): its low must be below its high")
        if max(map(abs, self.span + (self.ood or ()))) > probe.FLOAT32_MAX:
            raise ValueError(f"values beyond float32's {probe.FLOAT32_MAX:.3g}, which models train in: change the unit")
        return self

    @property
    def span(self) -> tuple[float, float]:
        """Where the variable may be drawn: its range, or a normal's mean +- 4 std."""
        return (self.low, self.high) if self.dist != "normal" else (self.mean - 4 * self.std, self.mean + 4 * self.std)


class DatasetConfig(Strict):
    # Declared before the equation: its check reads them. Either n_features (the shorthand
    # x0..x{n-1}, each N(0, 1)) or variables (named, each drawn as declared).
    n_features: Annotated[int, Field(ge=1, le=1000)] | None = None
    variables: Annotated[dict[str, VariableConfig], Field(min_length=1, max_length=1000)] | None = None
    equation: str
    n_samples: Annotated[int, Field(ge=10, le=10_000_000)] = 1000
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    noise: Annotated[float, Field(ge=0)] = 0.0  # std of Gaussian noise added to y
    noise_relative: Annotated[float, Field(ge=0)] = 0.0  # noise std = this x RMS(y) (SRBench's definition)
    seed: Annotated[int, Field(ge=0)] = 0
    ood: OodConfig = OodConfig()

    @field_validator("variables")
    @classmethod
    def _names(cls, variables: dict[str, VariableConfig] | None) -> dict[str, VariableConfig] | None:
        for name in variables or {}:
            if keyword.iskeyword(name):  # equations are parsed as Python expressions: `lambda` cannot be a name
                other = "lambd" if name == "lambda" else f"{name}_"  # lambd: as the AI Feynman table writes it
                raise ValueError(f"variable name {name!r} is a word of Python's syntax: rename it, as {other}")
            if not VARIABLE_NAME.fullmatch(name):
                raise ValueError(f"variable name {name!r} must be an identifier: ASCII letters, digits and '_'")
            if name in RESERVED:
                raise ValueError(f"variable name {name!r} is a function or constant of the equations; rename it")
        return variables

    @field_validator("equation")
    @classmethod
    def _parses(cls, text: str, info: ValidationInfo) -> str:
        inputs = info.data.get("variables") or info.data.get("n_features")
        if inputs is None:
            return text  # reported on its own: no inputs declared, or invalid ones
        try:
            parse(text, tuple(inputs) if isinstance(inputs, dict) else inputs)
        except EquationError as exc:
            raise ValueError(str(exc)) from None
        return text

    @model_validator(mode="after")
    def _inputs(self) -> DatasetConfig:
        if (self.n_features is None) == (self.variables is None):
            raise ValueError("give either n_features (inputs x0..x{n-1}, each N(0, 1)) or variables (named)")
        if self.noise and self.noise_relative:
            raise ValueError(f"give noise ({self.noise}) or noise_relative ({self.noise_relative}), not both")
        if self.variables is not None:
            _check_declared(self)
        else:  # generate's first rows (pipeline.data draws the shorthand row by row, N(0, 1))
            n_rows, equation = min(self.n_samples, probe.N_POINTS), parse(self.equation, self.n_features)
            rows = np.random.default_rng(self.seed).standard_normal((n_rows, self.n_features))
            probe.check_drawn(equation, rows, equation(rows), shorthand=True)
        return self

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input names, in order (the columns of the data)."""
        return tuple(self.variables) if self.variables is not None else shorthand(self.n_features)

    @property
    def ranges(self) -> list[tuple[float, float]]:
        """Where each input may be drawn (`VariableConfig.span`; the shorthand's N(0, 1) within 4 std)."""
        if self.variables is None:
            return [(-4.0, 4.0)] * self.n_features
        return [variable.span for variable in self.variables.values()]


def _check_declared(dataset: DatasetConfig) -> None:
    """Declared variables: each used by the equation, the shorthand's `ood.low/high` not set, and
    the equation finite, varying and bounded wherever the variables may be drawn (`probe.check_box`)."""
    equation = parse(dataset.equation, tuple(dataset.variables))
    unused = [name for name in dataset.variables if name not in equation.used]
    if unused:
        raise ValueError(f"variables {unused} are declared but not used by the equation {dataset.equation!r}")
    if {"low", "high"} & dataset.ood.model_fields_set:
        raise ValueError("ood.low/high apply to the x0..x{n-1} shorthand; give each variable its own ood: [low, high]")
    probe.check_box(equation, dataset.ranges)


class LinearConfig(Strict):
    pass


class CrossConfig(Strict):
    """The cross family's library of terms, beside the raw inputs (see pipeline/terms.py)."""

    # `auto`: every monomial of degree 2..`degree`, `functions` of each input, `powers` of each
    # input, and (with `proposals`) products of powers proposed from the data; or an explicit list
    # of terms such as [x0*x1*x2, sin(x0)], parsed by the equation parser.
    crosses: Literal["auto"] | Annotated[list[str], Field(min_length=1)] = "auto"
    degree: Annotated[int, Field(ge=1, le=MAX_DEGREE)] = 2
    functions: list[Literal[tuple(FUNCTIONS)]] = []  # noqa: F821 (a Literal of the allow-list)
    powers: list[Annotated[float, Field(ge=-MAX_EXPONENT, le=MAX_EXPONENT)]] = []  # e.g. [-2, -1, -0.5, 0.5]
    proposals: bool = True  # terms proposed from the data where inputs are positive (pipeline/proposals.py)

    @field_validator("powers")
    @classmethod
    def _halves(cls, powers: list[float]) -> list[float]:
        for p in powers:
            if p == 0 or not (2 * p).is_integer():
                raise ValueError(f"power {p}: powers are non-zero multiples of 0.5 (r**-2, rho**-0.5)")
        return powers


class MLPConfig(Strict):
    depth: Annotated[int, Field(ge=1, le=16)] = 2
    width: Annotated[int, Field(ge=1, le=4096)] = 32


class ModelsConfig(Strict):
    linear: LinearConfig = LinearConfig()
    cross: CrossConfig = CrossConfig()
    mlp: MLPConfig = MLPConfig()


class _Range(Strict):
    @model_validator(mode="after")
    def _ordered(self) -> Strict:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class FloatRange(_Range):
    low: Annotated[float, Field(gt=0)]
    high: Annotated[float, Field(gt=0)]
    log: bool = True


class IntRange(_Range):
    low: Annotated[int, Field(ge=1)]
    high: Annotated[int, Field(ge=1)]
    log: bool = False


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
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|mps)$")] = "cpu"  # "cuda" where a GPU is present
    threads: Annotated[int, Field(ge=1, le=256)] = 1  # tiny models: one thread beats two


class Params(Strict):
    # Keys every dataset gets unless it sets them itself (`noise_relative: 0.01` for a whole table).
    dataset_defaults: dict[str, Any] = {}
    datasets: Annotated[dict[str, DatasetConfig], Field(min_length=1)]
    models: ModelsConfig = ModelsConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: dict[Literal["linear", "cross", "mlp"], TuningConfig]
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        defaults = raw.get("dataset_defaults") if isinstance(raw, dict) else None
        if not defaults or not isinstance(defaults, dict) or not isinstance(raw.get("datasets"), dict):
            return raw  # nothing to merge, or a mistake reported by the fields' own checks
        return raw | {"datasets": {k: defaults | v if isinstance(v, dict) else v for k, v in raw["datasets"].items()}}

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
            inputs = dataset.inputs
            if cross.crosses != "auto":
                for term in cross.crosses:
                    try:
                        canonical(term, inputs)
                    except EquationError as exc:
                        raise ValueError(f"models.cross.crosses = {cross.crosses}: {exc} (dataset {name!r})") from None
            elif (size := library_size(len(inputs), cross.degree, len(cross.functions), len(cross.powers))) > MAX_TERMS:
                raise ValueError(
                    f"models.cross.degree = {cross.degree}: with {len(cross.functions)} function(s) and "
                    f"{len(cross.powers)} power(s) the library of dataset {name!r} ({len(inputs)} inputs) has "
                    f"{size:,} terms, above the limit of {MAX_TERMS:,}; lower the degree, fewer functions or "
                    "powers, or list the terms you want under models.cross.crosses"
                )
        return self


def _anchor(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url == prefix + ":memory:":
        return url
    return prefix + str((base / url[len(prefix) :]).resolve())


def load_params(path: str | Path, anchored: bool = True) -> Params:
    """Read and validate params.yaml, or raise ConfigError naming the key and the value.

    Relative SQLite store paths are anchored at the params file's folder (unless `anchored` is
    False: as written, for what must not depend on where the repository lies).
    """
    path = Path(path)
    try:
        raw = user_yaml.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    params = validate_params(raw, source=str(path))
    if not anchored:
        return params
    return params.model_copy(update={"tracking": params.tracking.anchored(path.resolve().parent)})


def validate_params(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid parameters\n" + _describe(exc, raw)) from None


def _describe(exc: ValidationError, raw: dict) -> str:
    defaults, datasets = raw.get("dataset_defaults"), raw.get("datasets")
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        if _from_defaults(loc, defaults, datasets):  # a typo there would be told once per dataset
            loc = ("dataset_defaults", *loc[2:])
        key = ".".join(str(part) for part in loc)
        text = repr(error.get("input"))
        value = text if len(text) <= 80 else text[:80] + "..."  # a whole dataset's mapping can be long
        message = error["msg"].removeprefix("Value error, ")
        line = f"  {key} = {value}: {message}" if key else f"  {message}"
        lines += [line] if line not in lines else []
    return "\n".join(lines)


def _from_defaults(loc: tuple, defaults: object, datasets: object) -> bool:
    """Whether the key at `loc` (datasets.<name>.<key>...) is the dataset's only through `dataset_defaults`."""
    if len(loc) < 3 or loc[0] != "datasets" or not isinstance(defaults, dict) or not isinstance(datasets, dict):
        return False
    own = datasets.get(loc[1])
    return loc[2] in defaults and not (isinstance(own, dict) and loc[2] in own)
