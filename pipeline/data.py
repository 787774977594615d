"""Synthetic datasets: deterministic draws from an equation, saved for DVC to version.

A dataset is y = equation(X) + noise, split into train and validation, plus an out-of-range (OOD)
test set to show extrapolation. Its inputs are either the shorthand x0..x{n-1}, each N(0, 1), with
every OOD input uniform on [low, high]; or declared variables, each drawn as declared (uniform on
[low, high], log-uniform, or normal) with an OOD range of its own beyond its training range. Noise
is absolute (its std) or relative (std = noise_relative x RMS(y), SRBench's definition). The same
seed always gives the same bytes on disk, so DVC's content hash identifies a dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline import probe
from pipeline.equations import Equation
from pipeline.errors import InputError

SPLITS = ("train", "val", "ood")


@dataclass(frozen=True)
class Variable:
    """A declared input: how it is drawn for training, and its range beyond (out of range)."""

    name: str
    dist: str = "uniform"  # "uniform" | "loguniform" | "normal"
    low: float = 0.0  # uniform, loguniform
    high: float = 1.0
    mean: float = 0.0  # normal
    std: float = 1.0
    ood: tuple[float, float] | None = None  # None: `default_ood`

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist == "normal":
            return rng.normal(self.mean, self.std, n)
        if self.dist == "loguniform":
            return np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))
        return rng.uniform(self.low, self.high, n)

    @property
    def training_range(self) -> tuple[float, float]:
        """Where training inputs lie (a normal variable: mean +- 3 std)."""
        return (self.mean - 3 * self.std, self.mean + 3 * self.std) if self.dist == "normal" else (self.low, self.high)

    @property
    def ood_range(self) -> tuple[float, float]:
        """Beyond the training range, as far again: [high, high + (high - low)] (log-uniform: as
        far again in log; normal: 3 to 6 std above the mean), unless declared."""
        if self.ood is not None:
            return self.ood
        if self.dist == "normal":
            return self.mean + 3 * self.std, self.mean + 6 * self.std
        low, high = self.training_range
        if self.dist == "loguniform":
            return high, high * (high / low)
        return high, 2 * high - low

    def at(self, t: np.ndarray) -> np.ndarray:
        """The variable along the slice coordinate t: t = 0 and 1 are its training range's ends
        (geometric for log-uniform), t > 1 lies beyond."""
        low, high = self.training_range
        if self.dist == "loguniform":
            return low * (high / low) ** t
        return low + t * (high - low)

    @property
    def moments(self) -> tuple[float, float]:
        """Mean and standard deviation of the declared distribution."""
        if self.dist == "normal":
            return self.mean, self.std
        if self.dist == "loguniform":
            a, b = np.log(self.low), np.log(self.high)
            m1, m2 = (self.high - self.low) / (b - a), (self.high**2 - self.low**2) / (2 * (b - a))
            return float(m1), float(np.sqrt(max(m2 - m1**2, 0.0)))
        return (self.low + self.high) / 2, (self.high - self.low) / np.sqrt(12)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    equation: Equation
    n_samples: int
    val_fraction: float
    noise: float
    seed: int
    ood_low: float  # the shorthand's out-of-range inputs, every one uniform on [low, high]
    ood_high: float
    ood_samples: int
    noise_relative: float = 0.0  # noise std = noise_relative x RMS(y), SRBench's definition
    variables: tuple[Variable, ...] = ()  # declared inputs; () is the shorthand x0..x{n-1} ~ N(0, 1)

    @property
    def positive(self) -> frozenset[str]:
        """The declared variables that are always positive (their symbols expand as such)."""
        return frozenset(v.name for v in self.variables if v.dist != "normal" and v.low > 0)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset file as the record names it: its name, its DVC hash (MD5) and where it came from."""

    name: str
    md5: str | None  # what DVC recorded (before loading: the hash to check; None: nothing recorded)
    path: str


@dataclass(frozen=True)
class Dataset:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_ood: np.ndarray
    y_ood: np.ndarray

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


class DataError(InputError):
    """The equation cannot produce a usable dataset (e.g. log of a negative number)."""


def generate(spec: DatasetSpec) -> Dataset:
    rng = np.random.default_rng(spec.seed)
    X = _draw(spec, rng)
    y = spec.equation(X)
    try:  # validation has checked the shorthand's first rows, and declared ranges whole
        probe.check_drawn(spec.equation, X, y, shorthand=not spec.variables)
    except ValueError as exc:
        raise DataError(f"dataset {spec.name!r}: {exc}") from None
    noise = spec.noise if spec.noise_relative == 0 else spec.noise_relative * float(np.sqrt(np.mean(y**2)))
    y = y + noise * rng.standard_normal(spec.n_samples)
    X_ood = _draw_ood(spec, rng)
    y_ood = spec.equation(X_ood)  # noise-free: it measures the function the model learnt
    X_ood, y_ood = _defined(spec, X_ood, y_ood)
    n_val = max(1, round(spec.n_samples * spec.val_fraction))
    n_train = spec.n_samples - n_val
    if n_train < 1:
        raise DataError(f"dataset {spec.name!r}: val_fraction {spec.val_fraction} leaves no training rows")
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], X_ood, y_ood)


def _draw(spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    # The shorthand, drawn as version 1 drew it: its datasets keep their bytes. Row by row, so
    # validation draws the same first rows (`pipeline.config`) and checks the equation on them.
    if not spec.variables:
        return rng.standard_normal((spec.n_samples, spec.equation.n_features))
    return np.column_stack([variable.draw(rng, spec.n_samples) for variable in spec.variables])


def _draw_ood(spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    if not spec.variables:
        return rng.uniform(spec.ood_low, spec.ood_high, (spec.ood_samples, spec.equation.n_features))
    columns = []
    for variable in spec.variables:
        low, high = variable.ood_range
        if variable.dist == "loguniform":
            columns.append(np.exp(rng.uniform(np.log(low), np.log(high), spec.ood_samples)))
        else:
            columns.append(rng.uniform(low, high, spec.ood_samples))
    return np.column_stack(columns)


def _defined(spec: DatasetSpec, X_ood: np.ndarray, y_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The out-of-range rows where the equation is defined (arcsin of more than 1 is not): a
    domain ends somewhere, and beyond it there is nothing to predict."""
    finite = np.isfinite(y_ood)
    if not finite.any():
        raise DataError(
            f"dataset {spec.name!r}: equation {spec.equation.text!r} is defined nowhere on the out-of-range "
            "inputs; choose other out-of-range intervals (each variable's `ood`)"
        )
    return X_ood[finite], y_ood[finite]


def save(dataset: Dataset, spec: DatasetSpec, data_path: Path, meta_path: Path) -> None:
    """Write arrays and metadata atomically: a failed run leaves no half-written file."""
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{kind}_{split}": getattr(dataset, f"{kind}_{split}") for split in SPLITS for kind in "Xy"})
    _atomic_write(data_path, buffer.getvalue())
    _atomic_write(meta_path, json.dumps(metadata(dataset, spec), indent=2).encode() + b"\n")


def metadata(dataset: Dataset, spec: DatasetSpec) -> dict:
    info = {
        "name": spec.name,
        "equation": spec.equation.text,
        "n_features": dataset.n_features,
        "seed": spec.seed,
        "noise": spec.noise,
        "val_fraction": spec.val_fraction,
        "shapes": {split: list(getattr(dataset, f"X_{split}").shape) for split in SPLITS},
        "ood_range": [spec.ood_low, spec.ood_high],
    }
    if spec.noise_relative:
        info["noise_relative"] = spec.noise_relative
    if spec.variables:  # the shorthand's metadata (and DVC hash) stay as they were
        del info["ood_range"]
        info["variables"] = {v.name: asdict(v) | {"ood": list(v.ood_range)} for v in spec.variables}
        info["ood_rows_defined"] = len(dataset.y_ood)
    return info


def load(data_path: Path, expected_md5: str | None = None) -> Dataset:
    """The dataset in `data_path`, checked: its MD5 against `expected_md5` (what DVC recorded when
    `generate` wrote it), its arrays' names, shapes and values. Any fault is a `DataError` naming
    the file; arrays are read without pickle."""
    data_path = Path(data_path)
    if not data_path.is_file():
        raise DataError(f"{data_path}: dataset file not found; run `dvc repro` (or `dvc checkout {data_path}`)")
    if expected_md5 is not None and (actual := file_md5(data_path)) != expected_md5:
        raise DataError(
            f"{data_path}: MD5 {actual} differs from {expected_md5}, recorded when it was generated; "
            f"the file was changed since. Restore it with `dvc checkout {data_path}` or regenerate it with `dvc repro`"
        )
    try:
        with np.load(data_path, allow_pickle=False) as arrays:
            dataset = Dataset(**{f"{kind}_{split}": arrays[f"{kind}_{split}"] for split in SPLITS for kind in "Xy"})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"{data_path}: not a readable dataset file (truncated or corrupt?): {reason}") from None
    _check_arrays(data_path, dataset)
    return dataset


def load_ref(ref: DatasetRef) -> tuple[Dataset, DatasetRef]:
    """The dataset `ref` names, checked against its MD5 when it has one, and the ref with the
    file's own MD5 (what the record names it by)."""
    dataset = load(Path(ref.path), ref.md5)
    return dataset, DatasetRef(ref.name, file_md5(Path(ref.path)), ref.path)


def locked_md5(path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The MD5 that dvc.lock records for `path` as a stage output, or None if it records none.

    Paths in dvc.lock are relative to its folder (the repo root, where DVC runs the stages)."""
    import yaml

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


def _check_arrays(data_path: Path, dataset: Dataset) -> None:
    for split in SPLITS:
        X, y = getattr(dataset, f"X_{split}"), getattr(dataset, f"y_{split}")
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or X.shape[1] != dataset.n_features:
            raise DataError(f"{data_path}: arrays of split {split!r} have inconsistent shapes {X.shape} and {y.shape}")
        if not (np.issubdtype(X.dtype, np.floating) and np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"{data_path}: arrays of split {split!r} are not floating point ({X.dtype}, {y.dtype})")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise DataError(f"{data_path}: split {split!r} holds non-finite values")
    if len(dataset.y_train) == 0 or len(dataset.y_val) == 0:
        raise DataError(f"{data_path}: the training or validation split is empty")


def file_md5(path: Path) -> str:
    """The content hash DVC records for a single-file output (dvc.lock `md5`)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
