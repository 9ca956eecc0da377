"""Nothing lost, nothing hung: hostile files are refused in one line (issue 25).

One test per kind of hostile input: embeddings that are not what their header or name claims
(and embeddings that say nothing: collapsed), YAML that expands without bound, FIFOs, sockets
and devices named like images or embeddings, a signal while a read is stuck, and images
`split` would have put in a manifest unchecked. Each asserts the message, the exit code, a time
bound, what is on disk afterwards, and that a rerun on the fixed input succeeds.

Where a regression would hang (a FIFO), the command runs as a real subprocess with a timeout, so
the test fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.bad_inputs import QUERY, ROOT, dataset_with, make_work, params, png_file, tree
from support.evaluate_run import evaluate_argv
from support.market_fixtures import write_jpeg

from reidpipe import market
from reidpipe.cli import main
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import Embeddings, EmbeddingSet, write_embeddings
from reidpipe.interrupt import Interrupted, signals_interrupt
from reidpipe.report.readers import load_arch, read_metrics

LIMIT_S = 20.0  # generous: every refusal here takes well under a second of work
NPY_HEADER_LEN = 128  # np.save pads the magic and header of a small array to 128 bytes


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_work(tmp_path_factory.mktemp("hostile"))


def timed_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """``reidpipe ARGV`` in this process: exit code, stderr, seconds."""
    capsys.readouterr()
    start = time.monotonic()
    code = main(argv)
    return code, capsys.readouterr().err, time.monotonic() - start


def run_cli(argv: list[str]) -> tuple[int, str, float]:
    """``reidpipe ARGV`` as a real process (a hang fails the test after 60 s): exit code,
    stderr, seconds."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "reidpipe", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    return done.returncode, done.stderr, time.monotonic() - start


def assert_one_line_error(code: int, err: str, seconds: float, stage: str, fragment: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"reidpipe {stage}: error: "), err
    assert fragment in last, err
    assert seconds < LIMIT_S, f"took {seconds:.1f} s"


# ------------------------------------------------------------------------------- embeddings


def embedding_set(
    prefix: str, pids: list[int], cams: list[int], features: np.ndarray
) -> EmbeddingSet:
    meta = pd.DataFrame(
        {"path": [f"{prefix}{i}.jpg" for i in range(len(pids))], "pid": pids, "camid": cams}
    )
    return EmbeddingSet(features=features.astype(np.float32), meta=meta)


def embeddings(features: str = "random") -> Embeddings:
    """4 queries (pids 1-4, camera 1), 8 gallery items (each pid under cameras 2 and 3) with
    random features, or collapsed ones: all zeros, all ones, or one random row repeated."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((12, 16))
    if features == "zeros":
        values[:] = 0
    elif features == "ones":
        values[:] = 1
    elif features == "one row":
        values[:] = values[0]
    return Embeddings(
        query=embedding_set("q", [1, 2, 3, 4], [1] * 4, values[:4]),
        gallery=embedding_set("g", [1, 2, 3, 4] * 2, [2] * 4 + [3] * 4, values[4:]),
    )


def npz_file(path: Path) -> None:
    with path.open("wb") as handle:  # np.savez would append .npz to a name
        np.savez(handle, features=np.ones((4, 16), dtype=np.float32))


def huge_header(path: Path) -> None:
    """A valid .npy header claiming 200000 x 200000 float32 (149 GiB), then 64 bytes."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (200000, 200000)}
        )
        handle.write(bytes(64))


EMBEDDING_CASES = {
    "0 bytes": (
        lambda p: p.write_bytes(b""),
        "query.npy is empty (0 bytes); expected the 4 x D float32 array",
    ),
    ".npz under the .npy name": (
        npz_file,
        "query.npy is a zip archive (an .npz saved under a .npy name?), not a .npy array",
    ),
    "header claiming 200000 x 200000": (
        huge_header,
        "query.npy: its header claims a 200000 x 200000 float32 array "
        "(160,000,000,000 bytes of data) but the file holds 64",
    ),
    "cut short": (
        lambda p: p.write_bytes(p.read_bytes()[: NPY_HEADER_LEN + 100]),
        "query.npy: its header claims a 4 x 16 float32 array (256 bytes of data) but "
        "the file holds 100",
    ),
    "N x 0": (
        lambda p: np.save(p, np.zeros((4, 0), dtype=np.float32)),
        "query.npy holds 4 x 0 embeddings (no feature dimension)",
    ),
    "a text file": (lambda p: p.write_text("0.1 0.2 0.3\n"), "query.npy is not a .npy array"),
}


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=list(EMBEDDING_CASES))
def test_embeddings_are_checked_before_use(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Type, header, shape and size against the file and the manifest, before any array is
    allocated; before: EOFError, AttributeError, a 149 GiB allocation error, a ValueError in
    re-ranking."""
    write, fragment = EMBEDDING_CASES[case]
    folder, metrics = tmp_path / "emb", tmp_path / "metrics.json"
    write_embeddings(folder, embeddings())
    good = (folder / "query.npy").read_bytes()
    write(folder / "query.npy")
    before = tree(tmp_path)
    argv = [
        "evaluate",
        "--params",
        str(ROOT / "params.yaml"),
        "--embeddings",
        str(folder),
        "--out",
        str(metrics),
        "--device",
        "cpu",
    ]
    code, err, seconds = timed_main(argv, capsys)
    assert_one_line_error(code, err, seconds, "evaluate", f"{folder / 'query.npy'}")
    assert fragment in err, err
    assert tree(tmp_path) == before, "a refused evaluation wrote something"
    (folder / "query.npy").write_bytes(good)
    assert main(argv) == 0
    assert "warnings" not in json.loads(metrics.read_text())


@pytest.mark.parametrize("features", ["zeros", "ones", "one row"])
def test_collapsed_embeddings_are_flagged_in_the_log_and_metrics(
    features: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Identical embeddings still give numbers, but never silently: a warning line and a
    "warnings" entry in metrics.json, which the report's reader accepts."""
    results, models = tmp_path / "results", tmp_path / "models"
    arch = results / "net"
    write_embeddings(arch / "embeddings", embeddings(features))
    argv = evaluate_argv(ROOT / "params.yaml", arch / "embeddings", arch)
    code, err, seconds = timed_main(argv, capsys)
    assert code == 0, err
    assert seconds < LIMIT_S
    assert (
        "reidpipe evaluate: warning: embeddings collapsed: the 12 query and gallery "
        "embeddings are" in err
    ), err
    written = json.loads((arch / "metrics.json").read_text())
    assert len(written["warnings"]) == 1
    assert written["warnings"][0].startswith("embeddings collapsed: ")
    assert set(read_metrics(arch / "metrics.json")) == {"plain", "reranked"}
    (models / "net").mkdir(parents=True)
    assert load_arch("net", results, models).metrics["plain"]["num_queries"] == 4


# ------------------------------------------------------------------------------------- YAML


def bomb(levels: int = 9, indent: str = "    ") -> str:
    """The "billion laughs" bomb: each level a list of nine aliases of the one before (9**9
    values from about 540 bytes)."""
    lines = [f"{indent}l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [
        f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 9) -> str:
    parts = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


BOMB_MESSAGE = "more than 100,000 values once its aliases are expanded"
YAML_CASES = {
    "params file: billion laughs": ("model:\n  backbone_kwargs:\n" + bomb(), [], BOMB_MESSAGE),
    "--set value: billion laughs": (
        "{}\n",
        ["--set", f"model.backbone_kwargs={flow_bomb()}"],
        f"--set model.backbone_kwargs: the value line 1: {BOMB_MESSAGE}",
    ),
    "params file: alias inside its own anchor": (
        "model:\n  backbone_kwargs: &loop\n    again: *loop\n",
        [],
        "line 3: an alias refers to the node that contains it",
    ),
    "params file: nested 1000 deep": (
        "model:\n  backbone_kwargs:\n    deep: " + "[" * 1000 + "]" * 1000 + "\n",
        [],
        "nested more than 100 levels deep",
    ),
}


@pytest.mark.parametrize("case", YAML_CASES, ids=list(YAML_CASES))
def test_yaml_that_expands_without_bound_is_refused(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `reidpipe params` expanded the bomb for minutes at 1.4 GB; the deep nesting was
    a RecursionError traceback."""
    text, extra, fragment = YAML_CASES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "effective.yaml"
    argv = ["params", "--params", str(ROOT / "params.yaml"), str(bad), *extra, "--out", str(out)]
    code, err, seconds = timed_main(argv, capsys)
    assert_one_line_error(code, err, seconds, "params", fragment)
    if not extra:
        assert f"params file {bad}: " in err
    assert seconds < 5, f"refused in {seconds:.2f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    # Anchors and aliases as such are fine.
    bad.write_text("dataset:\n  pixel_mean: &half [0.5, 0.5, 0.5]\n  pixel_std: *half\n")
    assert main(["params", "--params", str(ROOT / "params.yaml"), str(bad), "--out", str(out)]) == 0
    assert "pixel_std:\n  - 0.5\n  - 0.5\n  - 0.5" in out.read_text()


def test_tao_spec_and_trained_config_share_the_bounded_loader(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  backbone: resnet_50\n  extra:\n" + bomb())
    code, err, seconds = timed_main(
        ["params", "--from-tao", str(spec), "--out", str(tmp_path / "out.yaml")], capsys
    )
    assert_one_line_error(code, err, seconds, "params", f"TAO spec {spec}: line 9: {BOMB_MESSAGE}")
    assert not (tmp_path / "out.yaml").exists()
    shutil.copy(ROOT / "tests" / "fixtures" / "tao" / "resnet50_market.yaml", spec)
    assert main(["params", "--from-tao", str(spec), "--out", str(tmp_path / "out.yaml")]) == 0

    results, models = tmp_path / "results", tmp_path / "models"
    arch = results / "net"
    write_embeddings(arch / "embeddings", embeddings())
    assert main(evaluate_argv(ROOT / "params.yaml", arch / "embeddings", arch)) == 0
    config = models / "net" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("model:\n  backbone_kwargs:\n" + bomb())
    start = time.monotonic()
    with pytest.raises(ReidpipeError) as error:
        load_arch("net", results, models)
    assert time.monotonic() - start < 5
    assert (
        str(error.value) == f"trained model config {config}: line 8: {BOMB_MESSAGE} "
        '(a "billion laughs" bomb?); refusing it'
    )
    config.write_text("model:\n  backbone: resnet50\n")
    assert load_arch("net", results, models).config == {"model": {"backbone": "resnet50"}}


# ---------------------------------------------------------------------- FIFOs, sockets, devices


def bound_socket(path: Path) -> socket.socket:
    """A Unix socket bound at ``path`` (bound from its folder: socket paths are short)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
    finally:
        os.chdir(cwd)
    return sock


def test_validate_refuses_fifos_sockets_and_devices_named_like_images(
    work: Path, tmp_path: Path
) -> None:
    """Before: validate blocked on the FIFO for as long as it ran (10 minutes under `timeout`,
    whose SIGTERM did not end it)."""
    data = dataset_with(work, tmp_path, QUERY, os.mkfifo)
    fifo = data / market.QUERY_DIR / QUERY
    gallery = sorted((data / market.GALLERY_DIR).iterdir())
    sock_path, device_path = gallery[0], gallery[1]
    sock_path.unlink()
    sock = bound_socket(sock_path)
    device_path.unlink()
    device_path.symlink_to("/dev/zero")
    report = tmp_path / "validation.json"
    try:
        code, err, seconds = run_cli(
            ["validate", str(data), "--report", str(report), "--no-strict", *params(work)]
        )
    finally:
        sock.close()
    assert code == 2 and seconds < LIMIT_S, (code, seconds, err)
    assert "Traceback" not in err
    assert f"{fifo}: is a FIFO (named pipe), not an image file" in err
    assert f"{sock_path}: is a socket, not an image file" in err
    assert f"{device_path}: is a character device, not an image file" in err
    assert not json.loads(report.read_text())["valid"]  # validate's report, written as always
    for path in (fifo, sock_path, device_path):
        path.unlink()
        os.link(work / "market" / path.parent.name / path.name, path)
    code, err, _ = run_cli(
        ["validate", str(data), "--report", str(report), "--no-strict", *params(work)]
    )
    assert code == 0, err
    assert json.loads(report.read_text())["valid"]


def test_split_refuses_a_fifo(work: Path, tmp_path: Path) -> None:
    train_image = sorted((work / "market" / market.TRAIN_DIR).iterdir())[0].name
    data = dataset_with(work, tmp_path, train_image, os.mkfifo, split="train")
    fifo = data / market.TRAIN_DIR / train_image
    out = tmp_path / "splits"
    argv = ["split", str(data), "--out", str(out), *params(work), "--set", "split.val_ids=2"]
    code, err, seconds = run_cli(argv)
    assert_one_line_error(
        code, err, seconds, "split", f"image {fifo} is a FIFO (named pipe), not an image file"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["market"]
    fifo.unlink()
    os.link(work / "market" / market.TRAIN_DIR / train_image, fifo)
    code, err, _ = run_cli(argv)
    assert code == 0, err
    assert (
        str(fifo)
        in (out / "train.csv").read_text()
        + (out / "val_gallery.csv").read_text()
        + (out / "val_query.csv").read_text()
    )


def test_extract_refuses_a_fifo_its_manifest_lists(work: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    shutil.copytree(work / "splits", splits)
    query = pd.read_csv(splits / "query.csv")
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    good_path = query.loc[0, "path"]
    query.loc[0, "path"] = str(fifo)
    query.to_csv(splits / "query.csv", index=False)
    argv = [
        "extract",
        *params(work),
        "--arch",
        "tiny",
        "--device",
        "cpu",
        "--onnx",
        str(work / "good.onnx"),
        "--splits",
        str(splits),
        "--out",
        str(tmp_path / "emb"),
    ]
    code, err, seconds = run_cli(argv)
    assert_one_line_error(
        code, err, seconds, "extract", f"image {fifo} is a FIFO (named pipe), not an image file"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.jpg", "splits"]
    query.loc[0, "path"] = good_path
    query.to_csv(splits / "query.csv", index=False)
    code, err, _ = run_cli(argv)
    assert code == 0, err
    assert (tmp_path / "emb" / "query.npy").is_file()


def test_evaluate_refuses_a_fifo_for_embeddings(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    write_embeddings(folder, embeddings())
    good = (folder / "gallery.npy").read_bytes()
    (folder / "gallery.npy").unlink()
    os.mkfifo(folder / "gallery.npy")
    argv = [
        "evaluate",
        "--params",
        str(ROOT / "params.yaml"),
        "--embeddings",
        str(folder),
        "--out",
        str(tmp_path / "metrics.json"),
        "--device",
        "cpu",
    ]
    code, err, seconds = run_cli(argv)
    assert_one_line_error(
        code,
        err,
        seconds,
        "evaluate",
        f"{folder / 'gallery.npy'} is a FIFO (named pipe), not a .npy file",
    )
    assert not (tmp_path / "metrics.json").exists()
    (folder / "gallery.npy").unlink()
    (folder / "gallery.npy").write_bytes(good)
    code, err, _ = run_cli(argv)
    assert code == 0, err


# -------------------------------------------------------------------------------- signals

# `reidpipe ARGV` whose image reads never return, as on a hung network file system: the first
# read touches the marker file, then every read waits for ever.
STUCK_STAGE = """
import sys, threading
from pathlib import Path
from reidpipe import images
from reidpipe.cli import main

def read_for_ever(path):
    Path(sys.argv[1]).touch()
    threading.Event().wait()

images.read_bytes = read_for_ever
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_ends_a_stage_whose_worker_thread_is_stuck_in_a_read(
    work: Path, tmp_path: Path
) -> None:
    """SIGTERM unwinds the main thread, but a decoding thread stuck in a read would hold the
    clean-up (the pool's shutdown joins it) or the exit for ever: the clean-up deadline ends
    the process with SIGTERM's code. Before, only SIGKILL ended it."""
    case = tmp_path / "case"
    case.mkdir()
    report, marker = case / "validation.json", tmp_path / "reading"
    argv = ["validate", str(work / "market"), "--report", str(report), "--no-strict", *params(work)]
    stage = subprocess.Popen(
        [sys.executable, "-c", STUCK_STAGE, str(marker), *argv],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        for _ in range(600):
            if marker.exists() or stage.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), stage.communicate()[1]
        stage.send_signal(signal.SIGTERM)
        start = time.monotonic()
        _, err = stage.communicate(timeout=60)
        seconds = time.monotonic() - start
    finally:
        stage.kill()
    assert stage.returncode == 128 + signal.SIGTERM, err
    assert seconds < LIMIT_S, f"took {seconds:.1f} s"
    assert err.strip().splitlines()[-1] == (
        "reidpipe validate: warning: still running 10 s after SIGTERM (a thread blocked in a "
        "read or write?): exiting without waiting for it"
    ), err
    assert not list(case.iterdir())
    assert main(argv) == 0
    assert json.loads(report.read_text())["valid"]


def test_the_deadline_is_dropped_once_a_stage_has_unwound() -> None:
    """In-process callers (tests) are not ended 10 s after an interruption they handled."""
    with pytest.raises(Interrupted), signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises first
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


# ---------------------------------------------------------------------------------- split


def test_split_writes_only_images_validate_accepts(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0-byte image and a PNG under a .jpg name: before, split exited 0 and listed both."""
    empty_name = sorted((work / "market" / market.TRAIN_DIR).iterdir())[0].name
    data = dataset_with(work, tmp_path, empty_name, lambda p: p.write_bytes(b""), split="train")
    empty = data / market.TRAIN_DIR / empty_name
    png = data / market.QUERY_DIR / QUERY
    png.unlink()
    png_file(png)
    out = tmp_path / "splits"
    argv = ["split", str(data), "--out", str(out), *params(work), "--set", "split.val_ids=2"]
    code, err, seconds = timed_main(argv, capsys)
    assert_one_line_error(
        code,
        err,
        seconds,
        "split",
        f"image {empty} is empty (0 bytes) (1 more unusable image(s) in "
        f"{data}: `reidpipe validate` lists them all)",
    )
    assert not out.exists()
    # The same words as validation, from the same check.
    report = tmp_path / "validation.json"
    assert main(["validate", str(data), "--report", str(report), "--no-strict", *params(work)]) == 2
    problems = {p["file"]: p["problem"] for p in json.loads(report.read_text())["problems"]}
    assert problems == {
        str(empty): "is empty (0 bytes)",
        str(png): "holds PNG data under a JPEG name (.jpg); convert it or rename it",
    }
    empty.unlink()
    code, err, _ = timed_main(argv, capsys)
    assert_one_line_error(code, err, 0, "split", f"image {png} {problems[str(png)]}")
    png.unlink()
    write_jpeg(png, seed=7)
    write_jpeg(empty, seed=8)
    assert main(argv) == 0
    listed = "".join(
        (out / f"{s}.csv").read_text() for s in ("train", "val_query", "val_gallery", "query")
    )
    assert str(empty) in listed and str(png) in listed
