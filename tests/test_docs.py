"""Every command the README and the docs show is checked against what it calls.

Running them all would start servers and retrain for minutes, so each command is parsed by the
tool's own parser (DVC's, MLflow's click group, Prefect's typer app, our argparse parsers), every
`dvc exp run -S key=value` names a key that params.yaml has (DVC refuses a new key without `+`),
and every program named is installed. The `-S models.cross.degree=3` example and the report's
advice are run for real in tests/test_pipeline_dvc.py.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*/README.md"))]
# Programs of the operating system or of a database server, documented for a set-up elsewhere.
SYSTEM = {"sudo", "psql", "cat", "cd", "export", ".", "python3", "apt-get", "read"}  # read: a shell builtin


def commands(page: Path) -> list[tuple[Path, list[str]]]:
    """(the folder it runs in, argv) of each command in the page's shell blocks."""
    found, here = [], ROOT  # a page's commands start in the repo's root; a `cd` holds for what follows
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").replace("<run id>", "0" * 32).splitlines():
            for argv in split_line(line):
                if argv[0] == "cd":
                    here = (here / argv[1]).resolve()
                found.append((here, argv))
    return found


def split_line(line: str) -> list[list[str]]:
    """The commands of one shell line: split at `&&`, `;`, `&` outside quotes, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argvs: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "&", "||"):
            argvs.append([])
        else:
            argvs[-1].append(token)
    return [argv for argv in argvs if argv]


ALL = [(page, here, argv) for page in PAGES for here, argv in commands(page)]


def test_the_pages_show_commands_at_all():
    assert len(ALL) >= 40
    assert any(argv[:3] == ["dvc", "exp", "run"] and "models.cross.degree=3" in argv for _, _, argv in ALL)


def _key_exists(params: dict, key: str) -> bool:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_dvc(here: Path, argv: list[str]) -> None:
    from dvc.cli import parse_args

    parse_args(argv[1:])  # exits 2 (SystemExit) on an unknown command or option
    if argv[1:3] == ["exp", "run"]:
        params = yaml.safe_load((here / "params.yaml").read_text())
        sets = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("-S", "--set-param")]
        for setting in sets:
            key, value = setting.split("=", 1)
            assert _key_exists(params, key), f"{here / 'params.yaml'} has no key {key!r}: `-S {setting}` fails"
            yaml.safe_load(value)


def check_python(here: Path, argv: list[str]) -> None:
    if argv[1] == "-c":
        ast.parse(argv[2])
        return
    if argv[1].endswith(".py"):  # a script of the repo: it exists, and its parser takes the arguments
        import subprocess

        assert (here / argv[1]).is_file(), f"no script {argv[1]}"
        done = subprocess.run([sys.executable, argv[1], *argv[2:], "--help"], cwd=here, capture_output=True)
        assert done.returncode == 0, done.stderr
        return
    assert argv[1] == "-m", argv
    module, rest = argv[2], argv[3:]
    if module == "pipeline":
        from pipeline.cli import _command_in, build_parser

        build_parser(_command_in(rest)).parse_args(rest)
    elif module == "flows.experiment":
        from flows.experiment import build_parser

        build_parser().parse_args(rest)
    else:
        import importlib.util

        assert importlib.util.find_spec(module) is not None, f"no module {module}"


def check_click(group, argv: list[str]) -> None:
    """Resolve the subcommands down to the last one and parse its options."""
    import click

    ctx = group.make_context(argv[0], argv[1:], resilient_parsing=False)
    command, rest = group, ctx.protected_args + ctx.args
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = ctx.protected_args + ctx.args if isinstance(command, click.Group) else []


def check_pytest(argv: list[str]) -> None:
    markers = {m.split(":")[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
               ["ini_options"]["markers"]}  # fmt: skip
    for i, arg in enumerate(argv):
        if arg == "-m":
            words = set(re.findall(r"\w+", argv[i + 1])) - {"not", "and", "or"}
            assert words <= markers, f"unregistered markers {words - markers}"


def check_pip(argv: list[str]) -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for arg in argv:
        if arg.startswith(".["):
            wanted = set(arg[2:-1].split(","))
            assert wanted <= extras, f"no extras {wanted - extras} in pyproject.toml"


@pytest.mark.parametrize(("page", "here", "argv"), ALL, ids=[f"{p.name}:{' '.join(a)[:60]}" for p, _, a in ALL])
def test_each_documented_command_parses_and_names_what_exists(page, here, argv):
    program = argv[0]
    if program in SYSTEM or "=" in program:
        return
    if program == "dvc":
        check_dvc(here, argv)
    elif program == "python":
        check_python(here, argv)
    elif program == "mlflow":
        from mlflow.cli import cli

        check_click(cli, argv)
    elif program == "prefect":
        # Prefect 3.9's CLI is a cyclopts App; its parser is reachable only as `_app` (prefect is
        # pinned, see test_private_apis.py). parse_args raises on an unknown command or option.
        from prefect.cli._app import _app

        _app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    elif program == "pytest":
        check_pytest(argv)
    elif program == "pip":
        check_pip(argv)
    else:
        venv_bin = Path(sys.executable).parent
        assert (venv_bin / program).exists() or shutil.which(program), f"{page.name}: `{program}` is not installed"


# --- the params.yaml reference names every key the config accepts, and no other --------------------

REFERENCE = ROOT / "docs" / "configuration.md"


def config_keys(model: type, prefix: str = "") -> set[str]:
    """Every key path `Params` accepts, a dict's keys written `<...>` (`datasets.<name>.seed`)."""
    import types
    import typing

    from pydantic import BaseModel

    placeholders = {"datasets": "<name>", "variables": "<variable>", "tuning": "<family>"}
    keys = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kinds = [field.annotation]
        while any(typing.get_origin(k) in (typing.Union, types.UnionType, typing.Annotated) for k in kinds):
            kinds = [a for k in kinds for a in (typing.get_args(k) or (k,))]
        models = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel) and k.model_fields]
        values = [typing.get_args(k)[1] for k in kinds if typing.get_origin(k) is dict]
        values = [v for v in values if isinstance(v, type) and issubclass(v, BaseModel)]
        if models:
            keys |= config_keys(models[0], path + ".")
        elif values:
            keys |= config_keys(values[0], f"{path}.{placeholders[name]}.")
        else:
            keys.add(path)
    return keys


def documented_keys(text: str) -> dict[str, str]:
    """{key path: the text that documents it}: each section heading's first `key` is its prefix; a
    table row's first cell names keys under it (or whole paths starting with it)."""
    keys, prefix = {}, ""
    for line in text.splitlines():
        if line.startswith("##"):  # sections; the page's title names the file
            found = re.findall(r"`([^`]+)`", line)
            prefix = found[0] if found else ""
            if prefix:
                keys[prefix] = line
        elif line.startswith("| `") and prefix:
            first = line.split("|")[1]
            for key in re.findall(r"`([^`]+)`", first):
                keys[key if key.startswith(prefix.split(".")[0] + ".") else f"{prefix}.{key}"] = line
    return keys


def covered(key: str, documented: dict[str, str]) -> bool:
    """A key is documented by its own row, or by a row of a key above it that names each part below
    (`space.lr` | `{low, high, log}` documents `space.lr.low`)."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        above = ".".join(parts[:cut])
        if above in documented and all(re.search(rf"\b{p}\b", documented[above]) for p in parts[cut:]):
            return True
    return False


def test_the_params_reference_names_every_key_and_no_other():
    from pipeline.config import Params

    accepted = config_keys(Params)
    documented = documented_keys(REFERENCE.read_text())
    assert {"datasets.<name>.variables.<variable>.dist", "tuning.<family>.space.lr.low"} <= accepted
    missing = sorted(k for k in accepted if not covered(k, documented))
    assert not missing, f"{REFERENCE.name} does not document {missing}"
    # A documented key the config does not take is stale (a section's own heading aside).
    stale = sorted(k for k in documented if k not in accepted and not any(a.startswith(k + ".") for a in accepted))
    assert not stale, f"{REFERENCE.name} documents keys params.yaml cannot have: {stale}"


def test_the_reference_check_catches_an_undocumented_key():
    text = REFERENCE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `noise_relative`"))
    documented = documented_keys(text.replace(row + "\n", ""))
    assert not covered("datasets.<name>.noise_relative", documented)
    assert covered("datasets.<name>.noise", documented)
    assert covered("tuning.<family>.space.lr.log", documented)
    assert not covered("tuning.<family>.space.lr.base", documented)
