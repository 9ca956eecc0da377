"""``reidpipe download`` against a real HTTP server on 127.0.0.1 serving zips built here."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import ROOT

from reidpipe.cli import main
from reidpipe.data.download import MARKER_NAME, fetch_dataset
from reidpipe.data.http_transfer import file_md5
from reidpipe.dataset_registry import SOURCES, dataset_source
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE
from reidpipe.market import ARCHIVE_MD5, ARCHIVE_NAME, MIRRORS, TOP_FOLDER, format_name
from reidpipe.params import DataParams

REPO_PARAMS = ROOT / "params.yaml"
DROP_AFTER = 5000


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def market_entries() -> dict[str, bytes]:
    """A tiny Market-layout tree: 2 ids x 2 cameras per split, real JPEGs."""
    files = {f"{TOP_FOLDER}/readme.txt": b"tiny test copy of the Market-1501 layout\n"}
    seed = 0
    for folder, pids in (
        ("bounding_box_train", (2, 7)),
        ("bounding_box_test", (0, 3)),
        ("query", (3, 5)),
    ):
        for pid in pids:
            for cam in (1, 2):
                seed += 1
                files[f"{TOP_FOLDER}/{folder}/{format_name(pid, cam, 1, 100 * seed, 1)}"] = _jpeg(
                    seed
                )
    return files


def build_zip(
    path: Path,
    entries: dict[str, bytes] | None = None,
    extra: list[tuple[zipfile.ZipInfo, bytes]] = (),
) -> str:
    """Write a zip of ``entries`` (default: the Market tree) plus raw ``extra`` entries; its MD5."""
    entries = market_entries() if entries is None else entries
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return file_md5(path)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        behaviour = srv.behaviour.get(self.path, "normal")
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        start = int(match.group(1)) if match and behaviour != "ignore_range" else 0
        if start >= len(body) > 0 and match:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # wrong_range claims 206 but sends from the beginning
        start_sent = 0 if behaviour == "wrong_range" and start else start
        payload = body[start_sent:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start_sent}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if behaviour == "drop_first" and srv.drops_left:
            srv.drops_left -= 1
            self.wfile.write(payload[:DROP_AFTER])
            return  # HTTP/1.0: the server closes the connection mid-body
        self.wfile.write(payload)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.behaviour, srv.requests, srv.drops_left = {}, {}, [], 1
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def market_zip(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / ARCHIVE_NAME
    path.parent.mkdir()
    return path, build_zip(path)


def _params(tmp_path: Path, md5: str, urls: list[str] = (), **kw) -> DataParams:
    return dataclasses.replace(
        DataParams(),
        dataset_dir=str(tmp_path / "data" / TOP_FOLDER),
        urls=list(urls),
        md5=md5,
        **kw,
    )


def _leftovers(tmp_path: Path) -> list[str]:
    data = tmp_path / "data"
    return sorted(p.name for p in data.iterdir()) if data.exists() else []


def _assert_dataset(dataset: Path, md5: str) -> None:
    expected = {name[len(TOP_FOLDER) + 1 :]: data for name, data in market_entries().items()}
    got = {
        str(p.relative_to(dataset)): p.read_bytes()
        for p in dataset.rglob("*")
        if p.is_file() and p.name not in (MARKER_NAME, OUTPUT_MARKER_FILE)
    }
    assert got == expected
    assert (dataset / OUTPUT_MARKER_FILE).is_file()  # a later download may replace it
    assert f'"md5": "{md5}"' in (dataset / MARKER_NAME).read_text()


def _serve(server, zip_path: Path, behaviour: str = "normal") -> str:
    server.files["/m.zip"] = zip_path.read_bytes()
    server.behaviour["/m.zip"] = behaviour
    return server.url + "/m.zip"


def test_happy_path_downloads_verifies_extracts_and_keeps_archive(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    lines: list[str] = []
    result = fetch_dataset(_params(tmp_path, md5, [url]), progress_every=4096, log=lines.append)
    assert result.source == url and not result.reused and result.md5 == md5
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)
    assert _leftovers(tmp_path) == [TOP_FOLDER, ARCHIVE_NAME]
    assert file_md5(tmp_path / "data" / ARCHIVE_NAME) == md5
    assert any("MiB" in line for line in lines), lines
    assert server.requests == [("/m.zip", None)]


def test_interrupted_download_resumes_with_range(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path, "drop_first")
    fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert server.requests == [("/m.zip", None), ("/m.zip", f"bytes={DROP_AFTER}-")]
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)


def test_partial_file_from_previous_run_is_continued(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / (ARCHIVE_NAME + ".part")).write_bytes(zip_path.read_bytes()[:1234])
    fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert server.requests == [("/m.zip", "bytes=1234-")]
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)
    assert _leftovers(tmp_path) == [TOP_FOLDER, ARCHIVE_NAME]


@pytest.mark.parametrize(
    "behaviour, part, requests",
    [
        ("ignore_range", 1234, ["bytes=1234-"]),  # 200 instead of 206: body rewritten from 0
        ("wrong_range", 1234, ["bytes=1234-", None]),  # 206 from the wrong offset: start over
        ("normal", 10**6, ["bytes=1000000-", None]),  # .part longer than the file: 416, start over
    ],
)
def test_server_not_honouring_range_restarts_cleanly(
    tmp_path, server, market_zip, behaviour, part, requests
):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path, behaviour)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / (ARCHIVE_NAME + ".part")).write_bytes(b"\xff" * part)
    fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert [r for _, r in server.requests] == requests
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    with pytest.raises(ReidpipeError, match=rf"{re.escape(url)}: MD5 {md5}.*expected 0{{32}}"):
        fetch_dataset(_params(tmp_path, "0" * 32, [url]), log=lambda _: None)
    assert _leftovers(tmp_path) == []


def test_allow_unknown_checksum_accepts_and_logs(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    lines: list[str] = []
    result = fetch_dataset(
        _params(tmp_path, "0" * 32, [url], allow_unknown_checksum=True), log=lines.append
    )
    assert result.md5 == md5
    assert any("WARNING" in line and md5 in line for line in lines), lines
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)


def test_existing_valid_dataset_is_reused_without_http(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    (tmp_path / "data" / ARCHIVE_NAME).unlink()
    server.requests.clear()
    result = fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert result.reused and server.requests == []
    # the same archive given locally is recognised by its MD5 too
    assert fetch_dataset(_params(tmp_path, md5, [url]), archive=zip_path, log=lambda _: None).reused


def test_kept_archive_is_extracted_again_without_http(tmp_path, server, market_zip):
    zip_path, md5 = market_zip
    url = _serve(server, zip_path)
    fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    (tmp_path / "data" / TOP_FOLDER / MARKER_NAME).unlink()
    server.requests.clear()
    # A complete folder download did not make is the user's: used where it lies, never replaced
    held = fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert held.reused and server.requests == []
    assert not (tmp_path / "data" / TOP_FOLDER / MARKER_NAME).exists()
    assert (tmp_path / "data" / TOP_FOLDER / "readme.txt").exists()  # user data not touched
    shutil.rmtree(tmp_path / "data" / TOP_FOLDER)
    result = fetch_dataset(_params(tmp_path, md5, [url]), log=lambda _: None)
    assert result.source == str(tmp_path / "data" / ARCHIVE_NAME) and server.requests == []
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)


def test_all_urls_down_lists_each_url_and_where_to_put_the_zip(tmp_path, server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/m.zip"
    missing = server.url + "/missing.zip"
    with pytest.raises(ReidpipeError) as err:
        fetch_dataset(_params(tmp_path, "0" * 32, [closed, missing]), log=lambda _: None)
    text = str(err.value)
    assert f"{closed}: cannot connect" in text and f"{missing}: HTTP Error 404" in text
    assert "--archive PATH" in text and "data.archive_path" in text
    assert _leftovers(tmp_path) == []


def _publish(monkeypatch, md5: str, urls: list[str]) -> None:
    """Make ``md5`` and ``urls`` Market-1501's published MD5 and mirrors for one test."""
    monkeypatch.setitem(
        SOURCES,
        "market1501",
        dataclasses.replace(SOURCES["market1501"], archive_md5=md5, urls=tuple(urls)),
    )


def test_empty_md5_and_urls_fall_back_to_the_published_ones(
    tmp_path, server, market_zip, monkeypatch
):
    """data.md5 / data.urls empty: the source's published MD5 and mirrors (for Market-1501 the
    ones the public loaders record), each overridden by a value set."""
    assert SOURCES["market1501"].archive_md5 == ARCHIVE_MD5 == "65005ab7d12ec1c44de4eeafe813e68a"
    assert SOURCES["market1501"].urls == MIRRORS
    zip_path, md5 = market_zip
    mirror = _serve(server, zip_path)
    server.files["/own.zip"] = zip_path.read_bytes()
    quiet = lambda _: None  # noqa: E731

    _publish(monkeypatch, "f" * 32, [mirror])  # the published MD5 is enforced
    with pytest.raises(ReidpipeError, match=rf"{re.escape(mirror)}: MD5 {md5}.*expected f{{32}}"):
        fetch_dataset(_params(tmp_path, ""), log=quiet)
    assert server.requests == [("/m.zip", None)] and _leftovers(tmp_path) == []

    server.requests.clear()  # data.md5 and data.urls win over the published ones
    result = fetch_dataset(_params(tmp_path, md5, [server.url + "/own.zip"]), log=quiet)
    assert result.source == server.url + "/own.zip" and server.requests == [("/own.zip", None)]

    shutil.rmtree(tmp_path / "data")
    _publish(monkeypatch, md5, [mirror])
    server.requests.clear()
    result = fetch_dataset(_params(tmp_path, ""), log=quiet)
    assert (result.source, result.md5) == (mirror, md5) and server.requests == [("/m.zip", None)]
    _assert_dataset(tmp_path / "data" / TOP_FOLDER, md5)


def test_md5_is_checked_before_anything_is_extracted(tmp_path, market_zip, monkeypatch):
    """An archive of the wrong MD5 is never unpacked: not one given as data.archive_path, nor
    the copy kept next to the dataset folder (fetched again instead, here from no mirror)."""
    zip_path, md5 = market_zip
    _publish(monkeypatch, "0" * 32, [])
    lines: list[str] = []
    with pytest.raises(
        ReidpipeError,
        match=rf"{re.escape(str(zip_path))} has MD5 {md5}, "
        r"expected 0{32}",
    ):
        fetch_dataset(_params(tmp_path, "", archive_path=str(zip_path)), log=lines.append)
    assert _leftovers(tmp_path) == []

    kept = tmp_path / "data" / ARCHIVE_NAME
    kept.parent.mkdir()
    shutil.copy(zip_path, kept)
    with pytest.raises(ReidpipeError, match="no archive and no download mirror"):
        fetch_dataset(_params(tmp_path, ""), log=lines.append)
    assert f"kept archive {kept} has MD5 {md5}, expected {'0' * 32}: downloading it again" in lines
    assert _leftovers(tmp_path) == [ARCHIVE_NAME]
    assert not [line for line in lines if line.startswith("extracting")]


def _archive_case(tmp_path: Path, name: str, **build) -> tuple[Path, str]:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    return path, build_zip(path, **build)


def _link_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    "extra, message",
    [
        ({f"{TOP_FOLDER}/../evil.txt": b"x"}, r"'\.\.'"),
        ({"/etc/evil.txt": b"x"}, "absolute path"),
        (
            [(_link_info(f"{TOP_FOLDER}/query/link", stat.S_IFLNK | 0o777), b"/etc/passwd")],
            "symbolic link",
        ),
        ([(_link_info(f"{TOP_FOLDER}/query/fifo", stat.S_IFIFO | 0o644), b"")], "special file"),
        ({f"{TOP_FOLDER}/zeros.bin": bytes(2 << 20)}, "zip bomb"),
    ],
)
def test_unsafe_entries_are_refused(tmp_path, extra, message):
    if isinstance(extra, dict):
        path, md5 = _archive_case(tmp_path, "bad.zip", entries={**market_entries(), **extra})
    else:
        path, md5 = _archive_case(tmp_path, "bad.zip", extra=extra)
    with pytest.raises(ReidpipeError, match=message):
        fetch_dataset(_params(tmp_path, md5), archive=path, log=lambda _: None)
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "evil.txt").exists()


def test_total_size_bound_is_enforced(tmp_path):
    path, md5 = _archive_case(tmp_path, "m.zip")
    with pytest.raises(ReidpipeError, match="data.max_extract_bytes = 10000"):
        fetch_dataset(
            _params(tmp_path, md5, max_extract_bytes=10_000), archive=path, log=lambda _: None
        )
    assert _leftovers(tmp_path) == []


def test_truncated_zip_fails_clearly_and_leaves_nothing(tmp_path, market_zip):
    zip_path, _ = market_zip
    truncated = tmp_path / "src" / "truncated.zip"
    truncated.write_bytes(zip_path.read_bytes()[:-4000])
    with pytest.raises(ReidpipeError, match="corrupt or truncated"):
        fetch_dataset(_params(tmp_path, file_md5(truncated)), archive=truncated, log=lambda _: None)
    assert _leftovers(tmp_path) == []


def test_corrupt_entry_midway_removes_the_partial_extraction(tmp_path, market_zip):
    zip_path, _ = market_zip
    raw = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        last = zf.infolist()[-1]
    body = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
    raw[body + 200 : body + 260] = bytes(60)  # damage the last image after others were written
    corrupt = tmp_path / "src" / "corrupt.zip"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ReidpipeError, match="corrupt or truncated"):
        fetch_dataset(_params(tmp_path, file_md5(corrupt)), archive=corrupt, log=lambda _: None)
    assert _leftovers(tmp_path) == []


def test_stale_temp_dir_of_a_killed_run_is_removed(tmp_path, market_zip):
    zip_path, md5 = market_zip
    stale = tmp_path / "data" / f".{TOP_FOLDER}.tmp-dead"
    (stale / "query").mkdir(parents=True)
    fetch_dataset(_params(tmp_path, md5), archive=zip_path, log=lambda _: None)
    assert _leftovers(tmp_path) == [TOP_FOLDER]  # and the local archive is not copied


def _cli_params(tmp_path: Path, text: str) -> list[str]:
    override = tmp_path / "override.yaml"
    override.write_text(text)
    return ["--params", str(REPO_PARAMS), str(override)]


def test_cli_archive_and_url_overrides(tmp_path, server, market_zip, capsys):
    zip_path, md5 = market_zip
    params = _cli_params(tmp_path, f"data:\n  md5: {md5}\n  urls: [http://127.0.0.1:9/x]\n")
    out = tmp_path / "out" / "market"
    assert main(["download", *params, "--archive", str(zip_path), "--out", str(out)]) == 0
    _assert_dataset(out, md5)
    assert "extracted" in capsys.readouterr().err
    url = _serve(server, zip_path)
    out2 = tmp_path / "out2" / "market"
    assert main(["download", *params, "--url", url, "--out", str(out2)]) == 0
    assert server.requests == [("/m.zip", None)]
    _assert_dataset(out2, md5)


def test_synthetic_source_generates_the_dataset(tmp_path, capsys):
    params = _cli_params(
        tmp_path, "data:\n  source: synthetic\n  synthetic_ids: 6\n  strict: false\n"
    )
    assert main(["download", *params, "--out", str(tmp_path / "x")]) == 0
    assert dataset_source("market1501").is_present(tmp_path / "x")
    assert (
        main(["download", *params, "--out", str(tmp_path / "y"), "--url", "http://127.0.0.1:9/"])
        == 2
    )
    assert "data.source is 'synthetic'" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_malformed_url_is_listed_not_a_traceback(tmp_path):
    data = DataParams(dataset_dir=str(tmp_path / "ds"), urls=["example.invalid/no-scheme.zip"])
    with pytest.raises(ReidpipeError, match="no-scheme.zip: not a usable URL"):
        fetch_dataset(data)


def test_datasets_without_a_mirror_say_how_to_obtain_them_and_where_to_put_them(tmp_path):
    for source, words, archive in (
        ("dukemtmc", "withdrawn", "DukeMTMC-reID.zip"),
        ("msmt17", "on request", "MSMT17_V1.zip"),
        ("cuhk03", "zhunzhong07", "cuhk03-np.zip"),
    ):
        data = DataParams(source=source, dataset_dir=str(tmp_path / "data" / source))
        with pytest.raises(ReidpipeError) as err:
            fetch_dataset(data, log=lambda _: None)
        text = str(err.value)
        assert words in text and str(tmp_path / "data" / archive) in text, text
        assert "--archive PATH" in text and "data.urls" in text
    assert _leftovers(tmp_path) == []


def test_archive_without_published_checksum_is_accepted_and_recorded(tmp_path):
    """DukeMTMC-reID has no published MD5: any archive in its layout is taken, its MD5 kept."""
    entries = {
        f"DukeMTMC-reID/{folder}/0001_c{cam}_f0000{cam}01.jpg": _jpeg(cam)
        for folder, cam in (("bounding_box_train", 1), ("query", 2), ("bounding_box_test", 3))
    }
    path, md5 = _archive_case(tmp_path, "DukeMTMC-reID.zip", entries=entries)
    lines: list[str] = []
    data = DataParams(source="dukemtmc", dataset_dir=str(tmp_path / "data" / "DukeMTMC-reID"))
    result = fetch_dataset(data, archive=path, log=lines.append)
    assert result.md5 == md5 and any("no published MD5" in line for line in lines)
    assert f'"md5": "{md5}"' in (result.dataset_dir / MARKER_NAME).read_text()
    # The Market-1501 archive is not an MSMT17 one: the layout check says what is expected.
    market, _ = _archive_case(tmp_path, "m.zip")
    with pytest.raises(ReidpipeError, match="MSMT17 layout: expected train/ and test/"):
        fetch_dataset(
            DataParams(source="msmt17", dataset_dir=str(tmp_path / "d2")),
            archive=market,
            log=lambda _: None,
        )


def test_archive_may_be_a_dataset_folder(tmp_path):
    folder = tmp_path / "src" / "msmt"
    for sub in ("train", "test"):
        (folder / sub / "0000").mkdir(parents=True)
    (folder / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg").write_bytes(_jpeg(1))
    for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        (folder / name).write_text(
            "0000/0000_000_01_0303morning_0015_0.jpg 0\n" if name == "list_train.txt" else ""
        )
    target = tmp_path / "data" / "MSMT17_V1"
    data = DataParams(source="msmt17", dataset_dir=str(target))
    result = fetch_dataset(data, archive=folder, log=lambda _: None)
    assert not result.reused
    copied = target / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg"
    assert copied.read_bytes() == _jpeg(1)
    assert fetch_dataset(data, archive=folder, log=lambda _: None).reused
    with pytest.raises(ReidpipeError, match="not an MSMT17 folder|mask_train_v2"):
        fetch_dataset(
            DataParams(source="msmt17", dataset_dir=str(tmp_path / "x")),
            archive=tmp_path / "src",
            log=lambda _: None,
        )


def test_custom_dataset_is_used_where_it_lies(tmp_path):
    folder = tmp_path / "mine"
    for sub in ("train", "query", "test"):
        (folder / sub).mkdir(parents=True)
    data = DataParams(
        source="custom",
        dataset_dir=str(folder),
        split_dirs={"train": "train", "query": "query", "gallery": "test"},
    )
    result = fetch_dataset(data, log=lambda _: None)
    assert result.reused and result.dataset_dir == folder
    with pytest.raises(ReidpipeError, match="custom dataset .* expected bounding_box_train/"):
        fetch_dataset(
            DataParams(source="custom", dataset_dir=str(tmp_path / "none")), log=lambda _: None
        )
