"""What the bad-input tests share: a tiny dataset with its split manifests, params and a minimal
ONNX model (``make_work``), copies of the dataset with one file replaced, and a snapshot of a
folder to show that a failed command left it as it was."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import onnx
import yaml
from onnx import TensorProto, helper
from PIL import Image

from reidpipe import market
from reidpipe.data.split import make_split
from support import ROOT
from support.market_fixtures import make_tiny_market
from support.tiny_run import tiny_params

PARAMS = tiny_params(dataset={"num_workers": 1}, train={"num_epochs": 1, "max_steps_per_epoch": 2})
QUERY = market.format_name(7, 1, 1, 10, 1)  # the tiny dataset's first query image


def onnx_model(path: Path, dtype: int, shape: list) -> Path:
    """A minimal image-to-vector graph (global average pool) with the given input."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "ReduceMean", ["images"], ["out"], axes=list(range(2, len(shape))), keepdims=0
            )
        ],
        "pool",
        [helper.make_tensor_value_info("images", dtype, shape)],
        [helper.make_tensor_value_info("out", dtype, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def make_work(root: Path) -> Path:
    """``root`` with market/ (the tiny dataset), splits/, tiny.yaml and good.onnx."""
    make_tiny_market(root / "market")
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(PARAMS))
    onnx_model(root / "good.onnx", TensorProto.FLOAT, ["N", 3, 32, 16])
    return root


def params(work: Path) -> list[str]:
    return ["--params", str(ROOT / "params.yaml"), str(work / "tiny.yaml")]


def dataset_with(
    work: Path, case: Path, name: str, write: Callable[[Path], None], split: str = "query"
) -> Path:
    """A copy (hard links) of the tiny dataset with the file ``name`` of ``split`` replaced by
    what ``write`` puts there."""
    data = case / "market"
    for folder in market.SPLIT_DIRS.values():
        (data / folder).mkdir(parents=True)
        for path in (work / "market" / folder).iterdir():
            os.link(path, data / folder / path.name)
    target = data / market.SPLIT_DIRS[split] / name
    target.unlink(missing_ok=True)
    write(target)
    return data


def text_file(path: Path) -> None:
    path.write_text("this is not an image\n")


def png_file(path: Path) -> None:
    Image.new("RGB", (64, 128)).save(path, format="PNG")


def tree(folder: Path) -> dict[str, object]:
    """Every entry below ``folder`` with its content (links by target, not followed; FIFOs,
    sockets and devices by kind, never opened)."""
    found: dict[str, object] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            elif path.is_file():
                found[key] = path.read_bytes()
            else:
                found[key] = ("special", path.stat().st_mode)
    return found
