"""What a table of N equations costs beyond its training: the slope per dataset, and DVC's no-op.

    python benchmarks/table_scale.py --sizes 3 30 100 --json benchmarks/table_scale.json

For each N, a fresh git + DVC repo of this working tree's code with N generated equations (named
variables on ranges, 1,000 rows, fixed small budgets), then:
- `whole`: the one command that runs a table, `python -m flows.experiment --no-push --no-promote`
  (generate, tune on both cores, compare, dvc commit), wall time; `cpu` the CPU time of all its
  processes (CPU / wall says how busy both cores were);
- `training`: the tunings' own time, summed over every (dataset, family) from MLflow's
  `tune_seconds` (ask, train, tell), and that sum spread over the workers;
- `overhead_per_dataset`: (whole - training spread over the workers) / N;
- `noop_repro`, `status`: `dvc repro` and `dvc status` right after, nothing changed;
- `one_changed`: one dataset's equation edited, then `dvc repro`: its time and the stages it ran.
With --serial-max M, also `dvc repro` from scratch (one stage at a time) for N <= M, in a second repo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
# This interpreter's environment first on PATH (dvc, and the `python` of dvc.yaml's commands), also
# when the script runs as .venv/bin/python without the venv activated.
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

# Forms a scientist writes (a few terms, products, powers, one function): coefficients drawn per
# dataset, each variable uniform on a range of its own.
FORMS = (
    "{a}*m*r/t**2", "{a}*m + {b}*r", "{a}*m*r - {b}*t", "{a}*sqrt(m/r)", "{a}*m*sin(r)", "{a}*m**2 + {b}*r",
    "{a}*exp(-m/r)",
)  # fmt: skip


def equations(n: int, seed: int = 0) -> dict[str, dict]:
    rng = random.Random(seed)
    table = {}
    for i in range(n):
        form = FORMS[i % len(FORMS)]
        text = form.format(a=f"{rng.uniform(0.5, 3):.2f}", b=f"{rng.uniform(0.5, 3):.2f}")
        used = [name for name in ("m", "r", "t") if re.search(rf"\b{name}\b", text)]
        variables = {name: {"low": round(rng.uniform(1, 2), 2), "high": round(rng.uniform(3, 5), 2)} for name in used}
        table[f"eq{i:03d}"] = {"equation": text, "variables": variables, "seed": i}
    return table


def params(n: int) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["dataset_defaults"] = {"n_samples": 1000}
    raw["datasets"] = equations(n)
    for tuning in raw["tuning"].values():  # fixed small budgets: the cost around training shows
        tuning.update(n_trials=8, trials_per_batch=8)
    raw["tuning"]["mlp"]["space"]["epochs"] = {"low": 30, "high": 40, "log": False}
    raw["tracking"]["experiment"] = "table"
    return raw


def make_repo(base: Path, n: int) -> Path:
    root = Path(tempfile.mkdtemp(dir=base)) / "repo"
    root.mkdir()
    for package in ("pipeline", "flows"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "prefect.toml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    (root / "params.yaml").write_text(yaml.safe_dump(params(n), sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "table"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def timed(root: Path, *command: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the command and every process it waited for, its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout + done.stderr


def tuning_seconds(root: Path) -> float:
    """Sum of the parent runs' `tune_seconds` (MLflow keeps timings; the DVC metrics do not)."""
    with sqlite3.connect(root / "mlflow.db") as db:
        (total,) = db.execute("select sum(value) from latest_metrics where key = 'tune_seconds'").fetchone()
    return float(total or 0.0)


def ran_stages(output: str) -> list[str]:
    return sorted(set(re.findall(r"Running stage '([^']+)'", output)))


def measure(base: Path, n: int, serial: bool) -> dict:
    root = make_repo(base, n)
    wall, cpu, _ = timed(root, sys.executable, "-m", "flows.experiment", "--no-push", "--no-promote",
                         "--max-concurrency", str(WORKERS))  # fmt: skip
    training = tuning_seconds(root)
    noop, _, out = timed(root, "dvc", "repro")
    assert not ran_stages(out), f"a no-op dvc repro ran {ran_stages(out)}"
    status, _, _ = timed(root, "dvc", "status")
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["datasets"]["eq001"]["equation"] = data["datasets"]["eq001"]["equation"].replace("*", "*1.5*", 1)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    changed, _, out = timed(root, "dvc", "repro")
    result = {
        "n": n,
        "whole_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_wall": round(cpu / wall, 3),
        "training_s": round(training, 2),
        "training_per_worker_s": round(training / WORKERS, 2),
        "overhead_per_dataset_s": round((wall - training / WORKERS) / n, 3),
        "noop_repro_s": round(noop, 2),
        "status_s": round(status, 2),
        "one_changed_repro_s": round(changed, 2),
        "one_changed_ran": ran_stages(out),
    }
    if serial:
        other = make_repo(base, n)
        wall, cpu, _ = timed(other, "dvc", "repro")
        training = tuning_seconds(other)
        result["serial_dvc_repro"] = {"whole_s": round(wall, 2), "cpu_per_wall": round(cpu / wall, 3),
                                      "training_s": round(training, 2),
                                      "overhead_per_dataset_s": round((wall - training) / n, 3)}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 30, 100])
    parser.add_argument("--serial-max", type=int, default=0, help="also a serial `dvc repro` for N up to this")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="make the repos in this folder and keep them (default: removed)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            results.append(measure(base, n, n <= args.serial_max))
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'N':>4} {'whole s':>8} {'train/worker s':>14} {'overhead/dataset s':>18} {'CPU/wall':>8} "
          f"{'no-op repro s':>13} {'status s':>8}")  # fmt: skip
    for r in results:
        print(f"{r['n']:4d} {r['whole_s']:8.1f} {r['training_per_worker_s']:14.1f} {r['overhead_per_dataset_s']:18.2f} "
              f"{r['cpu_per_wall']:8.2f} {r['noop_repro_s']:13.2f} {r['status_s']:8.2f}")  # fmt: skip
    if args.json:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
        args.json.write_text(json.dumps({"machine": machine, "workers": WORKERS, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
