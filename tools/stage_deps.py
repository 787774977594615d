"""The code each DVC stage runs, from the import graph, against what dvc.yaml says.

A stage's command is `python -m pipeline <command> ...`; its code is `pipeline/__main__.py`,
`pipeline/cli.py`, the command's module (`pipeline.cli.COMMANDS`) and every module of `pipeline`
these import, directly or through others, at module level or inside functions (imports only for
type checking excluded: they never run), with the packages they sit in.

In dvc.yaml, `validate` lists its code itself; the stages of every dataset (`generate`, `tune`)
and `compare` depend instead on `checks/code/<command>.md5`, which the stage `code-<command>`
writes by hashing exactly that code (its deps and the files in its command). So editing code a
stage does not run never reruns it, and dvc.lock holds one code entry per stage, not thirty.

    python tools/stage_deps.py           # exit 1 and the differences if a dvc.yaml is out of step
    python tools/stage_deps.py --print   # each command's code
    python tools/stage_deps.py --write   # rewrite the code lists of the dvc.yaml files in place
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ("pipeline.__main__", "pipeline.cli")
DVC_FILES = {ROOT / "dvc.yaml": "", ROOT / "examples" / "feynman" / "dvc.yaml": "../../"}  # file: path prefix
FINGERPRINTED = ("generate", "tune", "compare")
CODE = re.compile(r"^\s+- (\.\./\.\./)?pipeline/.*\.py\s*$")


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


def _code(stage: dict) -> list[str]:
    return [dep for dep in stage.get("do", stage).get("deps", []) if str(dep).endswith(".py")]


def differences(dvc_yaml: Path = ROOT / "dvc.yaml", prefix: str = "") -> dict[str, str]:
    """Per stage of one dvc.yaml, what is wrong with the code it says it runs."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    wrong = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()[3]
        if name == "validate" or name.startswith("code-"):
            kind = name.removeprefix("code-") if name.startswith("code-") else command
            expected = [prefix + path for path in code_deps(kind)]
            listed = sorted(_code(stage))
            in_cmd = sorted(part for part in body["cmd"].split() if part.endswith(".py"))
            if listed != expected or (name.startswith("code-") and in_cmd != expected):
                wrong[name] = f"should list (deps and, for code-, its command) {expected}; lists {listed}"
        elif _code(stage) or f"checks/code/{command}.md5" not in body.get("deps", []):
            wrong[name] = f"should depend on checks/code/{command}.md5 and on no code file directly"
    for kind in FINGERPRINTED:
        if f"code-{kind}" not in stages:
            wrong[f"code-{kind}"] = "missing"
    return wrong


def write(dvc_yaml: Path = ROOT / "dvc.yaml", prefix: str = "") -> None:
    """Rewrite the code lists of `validate` and the `code-` stages (their deps and commands)."""
    lines, out, stage, i = dvc_yaml.read_text().splitlines(keepends=True), [], None, 0
    while i < len(lines):
        line = lines[i]
        if match := re.match(r"^  ([\w-]+):\s*$", line):
            stage = match.group(1)
        kind = stage.removeprefix("code-") if stage and stage.startswith("code-") else "validate"
        if stage and (stage == "validate" or stage.startswith("code-")):
            paths = [prefix + path for path in code_deps(kind)]
            if line.strip().startswith("cmd: python -m pipeline fingerprint"):
                line = f"    cmd: python -m pipeline fingerprint --out checks/code/{kind}.md5 {' '.join(paths)}\n"
            elif CODE.match(line):
                indent = line[: len(line) - len(line.lstrip())]
                while i < len(lines) and CODE.match(lines[i]):
                    i += 1
                out += [f"{indent}- {path}\n" for path in paths]
                continue
        out.append(line)
        i += 1
    dvc_yaml.write_text("".join(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print each command's code")
    parser.add_argument("--write", action="store_true", help="rewrite the dvc.yaml files' code lists")
    args = parser.parse_args(argv)
    if args.print:
        for command in ("validate", *FINGERPRINTED):
            print(f"{command}:", *(f"  - {path}" for path in code_deps(command)), sep="\n")
        return 0
    failed = False
    for dvc_yaml, prefix in DVC_FILES.items():
        if not dvc_yaml.is_file():
            continue
        if args.write:
            write(dvc_yaml, prefix)
        for name, problem in differences(dvc_yaml, prefix).items():
            print(f"{dvc_yaml.relative_to(ROOT)} stage {name!r}: {problem}")
            failed = True
    if not failed:
        print("dvc.yaml: every stage says exactly the code it runs")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
