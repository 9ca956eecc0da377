"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest

from reidpipe.data.split import make_split
from reidpipe.data.synth import generate_synthetic_market


@pytest.fixture(scope="session")
def splits(tmp_path_factory) -> Path:
    """Real synthetic Market images (19 query, 108 gallery) and their split manifests."""
    root = tmp_path_factory.mktemp("market")
    generate_synthetic_market(root / "data", num_ids=8, seed=0, workers=1)
    make_split(root / "data", root / "splits", val_ids=0, seed=0)
    return root / "splits"
