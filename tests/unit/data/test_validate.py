import json
import shutil

import pytest
from support.market_fixtures import make_tiny_market, write_jpeg

from reidpipe import market
from reidpipe.cli import main
from reidpipe.data.validate import run_validation, validate_dataset
from reidpipe.errors import ReidpipeError


@pytest.fixture
def dataset(tmp_path):
    return make_tiny_market(tmp_path / "ds")


def test_valid_dataset_report_counts(dataset, tmp_path):
    report_path = tmp_path / "report.json"
    run_validation(dataset, report_path, strict=False)
    report = json.loads(report_path.read_text())
    assert report["valid"] is True
    assert report["splits"]["train"] == {
        "images": 36,
        "ids": 6,
        "cameras": [1, 2, 3],
        "junk": 0,
        "distractors": 0,
        "image_sizes": {"64x128": 36},
    }
    assert report["splits"]["query"]["ids"] == 4
    assert report["splits"]["gallery"]["junk"] == 1
    assert report["splits"]["gallery"]["distractors"] == 1


def test_junk_name_is_not_person_one(dataset):
    """TAO's (\\d+)_c(\\d+) reads -1_c1... as pid 1; we must read it as junk."""
    assert market.parse_name("-1_c1s1_000001_00.jpg").pid == market.JUNK_PID
    assert market.parse_name("0000_c1s1_000001_00.jpg").pid == market.DISTRACTOR_PID
    assert market.parse_name("1_c1s1_000001_00.jpg").pid == 1
    assert market.parse_name("x1_c1s1_000001_00.jpg") is None
    assert market.parse_name("--1_c1s1_000001_00.jpg") is None


def test_bad_files_are_named(dataset, tmp_path):
    truncated = dataset / market.GALLERY_DIR / market.format_name(9, 2, 1, 99, 1)
    full = write_jpeg(tmp_path / "full.jpg", 5).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    empty = dataset / market.QUERY_DIR / market.format_name(8, 2, 1, 77, 1)
    empty.write_bytes(b"")
    misnamed = write_jpeg(dataset / market.TRAIN_DIR / "person1_cam2.jpg", 7)
    (dataset / market.TRAIN_DIR / "Thumbs.db").write_bytes(b"os junk")

    with pytest.raises(ReidpipeError) as info:
        run_validation(dataset, tmp_path / "r.json", strict=False)
    message = str(info.value)
    for path in (truncated, empty, misnamed):
        assert str(path) in message
    assert "0 bytes" in message and "truncated" in message
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["valid"] is False and report["num_problems"] == 3
    assert report["ignored_files"] == [str(dataset / market.TRAIN_DIR / "Thumbs.db")]


def test_cli_exit_code_and_listing(dataset, tmp_path, capsys):
    for i in range(25):
        (dataset / market.QUERY_DIR / f"stray{i:02d}.jpg").write_bytes(b"x")
    code = main(["validate", str(dataset), "--report", str(tmp_path / "r.json"), "--no-strict"])
    err = capsys.readouterr().err
    assert code != 0
    assert "25 problem(s)" in err and "stray00.jpg" in err and "and 5 more" in err


def test_protocol_invariants(dataset):
    # a query id without a cross-camera gallery match, a train id leaking into the test side,
    # junk in train and a byte-identical train/test pair
    write_jpeg(dataset / market.QUERY_DIR / market.format_name(50, 1, 1, 1, 1), 100)
    write_jpeg(dataset / market.GALLERY_DIR / market.format_name(50, 1, 1, 2, 1), 101)
    write_jpeg(dataset / market.GALLERY_DIR / market.format_name(1, 4, 1, 3, 1), 102)
    write_jpeg(dataset / market.TRAIN_DIR / market.format_name(-1, 1, 1, 4, 1), 103)
    shutil.copy(
        dataset / market.TRAIN_DIR / market.format_name(2, 1, 1, 101, 1),
        dataset / market.GALLERY_DIR / market.format_name(9, 3, 1, 5, 1),
    )
    problems = [p.problem for p in validate_dataset(dataset).problems]
    assert any("pid 50 has no gallery image from another camera" in p for p in problems)
    assert any("appear in train and test: [1]" in p for p in problems)
    assert any("only allowed in the gallery" in p for p in problems)
    assert any("identical image in train and test" in p for p in problems)


def test_strict_checks_market_statistics(dataset):
    problems = [p.problem for p in validate_dataset(dataset, strict=True).problems]
    assert any("Market-1501 has 12936 images here, found 36" in p for p in problems)
    assert any("cameras 1-6" in p for p in problems)
    assert validate_dataset(dataset, strict=False).valid


def test_strict_checks_image_size(dataset):
    odd = write_jpeg(dataset / market.GALLERY_DIR / market.format_name(9, 2, 1, 8, 1), 3, (80, 160))
    assert validate_dataset(dataset, strict=False).valid
    strict = validate_dataset(dataset, strict=True)
    assert any(p.file == str(odd) and "size 80x160" in p.problem for p in strict.problems)


def test_not_a_market_layout(tmp_path):
    with pytest.raises(ReidpipeError, match="not a Market-1501-layout dataset"):
        validate_dataset(tmp_path)


def test_empty_test_side_is_a_problem(dataset):
    for path in (dataset / market.QUERY_DIR).iterdir():
        path.unlink()
    problems = validate_dataset(dataset).problems
    assert any(
        p.file.endswith(market.QUERY_DIR) and p.problem == "holds no images" for p in problems
    )


def test_strict_failure_says_how_to_check_another_dataset(dataset, tmp_path):
    """A consistent dataset that is not Market-1501 fails strict validation with the way out."""
    with pytest.raises(ReidpipeError) as info:
        run_validation(dataset, tmp_path / "r.json", strict=True)
    assert "strict: Market-1501 has" in str(info.value)
    assert "--no-strict" in str(info.value) and "data.strict: false" in str(info.value)
    run_validation(dataset, tmp_path / "r.json", strict=False)
