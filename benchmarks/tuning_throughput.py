"""Tuning throughput: the same Optuna trials trained one at a time (stacks of one) and batched.

    python benchmarks/tuning_throughput.py --repeats 3 --json throughput.json

For each model family, the family's search space and budget come from params.yaml (`tuning.<family>`:
`n_trials`, `trials_per_batch`, `space`, `sampler_seed`). The trials' configurations are drawn
once from that space by the family's sampler (Optuna's TPE with `constant_liar`, asked in the same
batches the pipeline asks), each with its seed, and then trained twice in this one process through
the one `train.fit`: one trial per call (K = 1), and `trials_per_batch` trials per call (stacked).
No pruning, so both variants do the same work; the script checks that they reach the same losses.
It prints trials per second for each variant, medians over `--repeats`, and their ratio; `--json`
writes `{family: {"one_at_a_time": trials_per_s, "batched": trials_per_s, "ratio": r}}`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tuning_cli  # noqa: E402  (beside this script)

from pipeline import data as datasets  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.space import suggest  # noqa: E402
from pipeline.stages import specs  # noqa: E402
from pipeline.stages import tune as tune_stage  # noqa: E402
from pipeline.train import Member, Tensors, fit  # noqa: E402
from pipeline.tune import create_study  # noqa: E402


def sample_members(params, family: str, dataset: str) -> list[Member]:
    """The trials a tuning of this family would start from: drawn by its sampler, in its batches."""
    tuning = params.tuning[family]
    study = create_study(f"benchmark/{family}", None, tune_stage.study_settings(tuning))
    space = tune_stage.search_space(tuning)
    spec = tune_stage.model_spec(params, family, dataset)
    trials = [study.ask() for _ in range(tuning.n_trials)]
    return [suggest(trial, space, spec, tuning.sampler_seed + trial.number) for trial in trials]


def timed(fn) -> tuple[float, list]:
    start = time.perf_counter()
    results = fn()
    return time.perf_counter() - start, results


def one_at_a_time(members: list[Member], data: Tensors) -> list:
    return [fit([member], data)[0] for member in members]


def batched(members: list[Member], data: Tensors, batch: int) -> list:
    return [trained for first in range(0, len(members), batch) for trained in fit(members[first : first + batch], data)]


def largest_difference(a: list, b: list) -> float:
    """Largest relative difference of the final validation losses (float32 sums in another order)."""
    return max(
        abs(x.history.final_val - y.history.final_val) / max(abs(y.history.final_val), 1e-6)
        for x, y in zip(a, b, strict=True)
    )


def measure(params, family: str, data: Tensors, repeats: int, dataset: str) -> dict:
    members = sample_members(params, family, dataset)
    batch = params.tuning[family].trials_per_batch
    fit(members[:1], data)  # warm-up: first-call costs belong to neither variant
    single, stacked, difference = [], [], 0.0
    for _ in range(repeats):
        seconds, alone = timed(lambda: one_at_a_time(members, data))
        single.append(seconds)
        seconds, together = timed(lambda: batched(members, data, batch))
        stacked.append(seconds)
        difference = max(difference, largest_difference(together, alone))
    one, many = len(members) / statistics.median(single), len(members) / statistics.median(stacked)
    return {
        "one_at_a_time": round(one, 3),
        "batched": round(many, 3),
        "ratio": round(many / one, 2),
        "n_trials": len(members),
        "trials_per_batch": batch,
        "seconds": {"one_at_a_time": [round(s, 2) for s in single], "batched": [round(s, 2) for s in stacked]},
        "largest_relative_difference": difference,
    }


def main(argv: list[str] | None = None) -> int:
    args = tuning_cli.parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    torch.set_num_threads(params.training.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dataset = datasets.generate(specs.dataset_spec(params, args.dataset))
    data = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, params.training.device)
    results = {}
    print(
        f"dataset {args.dataset}, device {params.training.device}, {torch.get_num_threads()} thread(s), "
        f"medians of {args.repeats}"
    )
    print(f"{'family':8} {'trials':>6} {'batch':>5} {'one at a time':>16} {'batched':>14} {'ratio':>7}")
    for family in args.families:
        r = results[family] = measure(params, family, data, args.repeats, args.dataset)
        print(
            f"{family:8} {r['n_trials']:>6} {r['trials_per_batch']:>5} {r['one_at_a_time']:>10.2f} trials/s "
            f"{r['batched']:>8.2f} trials/s {r['ratio']:>6.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
