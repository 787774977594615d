"""The benchmarks, run small: same trials both ways, same losses, numbers that add up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, shrink


def benchmark(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run benchmarks/<script> with `args` in this interpreter; its output captured."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def small_tunings(folder, raw: dict) -> None:
    """A params.yaml in `folder`: the real one shrunk, each family 6 trials in batches of 3."""
    small = shrink(raw)
    for tuning in small["tuning"].values():
        tuning["n_trials"], tuning["trials_per_batch"] = 6, 3
    (folder / "params.yaml").write_text(yaml.safe_dump(small))


def test_throughput_benchmark_trains_the_same_trials_both_ways(tmp_path, default_params_raw):
    small_tunings(tmp_path, default_params_raw)
    out = tmp_path / "throughput.json"
    result = benchmark("tuning_throughput.py", "--params", str(tmp_path / "params.yaml"), "--repeats", "2",
                       "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    assert set(numbers) == {"linear", "cross", "mlp"}
    for family, row in numbers.items():
        assert row["n_trials"] == 6 and row["trials_per_batch"] == 3
        assert len(row["seconds"]["one_at_a_time"]) == len(row["seconds"]["batched"]) == 2
        assert row["one_at_a_time"] > 0 and row["batched"] > 0
        assert abs(row["ratio"] - row["batched"] / row["one_at_a_time"]) < 0.01 * row["ratio"] + 0.01
        # Stacked or alone, each trial reaches the same validation loss (float32 sums in another order).
        assert row["largest_relative_difference"] < 1e-3, family
        assert f"{family:8}" in result.stdout


def test_study_in_memory_benchmark_stores_the_same_trials_both_ways(tmp_path, default_params_raw):
    small_tunings(tmp_path, default_params_raw)
    out = tmp_path / "in_memory.json"
    result = benchmark("study_in_memory.py", "--params", str(tmp_path / "params.yaml"), "--repeats", "2",
                       "--families", "linear", "cross", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    assert set(numbers) == {"linear", "cross"}
    for family, row in numbers.items():
        assert row["same_trials"] is True, family  # the script compares every stored trial
        assert row["n_trials"] == 6 and row["trials_per_batch"] == 3
        assert len(row["seconds"]["storage"]) == len(row["seconds"]["in_memory"]) == 2
        # The JSON's seconds are rounded (to 0.1 ms), its ratio is not: a tuning of 6 trials takes some 20 ms.
        assert abs(row["ratio"] - row["storage"] / row["in_memory"]) < 0.02 * row["ratio"] + 0.01
        saved = 1000 * (row["storage"] - row["in_memory"]) / 6
        assert abs(row["saved_ms_per_trial"] - saved) < 0.2
        assert f"{family:8}" in result.stdout


def test_stack_scaling_benchmark_measures_each_batch_size_against_a_stack_of_one(tmp_path, default_params_raw):
    out = tmp_path / "scaling.json"
    result = benchmark("stack_scaling.py", "--sizes", "1", "8", "--epochs", "2", "--repeats", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    batch_sizes = default_params_raw["tuning"]["mlp"]["space"]["batch_size"]
    assert set(numbers) == {f"batch_size={b}" for b in batch_sizes}
    for row in numbers.values():
        assert set(row) == {"1", "8"}
        assert row["1"]["speedup"] == 1.0
        assert row["1"]["us_per_member_step"] == row["1"]["us_per_step"] > 0
        eight = row["8"]
        assert abs(eight["us_per_member_step"] * 8 - eight["us_per_step"]) < 0.1
        assert abs(eight["speedup"] - 8 * row["1"]["us_per_step"] / eight["us_per_step"]) < 0.02
        # Eight members in one step cost less than eight steps (the whole point of stacking).
        assert eight["speedup"] > 1.5


def test_stack_scaling_benchmark_refuses_sizes_without_the_baseline(capsys):
    # Its `main`, in this process: a refusal needs no second interpreter's imports (seconds).
    script = importlib.util.spec_from_file_location("stack_scaling", ROOT / "benchmarks" / "stack_scaling.py")
    module = importlib.util.module_from_spec(script)
    script.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit:
        module.main(["--sizes", "4", "8"])
    assert exit.value.code == 2
    assert "--sizes [4, 8]: must hold 1" in capsys.readouterr().err


def test_step_modes_benchmark_times_both_arms_on_the_same_numbers(tmp_path):
    out = tmp_path / "modes.json"
    result = benchmark("step_modes.py", "--rounds", "2", "--epochs", "1", "--json", str(out))
    # It exits non-zero if the two arms trained different losses or weights.
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(out.read_text())
    assert list(numbers) == ["K=10 batch=16 depths=2/3", "K=10 batch=32 depths=2/3", "K=1 batch=16 depths=3",
                             "K=20 batch=16 depths=3"]  # fmt: skip
    for case in numbers.values():
        assert case["fastest_no_grad_us"] <= case["no_grad_us_per_step"]
        assert case["fastest_inference_us"] <= case["inference_us_per_step"]
        assert abs(case["ratio"] - case["inference_us_per_step"] / case["no_grad_us_per_step"]) < 0.002
        assert abs(case["ratio_fastest"] - case["fastest_inference_us"] / case["fastest_no_grad_us"]) < 0.002
    assert "K batch depths" in " ".join(result.stdout.split())
