"""Merging parameter mappings: files deep-merged in order, then ``--set key.path=value`` overrides."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from reidpipe import bounded_yaml
from reidpipe.errors import ReidpipeError


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; mappings merge, the rest replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ReidpipeError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ReidpipeError(f"--set {text!r}: {key!r} is not a dotted key path")
    try:
        value = bounded_yaml.safe_load(raw) if raw.strip() else ""
    except bounded_yaml.YamlTooLarge as exc:
        raise ReidpipeError(f"--set {key.strip()}: the value {exc}") from None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ReidpipeError(f"--set {'.'.join(parts)}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value
