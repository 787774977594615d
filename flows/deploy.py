"""Register the deployments on a Prefect work pool, for runs on other machines.

    prefect work-pool create equations --type process
    python -m flows.deploy --work-pool equations --source .     # or a git URL the workers can clone
    prefect worker start --pool equations                       # on each machine that runs flows

The flows' code comes from `--source` (this checkout by default, so workers must see the same
path; give a git URL for machines of their own). Schedules and limits are those of flows.serve.
"""

from __future__ import annotations

import argparse

from flows.serve import DEPLOYMENTS

ENTRYPOINTS = {
    "experiment": "flows/experiment.py:experiment",
    "generate-datasets": "flows/experiment.py:generate_datasets",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-pool", required=True, help="a Prefect work pool of type process")
    parser.add_argument("--source", default=".", help="where workers get the code: a path or git URL")
    args = parser.parse_args(argv)
    for flow, name, options in DEPLOYMENTS:
        remote = flow.from_source(source=args.source, entrypoint=ENTRYPOINTS[flow.name])
        remote.deploy(name=name, work_pool_name=args.work_pool, build=False, push=False, **options)


if __name__ == "__main__":
    main()
