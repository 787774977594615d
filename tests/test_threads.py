"""The recorder process computes on one thread, even where numpy and torch were loaded before its
own code ran (a spawned process imports its parent's main module first, as a flow's worker does):
a second BLAS thread there takes the core the trainer beside it needs (`pipeline/threads.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A main module that loads numpy and torch at the top, as flows/experiment.py does: the recorder,
# spawned, imports it again before its initializer runs.
MAIN = textwrap.dedent(
    """
    import json

    import numpy
    import torch

    from pipeline.recorder import Recorder


    def counts():
        from threadpoolctl import threadpool_info

        libraries = {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
        return {"libraries": libraries, "torch": torch.get_num_threads()}


    if __name__ == "__main__":
        with Recorder() as recorder:
            future = recorder.submit(counts)
        print(json.dumps({"recorder": future.result(), "parent": counts()}))
    """
)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every library runs one thread anyway")
def test_recorder_runs_one_thread_in_every_library(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(MAIN)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.splitlines()[-1])
    # The parent, left alone, runs a thread per core: the limit is what makes the recorder's one.
    assert counts["parent"]["libraries"]["openblas"] > 1
    assert counts["recorder"]["libraries"]["openblas"] == 1
    assert set(counts["recorder"]["libraries"].values()) == {1}
    assert counts["recorder"]["torch"] == 1
