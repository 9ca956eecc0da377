import logging
import os

import pytest

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE


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


def test_a_folder_no_stage_wrote_is_refused_before_any_work(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"the user's only copy")
    ran = []
    with pytest.raises(ReidpipeError, match="holds files that no reidpipe stage wrote"):
        with atomic.atomic_dir(users) as tmp:
            ran.append(tmp)
    with pytest.raises(ReidpipeError, match="holds files that no reidpipe stage wrote"):
        atomic.remove_output_dir(users)
    assert not ran and (users / "photo.jpg").read_bytes() == b"the user's only copy"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary left either


def test_a_folder_a_stage_wrote_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    for text in ("first", "second"):
        with atomic.atomic_dir(out) as tmp:
            (tmp / "result.txt").write_text(text)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER_FILE, "result.txt"]
    assert (out / "result.txt").read_text() == "second"
    atomic.remove_output_dir(out)
    assert not out.exists()


def test_a_folder_of_empty_folders_holds_nothing_to_lose(tmp_path):
    """Snakemake makes the parents of a job's outputs (dvclive/plots/) before the job runs."""
    out = tmp_path / "dvclive"
    (out / "plots" / "metrics").mkdir(parents=True)
    with atomic.atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (out / "metrics.json").is_file() and not (out / "plots").exists()
    (out / "plots" / "metrics").mkdir(parents=True)
    (out / OUTPUT_MARKER_FILE).unlink()
    (out / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n")  # a file deep inside
    with pytest.raises(ReidpipeError, match="holds files that no reidpipe stage wrote"):
        atomic.remove_output_dir(out)


def test_a_stage_own_older_marker_also_proves_it_wrote_the_folder(tmp_path):
    """A dataset download or synth wrote before the common marker existed is still theirs."""
    old = tmp_path / "dataset"
    old.mkdir()
    (old / "synthetic.json").write_text("{}")
    (old / "image.jpg").write_bytes(b"x")
    with atomic.atomic_dir(old, owned_by=("synthetic.json",)) as tmp:
        (tmp / "synthetic.json").write_text("{}")
    assert not (old / "image.jpg").exists() and (old / OUTPUT_MARKER_FILE).is_file()
