"""Copy a full run's summary into results/, with what the report leaves out: how long it took.

The report (`reports/summary.md`, a DVC output) holds no timings, so that it changes only when
results do. The committed results of the table also say how long each equation took to tune (the
sum of its three families' `tune_seconds`, from their latest MLflow parent runs at this noise
level) and how long the whole run took on which machine.

    python collect_results.py --label noise-0 --wall-s 2125.7 --cpu-s 3588.2 --machine "2 cores, ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from mlflow import MlflowClient

HERE = Path(__file__).resolve().parent


def tune_seconds(root: Path, experiment: str, noise_relative: float) -> dict[str, float]:
    """Per dataset, the seconds its three families' latest tunings took at this noise level."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.role = 'parent'", max_results=50_000,
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    latest: dict[tuple[str, str], float] = {}
    for run in runs:
        key = (run.data.tags["dataset"], run.data.tags["model"])
        if float(run.data.params.get("dataset.noise_relative", 0.0)) == noise_relative and key not in latest:
            latest[key] = run.data.metrics.get("tune_seconds", 0.0)
    seconds: dict[str, float] = {}
    for (dataset, _), value in latest.items():
        seconds[dataset] = seconds.get(dataset, 0.0) + value
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=HERE, help="the folder the run wrote to")
    parser.add_argument("--label", required=True, help="results/<label>.md and .json")
    parser.add_argument("--wall-s", type=float, required=True, help="the whole run's wall time")
    parser.add_argument("--cpu-s", type=float, required=True, help="its CPU time (user + system)")
    parser.add_argument("--machine", required=True, help="where it ran")
    args = parser.parse_args()
    params = yaml.safe_load((args.root / "params.yaml").read_text())
    noise = float(params["dataset_defaults"].get("noise_relative", 0.0))
    summary = json.loads((args.root / "reports" / "summary.json").read_text())
    seconds = tune_seconds(args.root, params["tracking"]["experiment"], noise)
    for name, row in summary["datasets"].items():
        row["tune_seconds"] = round(seconds.get(name, 0.0), 1)
    run = {"wall_s": args.wall_s, "cpu_s": args.cpu_s, "cpu_per_wall": round(args.cpu_s / args.wall_s, 2),
           "tune_seconds_total": round(sum(seconds.values()), 1), "noise_relative": noise,
           "machine": args.machine}  # fmt: skip
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.label}.json").write_text(json.dumps(summary | {"run": run}, indent=1) + "\n")
    (out / f"{args.label}.md").write_text(markdown(summary, run, (args.root / "reports" / "summary.md").read_text()))
    print(f"{out / args.label}.md, .json: {summary['totals']['exact']} exact, {run}")


def markdown(summary: dict, run: dict, report: str) -> str:
    """The report's totals, the run's time, then the outcome table with a time column."""
    head, rest = report.split("## Outcome per dataset", 1)
    table, tail = rest.split("\n## ", 1)
    lines = [line for line in table.strip().splitlines()]
    timed = [lines[0] + " tune s |", lines[1] + "---|"]
    for line in lines[2:]:
        name = line.split("|")[1].strip()
        timed.append(f"{line} {summary['datasets'][name]['tune_seconds']:.0f} |")
    took = (
        f"## The run\n\nNoise {run['noise_relative']} x RMS(y). The whole table took {run['wall_s'] / 60:.1f} min "
        f"of wall time and {run['cpu_s'] / 60:.1f} min of CPU time (CPU / wall {run['cpu_per_wall']}) on "
        f"{run['machine']}; the tunings themselves {run['tune_seconds_total'] / 60:.1f} min, summed over "
        "equations and families (each measured inside its process, two at a time).\n\n"
    )
    return head + took + "## Outcome per dataset\n\n" + "\n".join(timed) + "\n\n## " + tail


if __name__ == "__main__":
    main()
