"""A tuning's study in memory against the same study asked and told on its SQLite storage.

    python benchmarks/study_in_memory.py --repeats 3 --json benchmarks/study_in_memory.json

For each model family, the family's budget and search space come from params.yaml (`tuning.<family>`),
the dataset from its `datasets:` (default `product`). The same tuning runs twice in this one process,
each time into a new study of a fresh SQLite store:
- `storage`: every trial asked, its parameters written, pruned on an in-memory copy, told, on the
  storage itself, a batch at a time through `tune.run_batch` (how `tune.tune` worked before);
- `in_memory`: `tune.tune`, which asks, trains and tells on a study in memory and writes each batch
  into the storage once it is over.
Both train the same stacks through the one `train.fit`; the script checks that the stored trials
are the same (numbers, states, parameters, values, curves). It prints the CPU seconds of each (this
process's, medians over `--repeats`), their ratio, and the CPU saved per trial; `--json` writes
`{family: {"storage": s, "in_memory": s, "ratio": r, "saved_ms_per_trial": ms, ...}}`.
Not measured here: the stage's recorder process (MLflow runs), which is the same for both.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tuning_cli  # noqa: E402  (beside this script)

from pipeline import data as datasets  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.stages import specs  # noqa: E402
from pipeline.stages import tune as tune_stage  # noqa: E402
from pipeline.study_storage import optuna_storage  # noqa: E402
from pipeline.train import Tensors  # noqa: E402
from pipeline.trials import Hooks, run_batch  # noqa: E402
from pipeline.tune import TuningJob, create_study, tune  # noqa: E402


def on_storage(study: optuna.Study, job: TuningJob, data: Tensors) -> None:
    for first in range(0, job.n_trials, job.batch):
        trials = [study.ask() for _ in range(min(job.batch, job.n_trials - first))]
        run_batch(study, trials, job, data, Hooks())


def in_memory(study: optuna.Study, job: TuningJob, data: Tensors) -> None:
    tune(study, job, data)


VARIANTS = {"storage": on_storage, "in_memory": in_memory}


def stored(url: str, name: str) -> list[tuple]:
    trials = optuna.load_study(study_name=name, storage=url).trials
    return [(t.number, t.state, t.params, t.value, t.intermediate_values) for t in trials]


def measure(job: TuningJob, data: Tensors, repeats: int, folder: Path) -> dict:
    folder.mkdir()
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    trials: dict[str, list[tuple]] = {}
    for repeat in range(repeats):
        for name, variant in VARIANTS.items():
            url = f"sqlite:///{folder / f'{name}-{repeat}.db'}"
            study = create_study(name, optuna_storage(url), job.settings)  # as the stage opens it
            start = time.process_time()
            variant(study, job, data)
            seconds[name].append(time.process_time() - start)
            trials[name] = stored(url, name)
    same = trials["storage"] == trials["in_memory"]
    storage, memory = statistics.median(seconds["storage"]), statistics.median(seconds["in_memory"])
    return {
        "storage": round(storage, 4),
        "in_memory": round(memory, 4),
        "ratio": round(storage / memory, 3),
        "saved_ms_per_trial": round(1000 * (storage - memory) / job.n_trials, 1),
        "n_trials": job.n_trials,
        "trials_per_batch": job.batch,
        "seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "same_trials": same,
    }


def main(argv: list[str] | None = None) -> int:
    args = tuning_cli.parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    params.check_dataset(args.dataset)
    torch.set_num_threads(params.training.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dataset = datasets.generate(specs.dataset_spec(params, args.dataset))
    library = specs.library_for(params, args.dataset)[0] if "cross" in args.families else ()
    results = {}
    print(f"dataset {args.dataset}, CPU seconds of this process, medians of {args.repeats}")
    print(f"{'family':8} {'trials':>6} {'batch':>5} {'storage':>9} {'in memory':>10} {'ratio':>6} {'saved':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for family in args.families:
            job = tune_stage.tuning_job(params, family, args.dataset, dataset, library)
            data = Tensors.from_arrays(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, job.device,
                                       job.standardize)  # fmt: skip
            r = results[family] = measure(job, data, args.repeats, Path(folder) / family)
            print(
                f"{family:8} {r['n_trials']:>6} {r['trials_per_batch']:>5} {r['storage']:>8.2f}s "
                f"{r['in_memory']:>9.2f}s {r['ratio']:>5.2f}x {r['saved_ms_per_trial']:>6.1f} ms/trial"
                + ("" if r["same_trials"] else "  DIFFERENT TRIALS")
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["same_trials"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
