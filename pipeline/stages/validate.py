"""Stage `validate`: params.yaml checked, before any other stage can remove its outputs, and split
into the pieces each stage reads.

DVC removes a stage's outputs before it runs the stage, so every stage depends on this one's
output: a params.yaml mistake stops `dvc repro` here, with the key and the value. Into `checks/`
it writes `params.txt` (the same text whenever params.yaml is valid), one file per dataset
(`datasets/<name>.json`, what `generate` and `tune` read of it, defaults filled in), `tune.json`
(models, training, tuning, tracking) and `compare.json`. Each file is rewritten only when its
content changes, so a stage reruns exactly when what it reads changes. Stages depend on these small
files rather than on params.yaml itself: DVC parses a params file once for every stage that lists
it, which at a hundred datasets cost 19 s of every `dvc status`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import Params, load_params
from pipeline.stages import specs

# Loaded here, with the stores' paths as written: `checks/tune.json` is a DVC dependency of every
# `tune` stage, and anchored at the checkout's folder it changed (and retrained everything) in a
# clone anywhere else.
NEEDS_PARAMS = False

VALID = (
    "params.yaml is valid.\n"
    "Written by the `validate` stage, which every other stage depends on: DVC runs it first, so a\n"
    "params.yaml mistake stops `dvc repro` before any stage's outputs are removed.\n"
)


def validate(params: Params, out: Path) -> None:
    """`params` were validated when they were loaded; check what loading leaves out (each dataset's
    cross library); record that, and each stage's piece, in `out`."""
    check_libraries(params)
    out = Path(out)
    _write(out / "params.txt", VALID)
    datasets = {name: cfg.model_dump(mode="json") for name, cfg in params.datasets.items()}
    for name, cfg in datasets.items():
        _write(out / "datasets" / f"{name}.json", _json({"dataset": cfg}))
    for stale in sorted((out / "datasets").glob("*.json")):
        if stale.stem not in datasets:
            stale.unlink()
    tune = params.model_dump(mode="json", include={"models", "training", "tuning", "tracking"})
    _write(out / "tune.json", _json(tune))
    _write(out / "compare.json", _json({"datasets": datasets, "cross": params.models.cross.model_dump(mode="json")}))


def check_libraries(params: Params) -> None:
    """Each dataset's cross library computable in float32 (`specs.library_for`): not checked at
    every load, where it would cost a stage process 0.3 s at a hundred datasets."""
    for name in params.datasets:
        specs.library_for(params, name)


def _json(content: dict) -> str:
    return json.dumps(content, indent=1, sort_keys=True) + "\n"


def _write(path: Path, text: str) -> None:
    """Write `text` unless the file holds it already (then not even its mtime moves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="folder to write when params.yaml is valid (the DVC stage's out)")


def main(args: argparse.Namespace, params: Params | None) -> None:
    # load_params checks everything else; reaching the print means the file is valid.
    params = load_params(args.params, anchored=False)
    if args.out is not None:
        validate(params, args.out)
    else:
        check_libraries(params)
    print(f"{args.params}: valid ({len(params.datasets)} datasets)")
