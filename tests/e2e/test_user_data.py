"""A dataset the user holds is never an output (issue 25 item 0).

Before, the main dataset folder was the download rule's output: once the code was newer than the
folder, Snakemake planned download again and deleted the user's only copy before running it.
Now download's output is a record (results/download.json) and a held folder (custom source, or a
folder download did not make) is an input of validate and split: a code change, `--forcerun
download`, `--delete-all-output` and `dvc checkout` leave it byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from support.market_fixtures import make_tiny_market
from support.repo_copy import dvc, make_repo, run, snakemake

from reidpipe.data.download import fetch_dataset, is_held
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE
from reidpipe.params import SourceParams

HELD = "data/mine"
TARGET = "results/splits"
OLD = 946684800  # 2000-01-01: the user's files are older than any code


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def held_dataset(repo: Path) -> Path:
    folder = make_tiny_market(repo / HELD, train_ids=6)
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (OLD, OLD))
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(
        tmp_path_factory.mktemp("user_data"),
        {"data": {"source": "custom", "dataset_dir": HELD}, "split": {"val_ids": 2}},
    )
    held_dataset(repo)
    return repo


def test_snakemake_never_deletes_a_held_dataset(repo: Path) -> None:
    folder = repo / HELD
    before = snapshot(folder)
    run(repo, *snakemake(TARGET))
    record = json.loads((repo / "results/download.json").read_text())
    assert record["held"] is True and record["dataset_dir"] == HELD
    assert snapshot(folder) == before

    code = repo / "reidpipe/data/download.py"  # the code changes: newer than the dataset
    code.write_text(code.read_text() + "\n# a change\n")
    plan = run(repo, *snakemake("-n", TARGET)).stdout
    assert "rule download:" in plan
    run(repo, *snakemake(TARGET))
    assert snapshot(folder) == before

    run(repo, *snakemake(TARGET, "--forcerun", "download"))
    assert snapshot(folder) == before
    run(repo, *snakemake(TARGET, "--delete-all-output"))
    assert not (repo / TARGET).exists() and snapshot(folder) == before
    run(repo, *snakemake(TARGET))
    assert (repo / TARGET).is_dir() and snapshot(folder) == before


def test_dvc_never_deletes_a_held_dataset(repo: Path) -> None:
    folder = repo / HELD
    before = snapshot(folder)
    run(repo, *dvc("repro", "split"))
    assert snapshot(folder) == before
    run(repo, *dvc("checkout", "--force", "download", "validate", "split"))
    assert snapshot(folder) == before
    shutil.rmtree(repo / TARGET)
    run(repo, *dvc("checkout", "--force", "download", "validate", "split"))
    assert (repo / TARGET).is_dir() and snapshot(folder) == before


def test_download_never_replaces_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """A folder at a known source's dataset_dir that download did not make: used where it lies
    when it holds the layout, refused (never replaced) when it does not."""
    market = make_tiny_market(tmp_path / "Market", train_ids=4)
    data = SourceParams(source="market1501", dataset_dir=str(market))
    assert is_held(data)
    before = snapshot(market)
    result = fetch_dataset(data, log=lambda message: None)
    assert result.reused and snapshot(market) == before

    other = tmp_path / "other"
    (other / "notes").mkdir(parents=True)
    (other / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(ReidpipeError, match="was not made by `reidpipe download`"):
        fetch_dataset(
            SourceParams(source="market1501", dataset_dir=str(other)), log=lambda message: None
        )
    assert (other / "notes" / "mine.txt").read_text() == "keep me"


def test_no_stage_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    """`split --out` pointed at a folder of the user's (here: the dataset itself) is refused
    before any work, with one line, and the folder stays byte for byte; a folder a stage wrote
    (it holds the marker) is replaced by the rerun, and so is an empty one."""
    market = make_tiny_market(tmp_path / "Market", train_ids=6)
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {
                "data": {"source": "custom", "dataset_dir": str(market), "strict": False},
                "split": {"val_ids": 2},
            }
        )
    )
    before = snapshot(market)
    refused = run(
        tmp_path,
        sys.executable,
        "-m",
        "reidpipe",
        "split",
        str(market),
        "--out",
        str(market),
        "--params",
        str(params),
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{market} holds files that no reidpipe stage wrote" in lines[0]
    assert snapshot(market) == before

    out = tmp_path / "splits"
    out.mkdir()  # an empty folder holds nothing to lose
    for _ in range(2):  # the second run replaces the first run's folder
        done = run(
            tmp_path,
            sys.executable,
            "-m",
            "reidpipe",
            "split",
            str(market),
            "--out",
            str(out),
            "--params",
            str(params),
        )
        assert done.returncode == 0
        assert (out / OUTPUT_MARKER_FILE).is_file() and any(out.glob("*.csv"))
    assert snapshot(market) == before
