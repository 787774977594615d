"""The shape that keeps the code easy to change, checked by machine: imports run one way with no
circle (import-linter's contracts in pyproject.toml), each DVC stage lists exactly the code it runs
(tools/stage_deps.py), every module sits in a layer, and no module grows past 400 lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import BIN, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import stage_deps  # noqa: E402  (tools/ is not a package)

MAX_LINES = 400


def lint_imports(root) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_inside_a_function_breaks_the_contracts(tmp_path):
    for name in ("pipeline", "flows"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "pipeline" / "terms.py", "a") as terms:  # the library reaching up into a stage
        terms.write("\n\ndef planted() -> None:\n    from pipeline.stages import tune  # noqa: F401\n")
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Orchestration over stages over the library BROKEN" in result.stdout
    assert "pipeline.terms -> pipeline.stages.tune" in result.stdout


def test_every_dvc_stage_lists_exactly_the_code_it_runs():
    assert stage_deps.differences() == {}
    # The report's code is compare's alone, promotion's is no stage's, training's is not generate's.
    deps = {command: set(stage_deps.code_deps(command)) for command in ("generate", "tune", "compare")}
    assert "pipeline/report.py" in deps["compare"] and "pipeline/report.py" not in deps["tune"] | deps["generate"]
    assert not any("registry" in path or "promote" in path for paths in deps.values() for path in paths)
    assert "pipeline/train.py" in deps["tune"] and "pipeline/train.py" not in deps["generate"] | deps["compare"]


def test_every_module_sits_in_a_layer_of_the_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["id"] == "layers")["layers"]
    named = {part.strip() for layer in layers for part in layer.replace("|", ":").split(":")}
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "pipeline").glob("*.py")
        if path.name != "__init__.py"
    }
    assert modules - named == set(), "add these modules to the layers in pyproject.toml"


@pytest.mark.parametrize("package", ["pipeline", "flows"])
def test_no_module_is_over_400_lines(package):
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in (ROOT / package).rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_the_feynman_pipeline_is_what_make_table_writes():
    # examples/feynman/dvc.yaml and params.yaml are generated: an edit to the root dvc.yaml (a new
    # stage, a new dependency) must reach them through make_table.py, not by hand.
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_table", ROOT / "examples" / "feynman" / "make_table.py")
    make_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_table)
    here = ROOT / "examples" / "feynman"
    assert (here / "dvc.yaml").read_text() == make_table.dvc_yaml()
    params = make_table.params(here / "FeynmanEquations.csv")
    assert yaml.safe_load((here / "params.yaml").read_text()) == params and len(params["datasets"]) == 100


def test_every_function_is_typed_and_takes_at_most_six_parameters():
    import ast

    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")) + sorted((ROOT / "flows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            named = [a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
            every = named + [a for a in (args.vararg, args.kwarg) if a is not None]
            if len(named) > 6 or any(a.annotation is None for a in every) or node.returns is None:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert found == []
