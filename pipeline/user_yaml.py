"""YAML that people write (params.yaml), read strictly.

PyYAML keeps the last of two equal keys in a mapping, silently: a dataset block copied and not
renamed would replace the first, and its tunings would never run. DVC's own reader (ruamel.yaml)
refuses such a file, so `dvc repro` stops; the commands and flows that read params.yaml without
DVC refuse it too, naming the key and both lines. A key may still override one merged in from an
anchor (`<<: *base`), as YAML intends.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

MERGE = "tag:yaml.org,2002:merge"


class _UniqueKeys(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE:
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses it below, in its own words
            if key in lines:
                where = f"line {line}" if line == lines[key] else f"lines {lines[key]} and {line}"
                raise yaml.constructor.ConstructorError(
                    problem=f"the key {key!r} is twice in one mapping ({where}): YAML would keep only the "
                    "second; rename or remove one"
                )
            lines[key] = line
        return super().construct_mapping(node, deep)


def load(path: Path) -> Any:
    """The file's content, as `yaml.safe_load` reads it, unless a mapping holds a key twice
    (yaml.YAMLError). Messages name the file."""
    with path.open() as stream:
        return yaml.load(stream, Loader=_UniqueKeys)  # a SafeLoader: plain data only
