"""The one YAML loader for every YAML file reidpipe reads (params files, ``--set`` values, TAO
specs, a trained model's config.yaml): PyYAML's safe loader with bounds on what a document may
expand to.

An anchor can be aliased many times and each alias can hold further aliases, so 540 bytes
(``&a [*b, *b, …]`` nested nine deep) describe hundreds of millions of values: a "billion
laughs" bomb. PyYAML builds it as shared objects in a blink, but the first code that walks the
tree (merging, copying, validating, printing) runs for minutes and gigabytes. The loader counts,
while composing and before any object is built, the values each node stands for once its
aliases are expanded, and refuses a document over :data:`MAX_VALUES`, nested deeper than
:data:`MAX_DEPTH` (which would overflow the composer's recursion) or holding an alias to a node
that contains it (a loop no walk ends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from reidpipe.errors import ReidpipeError

MAX_VALUES = 100_000  # the default params.yaml has about 350
MAX_DEPTH = 100


class YamlTooLarge(yaml.YAMLError):
    """A document over the loader's bounds; the message says which and where."""


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents over :data:`MAX_VALUES` expanded values or
    :data:`MAX_DEPTH` levels, and aliases to a node still being composed (recursive ones)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        mark = self.peek_event().start_mark
        if self.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:
                raise YamlTooLarge(
                    f"line {mark.line + 1}: an alias refers to the node that "
                    "contains it (a recursive structure)"
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlTooLarge(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        size = 1 + sum(self._expanded[id(child)] for child in children)
        if size > MAX_VALUES:
            raise YamlTooLarge(
                f"line {mark.line + 1}: more than {MAX_VALUES:,} values once its "
                'aliases are expanded (a "billion laughs" bomb?); refusing it'
            )
        self._expanded[id(node)] = size
        return node


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` within the bounds (:class:`YamlTooLarge` beyond them)."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The parsed content of the file ``path``; every problem is one ReidpipeError
    that starts with ``what`` (e.g. "params file") and the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")  # a pipe is fine: `--params <(...)`
    except FileNotFoundError:
        raise ReidpipeError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{what} {path} cannot be read: {exc}") from None
    try:
        return safe_load(text)
    except YamlTooLarge as exc:
        raise ReidpipeError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ReidpipeError(f"{what} {path} is not valid YAML: {exc}") from None
