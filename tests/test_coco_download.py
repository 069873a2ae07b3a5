"""COCO download: resume, verification, unpacking and offline errors against a local HTTP server.

Every archive is a tiny fake zip built here with its real size and MD5, served by a
ThreadingHTTPServer on 127.0.0.1 that honours Range requests and can be told to drop the
connection after N bytes, ignore Range, or serve corrupted bytes. No test touches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from captioner import coco_download
from captioner.coco_download import COCO_FILES, DownloadError, check_coco, download_coco, format_check
from captioner.coco_download import unpack as unpacking
from captioner.coco_download.archives import human_size

TRAIN_IMAGES = ("COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.jpg")
VAL_IMAGES = ("COCO_val2014_000000000042.jpg", "COCO_val2014_000000000073.jpg", "COCO_val2014_000000000074.jpg")
# Karpathy split of the fake world: both train images in train, the val images one per other split.
SPLITS = {TRAIN_IMAGES[0]: "train", TRAIN_IMAGES[1]: "train", VAL_IMAGES[0]: "restval",
          VAL_IMAGES[1]: "val", VAL_IMAGES[2]: "test"}
FAKE_IMAGE_COUNTS = {"train2014": 2, "val2014": 3}
FAKE_SPLIT_COUNTS = {"train": 2, "restval": 1, "val": 1, "test": 1}


# --------------------------------------------------------------------------- fake archives

def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _captions(names: tuple[str, ...]) -> str:
    images = [{"id": int(name[-16:-4]), "file_name": name} for name in names]
    annotations = [{"id": i, "image_id": image["id"], "caption": "a small square"} for i, image in enumerate(images)]
    return json.dumps({"images": images, "annotations": annotations})


def _split_file() -> str:
    images = [{"filepath": name.split("_")[1], "filename": name, "split": split, "cocoid": int(name[-16:-4]),
               "sentences": [{"raw": "a small square", "tokens": ["a", "small", "square"]}]}
              for name, split in SPLITS.items()]
    return json.dumps({"images": images, "dataset": "coco"})


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """Fake versions of the four archives, laid out like the real ones."""
    return {
        "annotations_trainval2014.zip": _zip({
            "annotations/captions_train2014.json": _captions(TRAIN_IMAGES),
            "annotations/captions_val2014.json": _captions(VAL_IMAGES)}),
        # Nested in a folder, with a file we do not want: the table flattens only the JSON files.
        "caption_datasets.zip": _zip({"caption_datasets/dataset_coco.json": _split_file(),
                                      "caption_datasets/readme.txt": "not wanted"}),
        "val2014.zip": _zip({"val2014/": b"", **{f"val2014/{n}": _jpeg((0, 0, 200)) for n in VAL_IMAGES}}),
        "train2014.zip": _zip({f"train2014/{n}": _jpeg((200, 0, 0)) for n in TRAIN_IMAGES}),
    }


def _table(archives: dict[str, bytes], base_url: str, **overrides: bytes) -> dict[str, coco_download.CocoFile]:
    """The real table with URLs on `base_url` and the fake files' true sizes and hashes.

    caption_datasets.zip stays unverified, as in the real table; annotations also gets a SHA-256.
    """
    table = {}
    for name, entry in COCO_FILES.items():
        data = overrides.get(name, archives[name])
        url = base_url + entry.url.split("/", 3)[3]  # same path as the real host
        known = name != "caption_datasets.zip"
        table[name] = dataclasses.replace(
            entry, url=url, size=len(data) if known else None, md5=hashlib.md5(data).hexdigest() if known else None,
            sha256=hashlib.sha256(data).hexdigest() if name == "annotations_trainval2014.zip" else None)
    return table


# --------------------------------------------------------------------------- fake server

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        fake: FakeServer = self.server.fake
        name = self.path.rsplit("/", 1)[-1]
        wanted = self.headers.get("Range")
        with fake.lock:
            fake.requests.append((self.path, wanted))
            data = fake.files.get(name)
            if data is not None and fake.corrupt.get(name, 0) > 0:
                fake.corrupt[name] -= 1
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]  # same size, wrong bytes
            cut = fake.cut_after.pop(name, None)
        if data is None:
            self.send_error(404)
            return
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and not fake.ignore_range else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body if cut is None else body[:cut])  # then the connection closes: a broken transfer

    def log_message(self, *args) -> None:
        pass


class FakeServer:
    """Knobs: `cut_after[name]` bytes then drop (once), `corrupt[name]` corrupted answers, `ignore_range`."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.ignore_range = False
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests_for(self, name: str) -> list[str | None]:
        """The Range header (or None) of each request for `name`."""
        return [wanted for path, wanted in self.requests if path.endswith("/" + name)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archives):
    fake = FakeServer(archives)
    yield fake
    fake.close()


@pytest.fixture
def table(archives, server):
    return _table(archives, server.url)


@pytest.fixture
def dead_url():
    """A URL on a local port nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _download(root: Path, table, **kwargs):
    logs: list[str] = []
    report = download_coco(root, table=table, progress=kwargs.pop("progress", False), log=logs.append, **kwargs)
    return report, logs


def _leftovers(root: Path) -> list[str]:
    """Partial downloads and unpacking folders: what an interrupted run may leave."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".partial") or p.name.startswith(".unpacking-"))


# --------------------------------------------------------------------------- tests

def test_full_download_unpacks_the_coco_layout_and_check_reports_it(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    report, logs = _download(root, table)

    for name, data in archives.items():
        assert (root / "downloads" / name).read_bytes() == data
        assert (root / "downloads" / f"{name}.unpacked").is_file()
        assert report["files"][name]["status"] == "downloaded"
    assert sorted(p.name for p in (root / "train2014").iterdir()) == sorted(TRAIN_IMAGES)
    assert sorted(p.name for p in (root / "val2014").iterdir()) == sorted(VAL_IMAGES)
    assert json.loads((root / "annotations" / "captions_val2014.json").read_text())["images"][0]["id"] == 42
    assert json.loads((root / "dataset_coco.json").read_text())["dataset"] == "coco"
    assert not (root / "readme.txt").exists() and not (root / "caption_datasets").exists()  # flattened, filtered
    assert _leftovers(root) == []

    verification = {name: line["verification"] for name, line in report["files"].items()}
    assert verification["val2014.zip"] == {"size": "ok", "md5": "ok",
                                           "sha256": "unverified (no published checksum)"}
    assert verification["annotations_trainval2014.zip"] == {"size": "ok", "md5": "ok", "sha256": "ok"}
    assert verification["caption_datasets.zip"]["md5"] == "unverified (no published checksum)"
    assert any("caption_datasets.zip: downloaded; size unverified" in line for line in logs)

    check = report["check"]
    assert {k: v["count"] for k, v in check["images"].items()} == FAKE_IMAGE_COUNTS
    assert check["images"]["train2014"]["expected"] == 82_783 and check["images"]["val2014"]["expected"] == 40_504
    assert all(check["captions"].values())
    assert check["split_file"]["splits"] == FAKE_SPLIT_COUNTS
    assert check["split_file"]["missing_images"] == 0
    assert check["complete"] is False  # a fake world is not the real COCO
    text = format_check(check)
    assert "INCOMPLETE" in text and "expected 82,783" in text and "restval 1 (expected 30,504)" in text

    matching = check_coco(root, expected_images=FAKE_IMAGE_COUNTS, expected_splits=FAKE_SPLIT_COUNTS)
    assert matching["complete"] is True
    assert "complete" in format_check(matching).splitlines()[0]


def test_present_files_are_not_fetched_again(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    _download(root, table)
    first = len(server.requests)
    assert first == 4

    report, _ = _download(root, table)
    assert len(server.requests) == first
    assert {line["status"] for line in report["files"].values()} == {"already unpacked"}

    # Archives deleted after unpacking to save space: still nothing to fetch.
    for name in archives:
        (root / "downloads" / name).unlink()
    _download(root, table)
    assert len(server.requests) == first

    # A folder deleted by hand is restored, fetching only its own archive.
    for image in (root / "val2014").iterdir():
        image.unlink()
    (root / "val2014").rmdir()
    _download(root, table)
    assert [path for path, _ in server.requests[first:]] == ["/zips/val2014.zip"]
    assert len(list((root / "val2014").iterdir())) == 3

    # A file placed by hand in downloads/ is verified and unpacked, not fetched.
    other = tmp_path / "other"
    (other / "downloads").mkdir(parents=True)
    (other / "downloads" / "train2014.zip").write_bytes(archives["train2014.zip"])
    count = len(server.requests)
    report, _ = _download(other, table, files=["train2014.zip"])
    assert len(server.requests) == count
    assert report["files"]["train2014.zip"]["status"] == "already present"
    assert report["files"]["train2014.zip"]["verification"]["md5"] == "ok"
    assert len(list((other / "train2014").iterdir())) == 2


def test_interrupted_download_leaves_only_a_partial_and_resumes_with_range(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    data = archives["val2014.zip"]
    server.cut_after["val2014.zip"] = 100
    with pytest.raises(DownloadError) as caught:
        _download(root, table, files=["val2014.zip"], resume_attempts=0)
    message = str(caught.value)
    assert "val2014.zip" in message and "val2014.zip.partial" in message and "resumes" in message

    # Nothing half-written: no final archive, no unpacked folder, only the true prefix in .partial.
    downloads = root / "downloads"
    assert not (downloads / "val2014.zip").exists()
    assert not (root / "val2014").exists()
    assert (downloads / "val2014.zip.partial").read_bytes() == data[:100]

    report, logs = _download(root, table, files=["val2014.zip"])
    assert server.requests_for("val2014.zip") == [None, "bytes=100-"]
    assert (downloads / "val2014.zip").read_bytes() == data
    assert not (downloads / "val2014.zip.partial").exists()
    assert report["files"]["val2014.zip"]["verification"]["md5"] == "ok"
    assert any("resuming" in line for line in logs)
    assert len(list((root / "val2014").iterdir())) == 3


def test_a_broken_transfer_is_resumed_within_the_same_run(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    server.cut_after["train2014.zip"] = 200
    _, logs = _download(root, table, files=["train2014.zip"], progress=True)  # bars drawn to stderr too
    assert server.requests_for("train2014.zip") == [None, "bytes=200-"]
    assert (root / "downloads" / "train2014.zip").read_bytes() == archives["train2014.zip"]
    assert any("transfer broke" in line for line in logs)


def test_a_server_ignoring_range_restarts_from_zero(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "val2014.zip.partial").write_bytes(b"x" * 50)  # not even a true prefix
    server.ignore_range = True
    _download(root, table, files=["val2014.zip"])
    assert server.requests_for("val2014.zip") == ["bytes=50-"]  # answered 200: whole file, rewritten
    assert (root / "downloads" / "val2014.zip").read_bytes() == archives["val2014.zip"]


def test_a_whole_partial_left_before_its_rename_is_accepted(tmp_path, server, table, archives):
    # Killed between the last byte and the rename; size unpublished, so the server's 416 tells.
    root = tmp_path / "coco"
    (root / "downloads").mkdir(parents=True)
    data = archives["caption_datasets.zip"]
    (root / "downloads" / "caption_datasets.zip.partial").write_bytes(data)
    _download(root, table, files=["caption_datasets.zip"])
    assert server.requests_for("caption_datasets.zip") == [f"bytes={len(data)}-"]
    assert (root / "downloads" / "caption_datasets.zip").read_bytes() == data
    assert (root / "dataset_coco.json").is_file()


def test_corrupted_download_is_detected_and_fetched_again(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    server.corrupt["val2014.zip"] = 1
    report, logs = _download(root, table, files=["val2014.zip"])
    assert len(server.requests_for("val2014.zip")) == 2
    assert (root / "downloads" / "val2014.zip").read_bytes() == archives["val2014.zip"]
    assert any("val2014.zip failed verification (md5 expected" in line for line in logs)
    assert report["files"]["val2014.zip"]["verification"]["md5"] == "ok"


def test_a_file_corrupt_twice_is_an_error_naming_it_and_nothing_stays(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    server.corrupt["val2014.zip"] = 5
    with pytest.raises(DownloadError) as caught:
        _download(root, table, files=["val2014.zip"])
    expected_md5 = hashlib.md5(archives["val2014.zip"]).hexdigest()
    assert "val2014.zip" in str(caught.value) and f"md5 expected {expected_md5}, got " in str(caught.value)
    assert len(server.requests_for("val2014.zip")) == 2
    assert list((root / "downloads").iterdir()) == []


def test_a_corrupt_file_placed_by_hand_is_replaced(tmp_path, server, table, archives):
    root = tmp_path / "coco"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "val2014.zip").write_bytes(b"\0" * len(archives["val2014.zip"]))
    _download(root, table, files=["val2014.zip"])
    assert len(server.requests_for("val2014.zip")) == 1
    assert (root / "downloads" / "val2014.zip").read_bytes() == archives["val2014.zip"]


def test_offline_fails_fast_saying_which_files_to_place_where(tmp_path, archives, dead_url, monkeypatch):
    root = tmp_path / "coco"
    table = _table(archives, dead_url)
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "annotations_trainval2014.zip").write_bytes(archives["annotations_trainval2014.zip"])
    attempts = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *args, **kwargs: attempts.append(args) or real_urlopen(*args, **kwargs))

    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        _download(root, table)
    assert time.monotonic() - started < 3
    assert len(attempts) == 1  # one refused connection is enough to know the host is down

    message = str(caught.value)
    host = dead_url.split("/")[2]
    assert f"cannot reach {host} (Connection refused)" in message
    assert f"put them in {root.resolve() / 'downloads'}/" in message
    for name in ("caption_datasets.zip", "val2014.zip", "train2014.zip"):
        assert f"{name} (" in message and f"{dead_url}" in message
    size = human_size(len(archives["val2014.zip"]))
    assert f"val2014.zip ({size}) from {dead_url}zips/val2014.zip" in message
    assert "caption_datasets.zip (size not published)" in message
    assert "then run the command again" in message
    assert "Already present: annotations_trainval2014.zip" in message
    assert (root / "annotations" / "captions_train2014.json").is_file()  # what was there got unpacked
    assert _leftovers(root) == []


def test_a_host_that_never_answers_times_out_quickly(tmp_path, archives):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        table = _table(archives, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ \(timed out\)"):
            _download(tmp_path / "coco", table, files=["val2014.zip", "train2014.zip"], timeout=0.5)
        assert time.monotonic() - started < 3  # one timeout, not one per file


def test_interrupted_unpacking_leaves_no_partial_folder_and_reruns_cleanly(tmp_path, server, table, archives,
                                                                          monkeypatch):
    root = tmp_path / "coco"
    real_extract = unpacking._extract_member
    calls = []

    def interrupted(archive, info, target):
        calls.append(info.filename)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_extract(archive, info, target)

    monkeypatch.setattr(unpacking, "_extract_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _download(root, table, files=["val2014.zip"])
    assert not (root / "val2014").exists()
    assert not (root / "downloads" / "val2014.zip.unpacked").exists()
    assert (root / "downloads" / "val2014.zip").read_bytes() == archives["val2014.zip"]  # verified, kept
    assert _leftovers(root) == []

    # A run killed outright leaves its temporary folder behind; the next run removes it.
    stale = root / ".unpacking-val2014.zip-killed" / "val2014"
    stale.mkdir(parents=True)
    (stale / VAL_IMAGES[0]).write_bytes(b"half a jpeg")
    monkeypatch.setattr(unpacking, "_extract_member", real_extract)
    requests = len(server.requests)
    _download(root, table, files=["val2014.zip"])
    assert len(server.requests) == requests
    assert _leftovers(root) == []
    for name in VAL_IMAGES:
        assert (root / "val2014" / name).read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.parametrize("mirror_kind", ["folder", "file-url"])
def test_mirror_as_a_local_folder(tmp_path, archives, dead_url, mirror_kind):
    folder = tmp_path / "lab mirror"
    folder.mkdir()
    for name, data in archives.items():
        (folder / name).write_bytes(data)
    mirror = str(folder) if mirror_kind == "folder" else folder.as_uri()
    report, _ = _download(tmp_path / "coco", _table(archives, dead_url), mirror=mirror)  # the hosts are down
    assert {line["status"] for line in report["files"].values()} == {"downloaded"}
    assert report["files"]["val2014.zip"]["source"] == str(folder / "val2014.zip")
    assert report["check"]["split_file"]["splits"] == FAKE_SPLIT_COUNTS


def test_mirror_as_a_base_url_replaces_both_hosts(tmp_path, server, archives, dead_url):
    _download(tmp_path / "coco", _table(archives, dead_url), mirror=server.url + "coco/")
    assert sorted(path for path, _ in server.requests) == sorted(f"/coco/{name}" for name in archives)


def test_mirror_errors_name_the_folder_and_the_file(tmp_path, archives, dead_url):
    with pytest.raises(DownloadError, match="mirror folder .*nowhere does not exist"):
        _download(tmp_path / "coco", _table(archives, dead_url), mirror=str(tmp_path / "nowhere"))
    folder = tmp_path / "mirror"
    folder.mkdir()
    with pytest.raises(DownloadError, match=r"mirror folder .*mirror has no val2014\.zip"):
        _download(tmp_path / "coco", _table(archives, dead_url), mirror=str(folder), files=["val2014.zip"])


@pytest.mark.parametrize("member", ["../evil.txt", "val2014/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt",
                                    "..\\evil.txt", "downloads/val2014.zip"])
def test_unsafe_archive_members_are_rejected_before_anything_is_written(tmp_path, archives, dead_url, member):
    hostile = _zip({f"val2014/{VAL_IMAGES[0]}": _jpeg((1, 2, 3)), member: "gotcha"})
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "val2014.zip").write_bytes(hostile)
    root = tmp_path / "data" / "coco"
    table = _table(archives, dead_url, **{"val2014.zip": hostile})
    with pytest.raises(DownloadError, match="refusing to unpack member") as caught:
        _download(root, table, mirror=str(folder), files=["val2014.zip"])
    assert "val2014.zip" in str(caught.value) and repr(member) in str(caught.value)
    assert not (root / "val2014").exists() and not (root / "downloads" / "val2014.zip.unpacked").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    assert (root / "downloads" / "val2014.zip").read_bytes() == hostile  # the download itself is untouched
    assert _leftovers(root) == []


def test_a_non_zip_download_is_deleted_with_a_clear_error(tmp_path, archives, dead_url):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "caption_datasets.zip").write_bytes(b"<html>Moved</html>")  # unverified file: only unzip can tell
    root = tmp_path / "coco"
    with pytest.raises(DownloadError, match=r"caption_datasets\.zip is not a readable zip archive"):
        _download(root, _table(archives, dead_url), mirror=str(folder), files=["caption_datasets.zip"])
    assert not (root / "downloads" / "caption_datasets.zip").exists()


def test_check_on_an_empty_or_broken_folder(tmp_path):
    report = check_coco(tmp_path)
    assert report["complete"] is False
    assert report["images"]["train2014"] == {"present": False, "count": 0, "expected": 82_783, "ok": False}
    assert not any(report["captions"].values()) and report["split_file"]["present"] is False
    assert format_check(report).count("missing") == 5

    (tmp_path / "dataset_coco.json").write_text("{not json")
    report = check_coco(tmp_path)
    assert report["split_file"]["error"].startswith("unreadable: JSONDecodeError")
    assert "unreadable" in format_check(report)


def test_unknown_file_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown COCO file.*val2017.zip.*known: annotations_trainval2014.zip"):
        download_coco(tmp_path, files=["val2017.zip"], progress=False)


def test_sizes_in_messages_read_like_the_coco_site():
    sizes = {name: human_size(entry.size) for name, entry in COCO_FILES.items()}
    assert sizes == {"train2014.zip": "13.5 GB", "val2014.zip": "6.6 GB", "annotations_trainval2014.zip": "252.9 MB",
                     "caption_datasets.zip": "size not published"}


def test_the_published_table_points_at_the_official_hosts():
    assert list(COCO_FILES) == ["annotations_trainval2014.zip", "caption_datasets.zip", "val2014.zip", "train2014.zip"]
    for name, entry in COCO_FILES.items():
        assert entry.url.endswith("/" + name)
        assert entry.md5 is None or (len(entry.md5) == 32 and int(entry.md5, 16) >= 0)
    assert COCO_FILES["train2014.zip"].url == "http://images.cocodataset.org/zips/train2014.zip"
    assert COCO_FILES["annotations_trainval2014.zip"].url.startswith("http://images.cocodataset.org/annotations/")
    assert COCO_FILES["caption_datasets.zip"].md5 is None and COCO_FILES["caption_datasets.zip"].size is None
    provided = {path for entry in COCO_FILES.values() for path in entry.provides}
    assert provided == {"train2014", "val2014", "dataset_coco.json", *coco_download.CAPTION_FILES}
