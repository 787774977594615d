"""The command line the tuning benchmarks share (`tuning_throughput.py`, `study_in_memory.py`):
which params.yaml, which of its datasets, which families, how many repeats, where the JSON goes."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of `doc` (the script's docstring)."""
    parsed = argparse.ArgumentParser(description=doc.splitlines()[0])
    parsed.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parsed.add_argument("--dataset", default="product", help="dataset of params.yaml to tune on (default: product)")
    parsed.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parsed.add_argument("--repeats", type=int, default=3)
    parsed.add_argument("--json", type=Path, help="also write the results here")
    return parsed
