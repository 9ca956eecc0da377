"""The one JSON-file reader: every problem is one ReidpipeError naming the file."""

from __future__ import annotations

import pytest

from reidpipe.errors import ReidpipeError
from reidpipe.json_files import read_json_file


def test_reads_the_parsed_content(tmp_path):
    path = tmp_path / "status.json"
    path.write_text('{"status": "built", "sizes": [1, 2]}', encoding="utf-8")
    assert read_json_file(path) == {"status": "built", "sizes": [1, 2]}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, r"status.json does not exist \(run build-trt\)$"),
        (
            lambda p: p.write_text('{"status": ', encoding="utf-8"),
            r"status.json is not valid JSON: Expecting value: line 1 column 12",
        ),
        (lambda p: p.write_bytes(b'{"status": "\xff"}'), r"status.json cannot be read: .*utf-8"),
        (lambda p: p.mkdir(), r"status.json cannot be read: .*Is a directory"),
    ],
    ids=["missing", "truncated", "not-utf8", "directory"],
)
def test_bad_files_are_one_error_naming_them(tmp_path, make, message):
    path = tmp_path / "status.json"
    make(path)
    with pytest.raises(ReidpipeError, match=message):
        read_json_file(path, " (run build-trt)")
