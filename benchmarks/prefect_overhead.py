"""Prefect's overhead on the pipeline: the `experiment` flow against the same work without Prefect.

    python benchmarks/prefect_overhead.py --repeats 3

Each variant runs in a fresh process on a fresh clone of this repo (committed state), with the
default params made lighter (fewer trials and epochs) so that the fixed costs stay visible, or
as they are with --full:
- plain: the flow's task functions called one after another (`task.fn`), no Prefect at all;
- flow-1: the `experiment` flow with max_concurrency=1 (same order of work, plus Prefect);
- flow-2: the `experiment` flow with max_concurrency=2 (tunings in two worker processes).
Both flows start Prefect's ephemeral local API in their process, as a user's run does. The script
prints the median wall time of each variant and its ratio to `plain`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
from pathlib import Path
from flows.experiment import Layout, compare_task, generate_task, tune_task, version_task
from pipeline.config import load_params
root = Path('.').resolve()
params = load_params(root / 'params.yaml')
md5 = {dataset: generate_task.fn(params, dataset, Layout(root)) for dataset in params.datasets}
for dataset in params.datasets:
    tune_task.fn(params, dataset, Layout(root), {}, md5[dataset])
compare_task.fn(params, Layout(root))
version_task.fn(root, False)
"""

FLOW = """
from flows.experiment import experiment
experiment(repo='.', max_concurrency={concurrency}, push=False, promote=False)
"""

VARIANTS = {"plain": PLAIN, "flow-1": FLOW.format(concurrency=1), "flow-2": FLOW.format(concurrency=2)}


def lighter(params: dict, n_trials: int, epochs: int) -> dict:
    for tuning in params["tuning"].values():
        tuning["n_trials"] = n_trials
        tuning["space"]["epochs"] = {"low": epochs, "high": epochs}
        tuning["pruner"]["name"] = "none"  # every variant does exactly the same epochs
    return params


def fresh_repo(base: Path, n_trials: int | None, epochs: int) -> Path:
    repo = Path(tempfile.mkdtemp(dir=base)) / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    if n_trials is not None:
        params = lighter(yaml.safe_load((repo / "params.yaml").read_text()), n_trials, epochs)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def timed(code: str, repo: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed in {repo}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3, help="trials per tuning (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--full", action="store_true", help="the default params as they are (minutes a run)")
    args = parser.parse_args()
    n_trials = None if args.full else args.trials
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as base:
        for repeat in range(args.repeats):
            for name, code in VARIANTS.items():  # interleaved, so machine noise hits every variant alike
                times[name].append(timed(code, fresh_repo(Path(base), n_trials, args.epochs)))
                print(f"repeat {repeat + 1}/{args.repeats} {name}: {times[name][-1]:.1f}s", flush=True)
    baseline = statistics.median(times["plain"])
    workload = "default params.yaml" if args.full else f"{args.trials} trials x {args.epochs} epochs a tuning"
    print(f"\n{'variant':8} {'median s':>9} {'vs plain':>9}   ({workload})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:8} {median:9.1f} {median / baseline:9.2f}x  (+{median - baseline:.1f}s)")


if __name__ == "__main__":
    main()
