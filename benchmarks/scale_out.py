"""The same tuning with 1 and with 2 workers: how much a second worker buys.

Starts its own throwaway PostgreSQL (the Optuna study and the MLflow backend store) and `mlflow
server` (tools/throwaway.py), then, per repeat and per worker count, runs the tune stage of one MLP
family with `--workers N` in a fresh folder and reads back the tuning time the stage recorded
(`tune_seconds`: from publishing the job to the best model back; the stage's own imports are not
in it, the workers' start-up is). Medians over repeats; the ratio is 1 worker's over 2 workers'.

    python benchmarks/scale_out.py --repeats 3 --json benchmarks/scale_out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import throwaway  # noqa: E402  (tools/ is not a package)

WORKLOAD = {"n_trials": 24, "trials_per_batch": 4, "epochs": {"low": 1500, "high": 1700}, "width": [32], "depth": [2]}


def params(workload: dict) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["datasets"] = {"product": raw["datasets"]["product"]}
    mlp = raw["tuning"]["mlp"]
    mlp.update(n_trials=workload["n_trials"], trials_per_batch=workload["trials_per_batch"])
    mlp["pruner"]["name"] = "none"  # every run does the same epochs
    mlp["space"].update(epochs=workload["epochs"], width=workload["width"], depth=workload["depth"])
    return raw


def run_once(workers: int, env: dict, workload: dict) -> tuple[float, int]:
    """One tuning with `workers` local workers; (tuning seconds, trials finished)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "params.yaml").write_text(yaml.safe_dump(params(workload)))
        run = {"cwd": repo, "env": env, "check": True, "capture_output": True, "text": True}
        subprocess.run([sys.executable, "-m", "pipeline", "generate", "--dataset", "product",
                        "--out", "data/product.npz", "--meta", "data/product.json"], **run)  # fmt: skip
        subprocess.run([sys.executable, "-m", "pipeline", "tune", "--dataset", "product", "--models", "mlp",
                        "--data", "data/product.npz", "--models-dir", "models", "--metrics-dir", "metrics",
                        "--plots-dir", "plots", "--workers", str(workers)], **run)  # fmt: skip
        metrics = json.loads((repo / "metrics" / "product-mlp.json").read_text())
        # Times are MLflow's (the DVC metrics file keeps only what changes with the results).
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("equations")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'parent'", max_results=1)
        return parent.data.metrics["tune_seconds"], metrics["n_trials_complete"] + metrics["n_trials_pruned"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this path")
    args = parser.parse_args(argv)
    seconds: dict[int, list[float]] = {1: [], 2: []}
    finished = set()
    with throwaway.postgres() as pg, throwaway.mlflow_server(f"{pg}/mlflow") as tracking:
        env = os.environ | {"MLFLOW_TRACKING_URI": tracking, "OPTUNA_STORAGE": f"{pg}/optuna",
                            "PYTHONPATH": str(ROOT), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
        for repeat in range(args.repeats):
            for workers in (1, 2):
                took, n = run_once(workers, env, WORKLOAD)
                seconds[workers].append(took)
                finished.add(n)
                print(f"repeat {repeat + 1}: {workers} worker(s) {took:.1f} s, {n} trials finished", flush=True)
    medians = {str(w): round(statistics.median(s), 2) for w, s in seconds.items()}
    result = {
        "workers": medians,
        "speedup": round(medians["1"] / medians["2"], 2),
        "trials_finished": min(finished),
        "n_trials": WORKLOAD["n_trials"],
    }
    print(f"{os.cpu_count()} cores, medians of {args.repeats}: 1 worker {medians['1']} s, 2 workers "
          f"{medians['2']} s, speedup {result['speedup']}x; {result['trials_finished']} of {result['n_trials']} "
          "trials finished")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
