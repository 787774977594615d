"""What inference mode saves in a training step: `train.fit` with each epoch's steps in inference mode
(as it runs) against the same steps under `no_grad` alone (as before commit 8b03e7f), alternating in
one process so that both see the same load.

    python benchmarks/step_modes.py --rounds 15 --json benchmarks/step_modes.json

A step of a small stack is bound by the number of tensor calls, and inference mode skips autograd's
bookkeeping at each call, which `no_grad` still does. The `no_grad` arm runs `fit` with
`torch.inference_mode` replaced by a context that does nothing, so the epoch runs under `fit`'s own
`no_grad` only: the code before that commit, the same numbers (checked here, bit for bit). Stacks of
MLPs of the default search's width, depths 2 and 3 mixed (padded, as tuning makes them) or all 3,
on `product`; prints the median and fastest microseconds a step of each arm and their ratios, and
`--json` writes them per case.
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
from pipeline import threads  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.models import ModelSpec  # noqa: E402
from pipeline.stages import specs  # noqa: E402
from pipeline.train import Member, Tensors, Trained, TrainSettings, fit  # noqa: E402

CASES = [(10, 16, "2/3"), (10, 32, "2/3"), (1, 16, "3"), (20, 16, "3")]  # (stack size, batch, depths)


class _NoInferenceMode:
    """Stands in for `torch.inference_mode` in the `no_grad` arm: the epoch runs under `no_grad` only."""

    def __init__(self, mode: bool = True) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def members(k: int, batch_size: int, depths: str, epochs: int) -> list[Member]:
    def depth(i: int) -> int:
        return 3 if depths == "3" else 2 + i % 2

    return [
        Member(ModelSpec("mlp", depth=depth(i), width=32),
               TrainSettings(lr=0.003 * 1.1**i, epochs=epochs, batch_size=batch_size, optimizer="adam", seed=i))
        for i in range(k)
    ]  # fmt: skip


def timed_fit(trials: list[Member], data: Tensors, inference: bool) -> tuple[float, list[Trained]]:
    """Seconds of one `fit`, and what it trained (to compare the arms)."""
    real = torch.inference_mode
    torch.inference_mode = real if inference else _NoInferenceMode
    try:
        start = time.perf_counter()
        trained = fit(trials, data)
        return time.perf_counter() - start, trained
    finally:
        torch.inference_mode = real


def same(a: list[Trained], b: list[Trained]) -> bool:
    """The same losses and weights, bit for bit, member by member."""

    def weights(trained: Trained) -> list[torch.Tensor]:
        return list(trained.model.state_dict().values())

    return all(
        x.history.train_loss == y.history.train_loss
        and all(torch.equal(p, q) for p, q in zip(weights(x), weights(y), strict=True))
        for x, y in zip(a, b, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--rounds", type=int, default=15, help="fits of each arm, alternating")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for name in ("rounds", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    params = load_params(args.params)
    threads.limit(params.training.threads)
    dataset = datasets.generate(specs.dataset_spec(params, "product"))
    data = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, params.training.device)
    fit(members(2, 16, "2/3", 2), data)  # warm-up: first-call costs belong to neither arm
    print(f"mlp width 32 on product, {torch.get_num_threads()} thread(s), {args.epochs} epochs, {args.rounds} rounds")
    header = f"{'K':>3} {'batch':>5} {'depths':>6} {'no_grad us':>11} {'inference us':>13} {'ratio':>6}"
    print(header + " (medians; fastest)")
    results = {}
    for k, batch_size, depths in CASES:
        trials = members(k, batch_size, depths, args.epochs)
        steps = args.epochs * -(-data.X_train.shape[0] // batch_size)
        times: dict[bool, list[float]] = {False: [], True: []}
        trained: dict[bool, list] = {}
        for _ in range(args.rounds):
            for inference in (False, True):
                seconds, trained[inference] = timed_fit(trials, data, inference)
                times[inference].append(seconds / steps * 1e6)
        if not same(trained[False], trained[True]):
            raise SystemExit(f"K={k} batch {batch_size}: the two arms trained different numbers")
        before, after = statistics.median(times[False]), statistics.median(times[True])
        results[f"K={k} batch={batch_size} depths={depths}"] = case = {
            "no_grad_us_per_step": round(before, 1),
            "inference_us_per_step": round(after, 1),
            "ratio": round(after / before, 3),
            "fastest_no_grad_us": round(min(times[False]), 1),
            "fastest_inference_us": round(min(times[True]), 1),
            "ratio_fastest": round(min(times[True]) / min(times[False]), 3),
        }
        print(f"{k:>3} {batch_size:>5} {depths:>6} {before:>11.1f} {after:>13.1f} {case['ratio']:>6.3f}"
              f" ({case['fastest_no_grad_us']:.0f}; {case['fastest_inference_us']:.0f}: {case['ratio_fastest']:.3f})",
              flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
