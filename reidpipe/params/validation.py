"""Generic validation of a YAML mapping against a dataclass: types from the annotations, ranges
from each field's metadata (``ge``/``le``/``gt``). Every problem is one ReidpipeError naming the key."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, Literal

from reidpipe.errors import ReidpipeError


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {
        int: "an integer",
        float: "a finite number",
        bool: "true or false",
        str: "a string",
    }.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    def bad() -> ReidpipeError:
        return ReidpipeError(f"params: {key} = {value!r} is invalid: expected {_describe(tp)}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad()
        return build_dataclass(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return value
        raise bad()
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        _, value_tp = typing.get_args(tp)
        if value_tp is Any:
            return dict(value)
        return {str(k): _convert(value_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        # YAML reads .inf and .nan as floats; no parameter means anything with them.
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise bad()


def _check_range(meta: Mapping[str, Any], value: Any, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = [
        ("ge", lambda v, b: v >= b, ">="),
        ("le", lambda v, b: v <= b, "<="),
        ("gt", lambda v, b: v > b, ">"),
    ]
    for name, ok, symbol in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ReidpipeError(
                f"params: {key} = {value!r} is out of range: expected {symbol} {bound}"
            )


def build_dataclass(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # A key the section used to have (``MOVED_KEYS``: old name -> new home) is named with its new
    # home, not reported as unknown.
    moved = [k for k in data if k in getattr(cls, "MOVED_KEYS", {})]
    if moved:
        where = f"{prefix}.{moved[0]}" if prefix else str(moved[0])
        raise ReidpipeError(
            f"params: key {where!r} has moved to "
            f"{cls.MOVED_KEYS[moved[0]]!r}; move its entries there"
        )
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ReidpipeError(
            f"params: unknown key {where!r}; allowed under {prefix or 'the top level'}: "
            f"{', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key)
        _check_range(fields[name].metadata, kwargs[name], key)
    return cls(**kwargs)
