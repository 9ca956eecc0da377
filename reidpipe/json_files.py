"""Reading the JSON files stages write (parity, TensorRT status, metrics, manifests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidpipe.errors import ReidpipeError


def read_json_file(path: str | Path, when_missing: str = "") -> Any:
    """The parsed content of the JSON file ``path``; a missing, unreadable or malformed file is
    one ReidpipeError naming it. ``when_missing`` is added to the message of a missing file
    (what to run to make it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReidpipeError(f"{path} does not exist{when_missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{path} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReidpipeError(f"{path} is not valid JSON: {exc}") from None
