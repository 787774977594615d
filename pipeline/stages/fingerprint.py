"""`python -m pipeline fingerprint --out FILE CODE...`: one hash for the code a stage runs.

A `code-<stage>` stage of dvc.yaml depends on the files its stage runs and writes their combined
MD5; the stage depends on that one file. A hundred `tune@<dataset>` stages then carry one code
dependency each in dvc.lock instead of thirty, which keeps `dvc status` fast at table size, and
they still rerun exactly when their code changes (`tools/stage_deps.py` keeps the lists right).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

NEEDS_PARAMS = False


def fingerprint(files: list[Path]) -> str:
    digest = hashlib.md5()
    for path in sorted(files, key=lambda p: p.as_posix()):
        digest.update(path.as_posix().encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="file to write the hash to")
    parser.add_argument("files", type=Path, nargs="+", help="the code files the stage runs")


def main(args: argparse.Namespace, params: None) -> None:
    text = f"{fingerprint(args.files)}  {len(args.files)} files\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.is_file() or args.out.read_text() != text:  # unchanged: not even its mtime moves
        args.out.write_text(text)
