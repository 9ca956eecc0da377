"""The field every parameter is declared with: a default, an allowed range and a description.

The generic validator (``reidpipe/params/validation.py``) reads the range from the metadata, and
the generated JSON schema carries both range and description."""

from __future__ import annotations

import copy
from dataclasses import field
from typing import Any


def setting(
    default: Any,
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with a range and a description (the description goes into the schema)."""
    meta = {"ge": ge, "le": le, "gt": gt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)
