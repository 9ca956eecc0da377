"""Provenance: what an output was built from, carried beside the output.

A stage run by a workflow tool gets ``--provenance FILE`` (``<its first output>.provenance.json``,
a declared output in both tools). Once the stage has succeeded, ``reidpipe`` writes there the
canonical values of the params the stage tracks, the sha256 of each of its code files and the
fingerprint of both; a failed run leaves none. The stage table (``reidpipe.stages``) computes the
same record from params and code for Snakemake, DVC and the stage itself, so the tools compare
like with like: Snakemake rebuilds outputs whose provenance differs from the one the current
params and code give, whichever tool wrote them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from reidpipe import atomic


def canonical_json(value: Any) -> str:
    """JSON with sorted keys: equal values give equal text, whatever order they were merged in."""
    return json.dumps(value, sort_keys=True)


@cache
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_digests(files: list[str], root: Path) -> dict[str, str]:
    """Each file (relative to ``root``) -> the sha256 of its content."""
    digests = {}
    for name in files:
        stat = (root / name).stat()
        digests[name] = _file_sha256(str(root / name), stat.st_mtime_ns, stat.st_size)
    return digests


@dataclass(frozen=True)
class Provenance:
    """One job's record: its stage, wildcards, tracked params values and code digests."""

    stage: str
    wildcards: Mapping[str, str]
    params: Mapping[str, Any]
    code: Mapping[str, str]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(
            canonical_json({"params": self.params, "code": self.code}).encode()
        ).hexdigest()

    def write(self, path: str | Path) -> None:
        atomic.write_text(
            path,
            json.dumps(
                {
                    "fingerprint": self.fingerprint,
                    "stage": self.stage,
                    "wildcards": dict(self.wildcards),
                    "params": self.params,
                    "code": self.code,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
        )


def read(path: str | Path) -> dict[str, Any] | None:
    """The record at ``path``; None when there is none or it is not one (then it proves nothing)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return (
        record if isinstance(record, dict) and isinstance(record.get("fingerprint"), str) else None
    )


def differences(recorded: Mapping[str, Any] | None, expected: Provenance) -> list[str]:
    """What differs between a recorded provenance and the expected one: dotted params keys and
    code files, or why the record proves nothing."""
    if recorded is None:
        return ["no provenance recorded"]
    found = _differing_keys(recorded.get("params"), expected.params, "")
    code = recorded.get("code") if isinstance(recorded.get("code"), dict) else {}
    found += [
        f"code {name}"
        for name in sorted(set(code) | set(expected.code))
        if code.get(name) != expected.code.get(name)
    ]
    return found or ["fingerprint"]


def _differing_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            key
            for name in sorted(set(old) | set(new))
            for key in _differing_keys(old.get(name), new.get(name), f"{prefix}{name}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]
