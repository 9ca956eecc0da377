"""Every file a command reads or writes gets one clear line when it is wrong (issue 13).

One row per bad input: the command line, the exit code, a fragment of the message, and whether
the case folder (the bad input and the output path) must be left exactly as it was. And a stage
stopped mid-write leaves nothing under its output's name."""

from __future__ import annotations

import re
import shutil
import signal
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Imported at collection: Lightning gives its loggers a stream handler on the stderr of its
# import time, which must not be one test's captured (then closed) stream.
import lightning.pytorch  # noqa: F401
import numpy as np
import pytest
import torch
import yaml
from onnx import TensorProto
from PIL import Image
from support.bad_inputs import (
    QUERY,
    ROOT,
    dataset_with,
    make_work,
    onnx_model,
    params,
    png_file,
    text_file,
    tree,
)
from support.forked import kill_self, run_forked
from support.market_fixtures import write_jpeg

from reidpipe import market
from reidpipe.cli import main
from reidpipe.data.split import make_split


def truncated_jpeg(path: Path) -> None:
    write_jpeg(path, seed=1)
    path.write_bytes(path.read_bytes()[:600])


def bomb_jpeg(path: Path) -> None:
    # 400 million pixels (~1 MB on disk): more than twice Pillow's limit, which it refuses.
    Image.new("L", (20000, 20000)).save(path, quality=1)


def symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_work(tmp_path_factory.mktemp("bad-inputs"))


@dataclass
class Case:
    id: str
    argv: Callable[[Path, Path], list[str]]  # (work, case folder) -> command line
    fragment: str
    code: int = 2
    unchanged: bool = True


def extract(
    source: list[str], images: list[str] | None = None, out: str = "{case}/emb"
) -> Callable[[Path, Path], list[str]]:
    def argv(work: Path, case: Path) -> list[str]:
        args = ["--out", out, *source, *(images or ["--splits", "{work}/splits"])]
        return [
            "extract",
            *params(work),
            "--arch",
            "tiny",
            "--device",
            "cpu",
            *(a.format(work=work, case=case) for a in args),
        ]

    return argv


def write(path: Path, content: bytes | str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def params_case(content: bytes | str | None, *extra: str) -> Callable[[Path, Path], list[str]]:
    def argv(work: Path, case: Path) -> list[str]:
        if content is False:
            return ["params", "--params", str(case / "missing.yaml"), *extra]
        bad = write(case / "bad.yaml", content)
        return [
            "params",
            "--params",
            str(ROOT / "params.yaml"),
            str(work / "tiny.yaml"),
            str(bad),
            *extra,
        ]

    return argv


def model_dir(content) -> Callable[[Path, Path], list[str]]:
    def argv(work: Path, case: Path) -> list[str]:
        folder = case / "model"
        folder.mkdir()
        if callable(content):
            content(folder / "model.pt")
        else:
            write(folder / "model.pt", content)
        return extract(["--model", str(folder)])(work, case)

    return argv


def onnx_case(content) -> Callable[[Path, Path], list[str]]:
    def argv(work: Path, case: Path) -> list[str]:
        path = case / "model.onnx"
        if callable(content):
            content(path)
        elif content is not False:
            write(path, content)
        return extract(["--onnx", str(path)])(work, case)

    return argv


def dataset_case(name: str, writer: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    def argv(work: Path, case: Path) -> list[str]:
        data = dataset_with(work, case, name, writer)
        return extract(["--onnx", str(work / "good.onnx")], ["--dataset", str(data)])(work, case)

    return argv


def out_case(kind: str) -> Callable[[Path, Path], list[str]]:
    """extract --out (a folder) or evaluate --out (a file) naming the wrong kind of thing."""

    def argv(work: Path, case: Path) -> list[str]:
        good = ["--onnx", str(work / "good.onnx")]
        if kind == "extract into a file":
            write(case / "emb", "a file where the embeddings folder should go\n")
            return extract(good)(work, case)
        if kind == "extract below a file":
            write(case / "file", "a file\n")
            return extract(good, out="{case}/file/emb")(work, case)
        embeddings = work / "embeddings"
        if not embeddings.exists():
            assert main(extract(good, out=str(embeddings))(work, case)) == 0
        target = (
            write(case / "metrics.json", None)
            if kind == "evaluate into a folder"
            else write(case / "file", "a file\n") / "metrics.json"
        )
        return [
            "evaluate",
            *params(work),
            "--embeddings",
            str(embeddings),
            "--device",
            "cpu",
            "--out",
            str(target),
        ]

    return argv


def train_case(write_input: Callable[[Path, Path], list[str]]) -> Callable[[Path, Path], list[str]]:
    """``reidpipe train`` with the extra arguments ``write_input(work, case)`` returns."""

    def argv(work: Path, case: Path) -> list[str]:
        extra = write_input(work, case)
        return ["train", *params(work), "--arch", "tiny", "--out", str(case / "model"), *extra]

    return argv


def garbage_weights(work: Path, case: Path) -> list[str]:
    write(case / "weights.safetensors", bytes(range(256)) * 2)
    return [
        "--splits",
        str(work / "splits"),
        "--set",
        "model.pretrain_choice=self",
        "--set",
        f"model.pretrained_model_path={case / 'weights.safetensors'}",
    ]


def garbage_manifest(work: Path, case: Path) -> list[str]:
    shutil.copytree(work / "splits", case / "splits")
    (case / "splits" / "train.csv").write_bytes(bytes(range(256)))
    return ["--splits", str(case / "splits")]


def torch_file(obj) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


CASES = [
    Case("params missing", params_case(False), "does not exist"),
    Case("params empty", params_case(""), "is empty"),
    Case("params a directory", params_case(None), "Is a directory"),
    Case("params garbage bytes", params_case(bytes(range(256))), "cannot be read"),
    Case("params a list", params_case("- 1\n- 2\n"), "must hold a mapping"),
    Case(
        "params infinite lr",
        params_case("train:\n  optim:\n    base_lr: .inf\n"),
        "train.optim.base_lr = inf is invalid: expected a finite number",
    ),
    Case(
        "params NaN via --set",
        params_case("{}\n", "--set", "dataset.prob=.nan"),
        "dataset.prob = nan is invalid: expected a finite number",
    ),
    Case("onnx missing", onnx_case(False), "does not exist"),
    Case("onnx empty", onnx_case(b""), "is empty"),
    Case("onnx a directory", onnx_case(None), "is a directory"),
    Case("onnx a text file", onnx_case("not a model\n"), "is not an ONNX model"),
    Case("onnx garbage", onnx_case(bytes(range(256)) * 4), "is not an ONNX model"),
    Case(
        "onnx double input",
        onnx_case(lambda p: onnx_model(p, TensorProto.DOUBLE, ["N", 3, 32, 16])),
        "takes tensor(double)",
    ),
    Case(
        "onnx 4-channel input",
        onnx_case(lambda p: onnx_model(p, TensorProto.FLOAT, ["N", 4, 32, 16])),
        "axis 1 is 4, not 3",
    ),
    Case(
        "onnx other input size",
        onnx_case(lambda p: onnx_model(p, TensorProto.FLOAT, ["N", 3, 64, 16])),
        "axis 2 is 64, not 32",
    ),
    Case(
        "onnx 3-d input",
        onnx_case(lambda p: onnx_model(p, TensorProto.FLOAT, ["N", 3, 32])),
        "one N x C x H x W input",
    ),
    Case("model folder missing", extract(["--model", "{case}/nothing"]), "does not exist"),
    Case("model.pt empty", model_dir(b""), "is empty"),
    Case("model.pt garbage", model_dir(bytes(range(256)) * 4), "is not a reidpipe trained model"),
    Case("model.pt a directory", model_dir(None), "is a directory"),
    Case(
        "model.pt other weights",
        model_dir(torch_file({"weight": torch.zeros(3)})),
        "is not a reidpipe trained model",
    ),
    Case("pretrained weights garbage", train_case(garbage_weights), "not a safetensors file"),
    Case("train manifest garbage", train_case(garbage_manifest), "is not a readable CSV"),
    Case("image a text file", dataset_case(QUERY, text_file), "is a text file, not an image"),
    Case("image PNG under .jpg", dataset_case(QUERY, png_file), "PNG data under a JPEG name"),
    Case("image truncated", dataset_case(QUERY, truncated_jpeg), "is truncated or corrupt"),
    Case("image decompression bomb", dataset_case(QUERY, bomb_jpeg), "decompression bomb"),
    Case("image symlink loop", dataset_case(QUERY, symlink_loop), "symbolic link loop"),
    Case("extract --out a file", out_case("extract into a file"), "is not a directory"),
    Case("extract --out below a file", out_case("extract below a file"), "cannot write"),
    Case("evaluate --out a directory", out_case("evaluate into a folder"), "is a directory"),
    Case("evaluate --out below a file", out_case("evaluate below a file"), "cannot write"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case: Case, work: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.argv(work, folder)
    before = tree(folder)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"reidpipe {argv[0]}: error: "), err
    assert case.fragment in last, err
    if case.unchanged:
        assert tree(folder) == before, "a failed command changed its output folder"


def test_unreadable_image_met_in_training_is_one_line(work: Path, tmp_path: Path, capsys) -> None:
    """An image broken after validation, met by a DataLoader worker process: one line, not the
    worker's traceback."""
    data = dataset_with(work, tmp_path, QUERY, lambda p: write_jpeg(p, seed=1))
    make_split(data, tmp_path / "splits", val_ids=0, seed=0)
    for path in (data / market.SPLIT_DIRS["train"]).iterdir():
        path.unlink()  # a hard link: replace it, do not write through it
        path.write_text("overwritten by a text editor\n")
    code = main(
        [
            "train",
            *params(work),
            "--arch",
            "tiny",
            "--splits",
            str(tmp_path / "splits"),
            "--out",
            str(tmp_path / "model"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "worker" not in err
    assert re.fullmatch(
        r"reidpipe train: error: image \S+\.jpg is a text file, not an image "
        r"\(it starts with 'overwritten by a text editor'\)",
        err.strip().splitlines()[-1],
    ), err
    assert not (tmp_path / "model" / "train_log.csv").exists()


def test_duplicate_zip_entry_is_named(work: Path, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((work / "market").rglob("*.jpg")):
            zf.write(path, f"Market-1501-v15.09.15/{path.relative_to(work / 'market')}")
        zf.writestr(f"Market-1501-v15.09.15/query/{QUERY}", b"a second copy")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"data": {"allow_unknown_checksum": True}}))
    code = main(
        [
            "download",
            "--params",
            str(ROOT / "params.yaml"),
            str(tmp_path / "p.yaml"),
            "--archive",
            str(archive),
            "--out",
            str(tmp_path / "data"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("reidpipe download: error: ")
    assert f"Market-1501-v15.09.15/query/{QUERY}" in err and "twice" in err
    assert not (tmp_path / "data").exists()


def test_validate_names_a_text_file_and_a_symlink_loop(work: Path, tmp_path: Path, capsys) -> None:
    data = dataset_with(work, tmp_path, QUERY, text_file)
    symlink_loop(data / market.SPLIT_DIRS["gallery"] / market.format_name(9, 2, 1, 99, 1))
    code = main(
        [
            "validate",
            str(data),
            "--report",
            str(tmp_path / "report.json"),
            "--no-strict",
            *params(work),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data / 'query' / QUERY}: is a text file, not an image" in err
    assert "symbolic link loop" in err
    assert "BytesIO" not in err


@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"]
)
def test_a_stage_stopped_mid_write_leaves_no_output(signum, work: Path, tmp_path: Path) -> None:
    """extract stopped after writing part of its folder: nothing under the output name; a signal
    also clears the temporary (a kill leaves it to the next run, which removes it)."""
    argv = extract(["--onnx", str(work / "good.onnx")])(work, tmp_path)

    def child() -> int:
        original = np.save

        def save(*args, **kwargs):
            original(*args, **kwargs)
            kill_self(signum)

        np.save = save
        return main(argv)

    code = run_forked(child, tmp_path / "stderr.txt")
    err = (tmp_path / "stderr.txt").read_text()
    assert code == (-signum if signum == signal.SIGKILL else 128 + signum), err
    assert not (tmp_path / "emb").exists()
    if signum != signal.SIGKILL:
        assert (
            err.strip().splitlines()[-1]
            == f"reidpipe extract: interrupted by {signal.Signals(signum).name}"
        )
        assert [p.name for p in tmp_path.iterdir()] == ["stderr.txt"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "stderr.txt"]
