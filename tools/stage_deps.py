"""The code each DVC stage runs, from the import graph, against the deps dvc.yaml lists.

A stage's command is `python -m pipeline <command> ...`; its code is `pipeline/__main__.py`,
`pipeline/cli.py`, the command's module (`pipeline.cli.COMMANDS`) and every module of `pipeline`
these import, directly or through others, at module level or inside functions (imports only for
type checking excluded: they never run), with the packages they sit in. dvc.yaml must list exactly
those files, so that editing code a stage does not run never reruns it.

    python tools/stage_deps.py           # exit 1 and the differences if dvc.yaml is out of step
    python tools/stage_deps.py --print   # each stage's code deps, to paste into dvc.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ("pipeline.__main__", "pipeline.cli")


def code_deps(command: str) -> list[str]:
    """The repo-relative paths of the Python files `python -m pipeline <command>` can run."""
    import grimp

    sys.path.insert(0, str(ROOT))
    from pipeline.cli import COMMANDS

    graph = grimp.build_graph("pipeline", exclude_type_checking_imports=True, cache_dir=None)
    start = {*ENTRY, COMMANDS[command][0]}
    modules = set(start)
    for module in start:
        modules |= graph.find_upstream_modules(module)
    modules |= {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}  # packages
    return sorted(_path(module) for module in modules)


def _path(module: str) -> str:
    base = ROOT / Path(*module.split("."))
    return (base / "__init__.py" if base.is_dir() else base.with_suffix(".py")).relative_to(ROOT).as_posix()


def listed(stage: dict) -> tuple[str, list[str]]:
    """A dvc.yaml stage's command word and the Python files it lists as deps."""
    body = stage.get("do", stage)
    command = body["cmd"].split()[3]  # python -m pipeline <command>
    return command, sorted(dep for dep in body.get("deps", []) if str(dep).endswith(".py"))


def differences(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[list[str], list[str]]]:
    """Per stage: (files it runs but does not list, files it lists but does not run)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        command, deps = listed(stage)
        expected = code_deps(command)
        missing, extra = sorted(set(expected) - set(deps)), sorted(set(deps) - set(expected))
        if missing or extra:
            found[name] = (missing, extra)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print each stage's code deps")
    args = parser.parse_args(argv)
    if args.print:
        for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
            print(f"{name}:", *(f"  - {path}" for path in code_deps(listed(stage)[0])), sep="\n")
        return 0
    wrong = differences()
    for name, (missing, extra) in wrong.items():
        print(f"dvc.yaml stage {name!r}: runs but does not list {missing}; lists but does not run {extra}")
    if not wrong:
        print("dvc.yaml: every stage lists exactly the code it runs")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
