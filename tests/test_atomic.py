import logging
import os

import pytest

from reidpipe import atomic


def test_failed_writes_leave_nothing_and_keep_the_old_output(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}") and sorted(os.listdir(tmp_path)) == ["out.json"]

    folder = tmp_path / "embeddings"
    with atomic.atomic_dir(folder) as tmp:
        (tmp / "a.npy").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(folder) as tmp:
            (tmp / "a.npy").write_text("new")
            raise RuntimeError("killed")
    assert (folder / "a.npy").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["embeddings", "out.json"]


def test_temporaries_of_a_killed_run_are_removed_by_the_next_write(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reidpipe")
    (tmp_path / ".splits.tmp-dead").mkdir()
    (tmp_path / ".splits.tmp-dead" / "train.csv").write_text("partial")
    (tmp_path / ".metrics.json.tmp-dead.json").write_text("partial")
    with atomic.atomic_dir(tmp_path / "splits") as tmp:
        (tmp / "train.csv").write_text("whole")
    atomic.write_json(tmp_path / "metrics.json", {})
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "splits"]
    assert "left by an interrupted run" in caplog.text


def test_outputs_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        with atomic.atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
