"""Loading the parameters: YAML files deep-merged in order, overrides, then validation (each
key while the dataclasses are built, then the cross-section rules)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reidpipe.bounded_yaml import read_yaml_file
from reidpipe.errors import ReidpipeError
from reidpipe.params.checks import check_consistency
from reidpipe.params.merge import apply_override, deep_merge, parse_override
from reidpipe.params.schema import Params
from reidpipe.params.validation import build_dataclass

DEFAULT_PARAMS_FILE = "params.yaml"


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a params file or a TAO spec (``what`` names which in errors),
    read with the bounded YAML loader."""
    data = read_yaml_file(path, what)
    if data is None:
        raise ReidpipeError(
            f"{what} {path} is empty (no keys, or only comments); expected "
            "a YAML mapping such as `train: {num_epochs: 10}`"
        )
    if not isinstance(data, dict):
        raise ReidpipeError(f"{what} {path} must hold a mapping at the top level")
    return data


def params_from_dict(data: Mapping[str, Any]) -> Params:
    params = build_dataclass(Params, data, "")
    check_consistency(params)
    return params


def merged_params_dict(
    files: Sequence[str | Path] = (DEFAULT_PARAMS_FILE,), overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The raw merged mapping of ``files`` (deep-merged in order) and ``--set`` overrides."""
    data: dict[str, Any] = {}
    for path in files:
        data = deep_merge(data, read_yaml_mapping(path, "params file"))
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
    return data


def load_params(
    files: Sequence[str | Path] = (DEFAULT_PARAMS_FILE,), overrides: Sequence[str] = ()
) -> Params:
    """Load, merge and validate; every problem is one ReidpipeError naming the key."""
    return params_from_dict(merged_params_dict(files, overrides))
