"""Fixtures shared by several test modules. Tests are grouped by phase: tests/unit/<package>
(one folder per layer of the package), tests/e2e (real Snakemake, DVC and Slurm runs, marked
``slow``: ``pytest -m "not slow"`` leaves them out); what tests share lives in tests/support."""

import logging
import sys
from pathlib import Path

import pytest

from reidpipe.data.split import make_split
from reidpipe.data.synth import SynthSummary, generate_synthetic_market
from reidpipe.data.synth_layouts import generate_synthetic
from reidpipe.dataset_registry import SYNTH_LAYOUTS

# Tests under tests/e2e run the whole pipeline (Snakemake, DVC, Slurm): marked slow
E2E_DIR = Path(__file__).resolve().parent / "e2e"


@pytest.fixture(scope="session")
def splits(tmp_path_factory) -> Path:
    """Real synthetic Market images (19 query, 108 gallery) and their split manifests."""
    root = tmp_path_factory.mktemp("market")
    generate_synthetic_market(root / "data", num_ids=8, seed=0, workers=1)
    make_split(root / "data", root / "splits", val_ids=0, seed=0)
    return root / "splits"


@pytest.fixture(scope="session")
def synthetic_layouts(tmp_path_factory) -> dict[str, tuple[Path, SynthSummary]]:
    """One small synthetic dataset (8 ids, the same people) in each dataset layout."""
    root = tmp_path_factory.mktemp("layouts")
    return {
        layout: (root / layout, generate_synthetic(root / layout, layout, 8, 3, workers=1))
        for layout in SYNTH_LAYOUTS
    }


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Tests, and the training they run in-process (``train.num_threads``), may set torch's
    thread count: restore it after each, so that no test runs on what an earlier one chose."""
    torch = sys.modules.get("torch")  # as the test modules imported it (not imported here)
    saved = torch.get_num_threads() if torch is not None else None
    yield
    if saved is not None and torch.get_num_threads() != saved:
        torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def reidpipe_logger():
    """`reidpipe.cli.main` routes the reidpipe loggers to the stderr of its time and stops their
    propagation: undo that after each test, so that later tests' caplog and capsys see them."""
    logger = logging.getLogger("reidpipe")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that fork the test process (``tests/support/forked.py``) run first: once a process has
    started autograd's device threads (``torch.export``, which ONNX export runs, does), torch
    refuses autograd in its forked children, so a fork after an in-process export would fail for
    a reason that has nothing to do with the test. Under xdist the files keep this order only with
    ``--no-loadscope-reorder`` (the Makefile's ``make test``)."""
    items.sort(key=lambda item: not hasattr(item.module, "run_forked"))
    for item in items:  # tests/e2e: real Snakemake, DVC and Slurm runs of the pipeline
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.slow)
