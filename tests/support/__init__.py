"""What the tests share: the repository root, data builders, repository copies, fakes."""

from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    """Write each relative path of ``files`` under ``root`` with its text (a throwaway package)."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``base`` with ``override``'s values, nested mappings merged key by key (a params overlay)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
