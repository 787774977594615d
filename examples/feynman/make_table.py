"""Write the Feynman table's params.yaml and dvc.yaml, a DVC pipeline of its own, from the AI
Feynman CSV beside this file.

    python examples/feynman/make_table.py   # (re)writes examples/feynman/params.yaml and dvc.yaml
    cd examples/feynman && dvc repro         # all 100 equations: generate, tune, compare

Every row becomes a dataset with its declared variables and ranges, 1,000 rows, seeded by its
number; every row gets the same library, families and budgets (the tuning budgets of the repo's
own params.yaml). Nothing is set per equation. The cross family's library is the physics one:
monomials up to degree 3, sin, cos, log and exp of each input, its powers -2, -1, -0.5 and 0.5,
and the products of powers proposed from the data (`pipeline/proposals.py`).

Source of the table: S.-M. Udrescu and M. Tegmark, "AI Feynman: a physics-inspired method for
symbolic regression", Science Advances 6, eaay2631 (2020); FeynmanEquations.csv of the paper's
data (https://space.mit.edu/home/tegmark/aifeynman/FeynmanEquations.csv), here as copied in the
public repository KenWuqianghao/Transformer-SR-Benchmarks.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LIBRARY = {"crosses": "auto", "degree": 3, "functions": ["sin", "cos", "log", "exp"],
           "powers": [-2, -1, -0.5, 0.5], "proposals": True}  # fmt: skip
HEADER = """\
# The AI Feynman table as a pipeline: 100 equations of the Feynman Lectures, each with its variables
# and their ranges (Udrescu & Tegmark, Science Advances 2020; FeynmanEquations.csv, see README.md).
# Written by make_table.py: edit that, not this file. The same library and budgets for every row.
"""


def datasets(csv_path: Path) -> dict[str, dict]:
    """One dataset per row: the formula as written, its variables uniform on their ranges."""
    table = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["Filename"]:
                continue
            names = [row[f"v{i}_name"] for i in range(1, 11) if row.get(f"v{i}_name")]
            variables = {
                name: {"low": float(row[f"v{i}_low"]), "high": float(row[f"v{i}_high"])}
                for i, name in enumerate(names, start=1)
            }
            key = row["Filename"].replace(".", "_")
            table[key] = {"equation": row["Formula"], "variables": variables, "seed": int(row["Number"])}
    return table


def params(csv_path: Path) -> dict:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    models = base["models"] | {"cross": LIBRARY}
    return {
        "dataset_defaults": {"n_samples": 1000, "noise_relative": 0.0},
        "datasets": datasets(csv_path),
        "models": models,
        "training": base["training"],
        "tuning": base["tuning"],
        "tracking": {
            "mlflow_uri": "sqlite:///mlflow.db",
            "experiment": "feynman",
            "optuna_storage": "sqlite:///optuna.db",
        },
    }


def dvc_yaml() -> str:
    """The repo's dvc.yaml, its code two folders up (in deps and in the code- stages' commands)."""
    return re.sub(r"(?<![\w./-])pipeline/(?=[\w/]+\.py)", "../../pipeline/", (ROOT / "dvc.yaml").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=HERE / "FeynmanEquations.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for params.yaml and dvc.yaml")
    args = parser.parse_args(argv)
    text = yaml.safe_dump(params(args.csv), sort_keys=False, width=120, default_flow_style=None)
    (args.out / "params.yaml").write_text(HEADER + text)
    (args.out / "dvc.yaml").write_text(dvc_yaml())
    print(f"{args.out / 'params.yaml'}: {len(datasets(args.csv))} datasets; {args.out / 'dvc.yaml'}")


if __name__ == "__main__":
    main()
