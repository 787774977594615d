"""Stage `generate`: draw one dataset from its equation and write its arrays and metadata."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pipeline import data
from pipeline.config import Params
from pipeline.stages.specs import dataset_spec


def generate(params: Params, name: str, data_path: Path, meta_path: Path, progress: Callable = print) -> None:
    spec = dataset_spec(params, name)
    dataset = data.generate(spec)
    data.save(dataset, spec, Path(data_path), Path(meta_path))
    progress(
        f"[{name}] {spec.equation.text}: train {len(dataset.y_train)}, val {len(dataset.y_val)}, "
        f"ood {len(dataset.y_ood)} rows -> {data_path}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a key under `datasets:` in params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="arrays file to write (.npz)")
    parser.add_argument("--meta", type=Path, required=True, help="metadata file to write (.json)")


def main(args: argparse.Namespace, params: Params) -> None:
    params.check_dataset(args.dataset)
    generate(params, args.dataset, args.out, args.meta)
