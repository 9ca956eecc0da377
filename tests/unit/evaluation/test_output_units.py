"""A stage's outputs are one unit, with one writer (issue 25 items 4 and 5).

A write that fails (disk full, file-size limit) at any of a stage's outputs leaves the previous
set byte for byte, and says in one line which path and what happened. Two runs on one output:
the second refuses at once naming the first's pid; temporaries of a run that holds the lock are
never cleared by another as "left by an interrupted run".
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support import ROOT
from support.evaluate_run import evaluate_argv
from support.market_fixtures import make_tiny_market
from support.tiny_run import TINY
from test_evaluate import hand_embeddings, write_params

from reidpipe import atomic, output_lock
from reidpipe.cli import main
from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import Embeddings, EmbeddingSet, write_embeddings
from reidpipe.filenames import DVCLIVE_DIR, MODEL_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE
from reidpipe.training import train


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (temporaries included, the output locks not) and its
    bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(output_lock.LOCK_SUFFIX)
    }


def random_embeddings(queries: int, gallery: int, dim: int = 8) -> Embeddings:
    rng = np.random.default_rng(0)

    def subset(n: int, prefix: str) -> EmbeddingSet:
        meta = pd.DataFrame(
            {
                "path": [f"{prefix}/{i:04d}.jpg" for i in range(n)],
                "pid": rng.integers(0, 10, n),
                "camid": rng.integers(1, 4, n),
            }
        )
        return EmbeddingSet(rng.standard_normal((n, dim)).astype(np.float32), meta)

    return Embeddings(query=subset(queries, "q"), gallery=subset(gallery, "g"))


def evaluate_run(tmp_path: Path, *more: str) -> list[str]:
    """evaluate's arguments for tmp_path/emb into tmp_path/out, verification figures too."""
    params = write_params(tmp_path / "params.yaml")
    return evaluate_argv(params, tmp_path / "emb", tmp_path / "out", *more, verification=True)


@pytest.fixture
def evaluated(tmp_path: Path) -> Path:
    """An earlier run's evaluate outputs in tmp_path/out."""
    write_embeddings(tmp_path / "emb", random_embeddings(40, 80))
    assert main(evaluate_run(tmp_path)) == 0
    return tmp_path / "out"


@pytest.mark.parametrize("failing", [1, 2], ids=["cmc.csv", "per_query.csv"])
def test_evaluate_that_fails_mid_write_keeps_the_previous_set(
    evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, failing: int
) -> None:
    before = contents(evaluated)
    original = pd.DataFrame.to_csv
    calls = []

    def to_csv(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == failing:
            original(self, path, *args, **kwargs)  # some bytes land, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    # another seed: verification.json would change too
    assert (
        main(
            evaluate_run(
                tmp_path, "--set", "evaluate.max_rank=5", "--set", "evaluate.open_set_seed=3"
            )
        )
        == 2
    )
    assert "verification.json" in before and contents(evaluated) == before
    name = ["cmc.csv", "per_query.csv"][failing - 1]
    errors = [line for line in capfd.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        f"reidpipe evaluate: error: cannot write {evaluated / name}: disk full "
        "(ENOSPC); the previous outputs are left as they were"
    ]
    monkeypatch.undo()
    assert main(evaluate_run(tmp_path, "--set", "evaluate.max_rank=5")) == 0
    assert len(pd.read_csv(evaluated / "cmc.csv")) == 5


def run_limited(code: str, limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose files may not grow past ``limit`` bytes (SIGXFSZ
    ignored, so an oversized write fails with EFBIG or a short write, as under `ulimit -f`)."""
    prologue = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
    """)
    return subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_evaluate_over_the_file_size_limit_keeps_the_previous_set(
    evaluated: Path, tmp_path: Path
) -> None:
    before = contents(evaluated)
    sizes = {name: len(data) for name, data in before.items()}
    assert sizes["per_query.csv"] > max(sizes["metrics.json"], sizes["cmc.csv"]) + 100
    limit = max(sizes["metrics.json"], sizes["cmc.csv"]) + 50  # the third output cannot fit
    done = run_limited(
        f"""
        import sys
        from reidpipe.cli import main
        sys.exit(main({evaluate_run(tmp_path, "--set", "evaluate.max_rank=5")!r}))
    """,
        limit,
        tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert contents(evaluated) == before
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"reidpipe evaluate: error: cannot write {evaluated / 'per_query.csv'}: "
        "file too large (EFBIG); the previous outputs are left as they were"
    ]


def test_extract_over_the_file_size_limit_names_the_file(tmp_path: Path) -> None:
    """The short write numpy reports as "N requested and M written" is named as what it is."""
    write_embeddings(tmp_path / "emb", hand_embeddings())
    before = contents(tmp_path / "emb")
    done = run_limited(
        f"""
        import numpy as np, pandas as pd
        from reidpipe.errors import ReidpipeError
        from reidpipe.evaluation.embeddings import Embeddings, EmbeddingSet, write_embeddings
        def subset(n):
            meta = pd.DataFrame({{"path": [f"{{i}}.jpg" for i in range(n)], "pid": 1, "camid": 1}})
            return EmbeddingSet(np.ones((n, 64), np.float32), meta)
        try:
            write_embeddings({str(tmp_path / "emb")!r}, Embeddings(subset(2000), subset(10)))
        except ReidpipeError as exc:
            print(exc)
    """,
        100_000,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"cannot write {tmp_path / 'emb' / 'query.npy'}: file too "
        "large (EFBIG): the file-size limit (ulimit -f) is 100000 "
        "bytes ("
    ), done.stdout
    assert "requested and" in done.stdout and "previous outputs are left" in done.stdout
    assert contents(tmp_path / "emb") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_a_short_write_on_a_full_disk_says_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def short_write(path, array):
        Path(path).write_bytes(b"\x93NUMPY")
        raise OSError("221184 requested and 221152 written")

    monkeypatch.setattr(np, "save", short_write)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096,) * 4 + (0,) * 7))
    with pytest.raises(ReidpipeError) as caught:
        write_embeddings(tmp_path / "emb", hand_embeddings())
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'emb' / 'query.npy'}: disk full "
        "(ENOSPC) (221184 requested and 221152 written); nothing was "
        "written"
    )
    assert list(tmp_path.iterdir()) == []


def test_train_outputs_are_replaced_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.DataFrame({"epoch": [0], "loss": [1.0]})
    train._write_outputs(tmp_path, {"weights": 1}, frame, {"name": "first"})
    before = contents(tmp_path)

    def failing_save(obj, path):
        Path(path).write_bytes(b"PK")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:626] . PytorchStreamWriter "
            "failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(train.torch, "save", failing_save)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096,) * 4 + (0,) * 7))
    with pytest.raises(ReidpipeError, match=f"cannot write {tmp_path / MODEL_FILE}: disk full"):
        train._write_outputs(tmp_path, {"weights": 2}, frame.assign(loss=0.5), {"name": "second"})
    assert contents(tmp_path) == before
    assert set(before) == {MODEL_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE}


def test_a_failed_rename_puts_the_previous_files_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    atomic.write_files({p: (lambda tmp, p=p: tmp.write_text(f"old {p.name}")) for p in paths})
    before = contents(tmp_path)
    replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == paths[2] and ".tmp-" in Path(src).name and Path(src).read_text() == "new":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic.write_files({p: (lambda tmp: tmp.write_text("new")) for p in paths})
    assert contents(tmp_path) == before


# ------------------------------------------------------------------------------- one writer


HOLD = """
import sys, time
from reidpipe import output_lock
with output_lock.locked([sys.argv[1]]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held(tmp_path: Path):
    """tmp_path/out locked by another process (killed at the end)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path, held) -> None:
    with pytest.raises(ReidpipeError) as caught:
        with output_lock.locked([tmp_path / "out"]):
            pass
    assert f"{tmp_path / 'out'} is being written by another run (pid {held.pid}: " in str(
        caught.value
    )


def test_temporaries_of_a_running_writer_are_not_cleared(tmp_path: Path, held) -> None:
    (tmp_path / "out").mkdir()
    in_progress = tmp_path / "out" / ".model.pt.tmp-abc"
    in_progress.write_bytes(b"being written")
    atomic.remove_temporaries(tmp_path / "out")
    atomic.write_text(tmp_path / "out" / "model.pt", "x")  # its own stale-temporary sweep too
    assert in_progress.read_bytes() == b"being written"
    held.kill()
    held.wait()  # the kernel released the lock: now they are leftovers
    atomic.remove_temporaries(tmp_path / "out")
    assert not in_progress.exists()


def test_a_killed_holder_leaves_nothing_that_blocks(tmp_path: Path, held) -> None:
    held.send_signal(signal.SIGKILL)
    held.wait()
    lock = output_lock.lock_path(tmp_path / "out")
    assert lock.is_file(), "a killed holder leaves its lock file, held by no one"
    with output_lock.locked([tmp_path / "out"]):
        assert lock.read_text().startswith(f"{os.getpid()} ")
    assert not lock.exists(), "a run that ends removes its lock file"


def test_two_trainings_into_one_folder(tmp_path: Path) -> None:
    """The second `reidpipe train` into the same --out refuses at once, naming the first; the
    first ends normally with its outputs."""
    make_tiny_market(tmp_path / "market", train_ids=8)
    make_split(tmp_path / "market", tmp_path / "splits", val_ids=2, seed=0)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "model"
    argv = [
        sys.executable,
        "-m",
        "reidpipe",
        "train",
        "--arch",
        "tiny",
        "--splits",
        str(tmp_path / "splits"),
        "--out",
        str(out),
        "--params",
        str(ROOT / "params.yaml"),
        str(tmp_path / "tiny.yaml"),
        "--set",
        "train.num_threads=1",
    ]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = output_lock.lock_path(out)
    deadline = time.monotonic() + 30
    while not (lock.is_file() and lock.read_text().startswith(f"{first.pid} ")):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    start = time.monotonic()
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    still_running = first.poll() is None
    _, first_err = first.communicate(timeout=300)
    assert still_running, "the first run ended before the second started: the test proves nothing"
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and f"{out} is being written by another run (pid {first.pid}: " in lines[0]
        and " train --arch tiny " in lines[0]
    ), second.stderr
    assert took < 10
    assert first.returncode == 0, first_err
    assert "interrupted run" not in first_err
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        MODEL_FILE,
        TRAIN_CONFIG_FILE,
        TRAIN_LOG_FILE,
        DVCLIVE_DIR,
        train.CHECKPOINT_DIR,
    }
