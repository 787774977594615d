"""How far stacking can go on this machine: the cost of one training step for stacks of K identical MLPs.

    python benchmarks/stack_scaling.py --repeats 3 --json benchmarks/stack_scaling.json

`tuning_throughput.py` measures tuning as the pipeline does it, where a stack mixes shapes (padding),
splits by batch size and shrinks as members finish. This script measures the best case, which
bounds it: K members of one shape (the widest and deepest of `tuning.mlp.space`, each batch size of
the space, or `--depth`/`--width`), all running every step, trained through the one `train.fit`
for `--epochs` epochs on `product`. It prints microseconds per step, per member-step, and the speed-up of the stack over
training its K members one at a time (K x the time of a stack of one, over the stack's time),
medians over `--repeats`; `--json` writes `{"batch_size=B": {"K": {"us_per_step": ..., "us_per_member_step":
..., "speedup": ...}}}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import data as datasets  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.models import ModelSpec  # noqa: E402
from pipeline.stages import specs  # noqa: E402
from pipeline.stages import tune as tune_stage  # noqa: E402
from pipeline.train import Member, Tensors, TrainSettings, fit  # noqa: E402


def members(spec: ModelSpec, k: int, batch_size: int, epochs: int) -> list[Member]:
    """K members of one shape; own seeds and learning rates, as tuning trials would have."""
    return [
        Member(spec, TrainSettings(lr=0.003 * 1.1**i, epochs=epochs, batch_size=batch_size, optimizer="adam", seed=i))
        for i in range(k)
    ]


def seconds_per_step(spec: ModelSpec, k: int, batch_size: int, epochs: int, data: Tensors, repeats: int) -> float:
    trials = members(spec, k, batch_size, epochs)
    fit(trials[:1], data)  # warm-up: first-call costs belong to no stack size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit(trials, data)
        times.append(time.perf_counter() - start)
    steps = epochs * -(-data.X_train.shape[0] // batch_size)
    return statistics.median(times) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 20, 40, 80, 160], help="stack sizes K")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--depth", type=int, help="hidden layers (default: the deepest of tuning.mlp.space)")
    parser.add_argument("--width", type=int, help="units a layer (default: the widest of tuning.mlp.space)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if 1 not in args.sizes or min(args.sizes) < 1:
        parser.error(f"--sizes {args.sizes}: must hold 1 (the baseline) and nothing below it")
    for name in ("epochs", "repeats", "depth", "width"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    params = load_params(args.params)
    torch.set_num_threads(params.training.threads)
    space = tune_stage.search_space(params.tuning["mlp"])
    spec = tune_stage.model_spec(params, "mlp", "product")
    spec = ModelSpec(
        "mlp", (), args.depth or max(space.depth or (spec.depth,)), args.width or max(space.width or (spec.width,))
    )
    dataset = datasets.generate(specs.dataset_spec(params, "product"))
    data = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, params.training.device)
    print(
        f"mlp depth {spec.depth} width {spec.width} on product, device {params.training.device}, "
        f"{torch.get_num_threads()} thread(s), {args.epochs} epochs, medians of {args.repeats}"
    )
    print(f"{'batch':>5} {'K':>4} {'us/step':>9} {'us/member-step':>15} {'speed-up':>9}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for batch_size in space.batch_size:
        row = results[f"batch_size={batch_size}"] = {}
        alone = None
        for k in sorted(set(args.sizes)):
            step = seconds_per_step(spec, k, batch_size, args.epochs, data, args.repeats)
            alone = step if k == 1 else alone
            row[str(k)] = {
                "us_per_step": round(step * 1e6, 2),
                "us_per_member_step": round(step * 1e6 / k, 2),
                "speedup": round(k * alone / step, 2),
            }
            r = row[str(k)]
            cost = f"{r['us_per_step']:>9.1f} {r['us_per_member_step']:>15.2f}"
            print(f"{batch_size:>5} {k:>4} {cost} {r['speedup']:>8.1f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
