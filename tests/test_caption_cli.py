"""`captioner caption` over a real-world folder: every mode captioned, every broken file reported."""

import csv
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from captioner.batch import ResultWriter, expand_inputs, image_id
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.cli.caption import Tally
from captioner.data.shapes import parse_caption
from captioner.inference import CaptionResult
from captioner.vocab import Vocabulary

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OBJECTS = json.loads((EXAMPLES / "objects.json").read_text())


def bomb_png() -> bytes:
    """A valid 1x1 PNG whose header claims 20000x20000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, 20000, 20000)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Example images saved in many formats and modes, plus broken files, in two levels."""
    root = tmp_path_factory.mktemp("photos")
    source = Image.open(EXAMPLES / "shapes_5.jpg").convert("RGB")  # a lone yellow triangle
    good = {
        "rgb.jpg": lambda p: source.save(p, quality=92),
        "rgba.png": lambda p: source.convert("RGBA").save(p),
        "palette.gif": lambda p: source.quantize(64).save(p),
        "webp.webp": lambda p: source.save(p, quality=95),
        "bitmap.bmp": lambda p: source.save(p),
        "tiff.tiff": lambda p: source.save(p),
        "cmyk.jpg": lambda p: source.convert("CMYK").save(p, quality=95),
        "sub/nested.png": lambda p: source.save(p),
    }
    for name, save in good.items():
        (root / name).parent.mkdir(exist_ok=True)
        save(root / name)
    truncated = (EXAMPLES / "shapes_1.jpg").read_bytes()
    broken = {
        "empty.jpg": b"",
        "truncated.jpg": truncated[: len(truncated) // 3],
        "notes.jpg": b"these are not pixels\n" * 20,
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
        "bomb.png": bomb_png(),
    }
    for name, data in broken.items():
        (root / name).write_bytes(data)
    (root / "readme.txt").write_text("not an image suffix: skipped when listing the folder")
    return root, {n for n in good if "/" not in n}, set(broken)


def run(*args, check_code=None):
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", *map(str, args)],
                            capture_output=True, text=True)
    if check_code is not None:
        assert result.returncode == check_code, result.stderr
    return result


def test_folder_with_broken_files_jsonl(folder, tmp_path):
    root, good, broken = folder
    output = tmp_path / "out" / "captions.jsonl"
    attention = tmp_path / "attention"
    result = run(root, "--output", output, "--attention-dir", attention, "--batch-size", "4", "--quiet",
                 check_code=1)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert set(by_name) == good | broken  # not readme.txt, not sub/ without --recursive
    for name in good:
        assert parse_caption(by_name[name]["caption"]) == [("yellow", "triangle")], by_name[name]
        assert by_name[name]["score"] < 0 and "error" not in by_name[name]
        overlays = Image.open(by_name[name]["attention"])
        assert overlays.width > 224
    problems = {"empty.jpg": "0 bytes", "truncated.jpg": "truncated", "notes.jpg": "text",
                "drawing.svg": "SVG", "bomb.png": "too large"}
    for name, problem in problems.items():
        assert problem.lower() in by_name[name]["error"].lower(), by_name[name]
        assert "caption" not in by_name[name]
        assert name in result.stderr
    assert f"captioned {len(good)} of {len(good) + len(broken)} inputs, {len(broken)} failed" in result.stderr
    assert sorted(p.name for p in attention.iterdir()) == sorted(Path(n).stem + ".png" for n in good)
    assert [p.name for p in output.parent.iterdir()] == ["captions.jsonl"]  # no temporary file left


def test_recursive_glob_and_list_inputs_to_csv(folder, tmp_path):
    root, good, _ = folder
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{root / 'rgb.jpg'}\n\n{root / 'sub' / 'nested.png'}\n")
    output = tmp_path / "captions.csv"
    run(f"@{listing}", str(root / "*.png"), "--recursive", "--output", output, "--beam-size", "1",
        "--top-n", "1", "--quiet", check_code=1)  # *.png includes bomb.png
    rows = list(csv.DictReader(output.open()))
    names = [Path(r["path"]).name for r in rows]
    assert names == ["rgb.jpg", "nested.png", "bomb.png", "rgba.png"]  # in input order, nested.png once
    assert all(parse_caption(r["caption"]) == [("yellow", "triangle")] for r in rows if not r["error"])
    assert [bool(r["error"]) for r in rows] == [False, False, True, False]


def test_coco_format_feeds_evaluation_and_all_good_exits_zero(tmp_path):
    for number, name in enumerate(sorted(OBJECTS), start=1):
        shutil.copy(EXAMPLES / name, tmp_path / f"COCO_val2014_{number:012d}.jpg")
    output = tmp_path / "results.json"
    run(tmp_path, "--format", "coco", "--output", output, "--top-n", "2", "--quiet", check_code=0)
    results = json.loads(output.read_text())
    assert [r["image_id"] for r in results] == list(range(1, len(OBJECTS) + 1))
    assert all(isinstance(r["caption"], str) and r["caption"] for r in results)


def test_stdout_is_the_default_and_missing_inputs_are_reported():
    result = run(EXAMPLES / "shapes_5.jpg", "no/such/file.jpg", "no/such/*.png", "--quiet", check_code=1)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == ["no/such/*.png", str(EXAMPLES / "shapes_5.jpg"), "no/such/file.jpg"]
    assert "matched no files" in records[0]["error"] and "not found" in records[2]["error"]


def test_bad_options_are_one_line_usage_errors(tmp_path):
    for args in (["--beam-size", "0"], ["--top-n", "4", "--beam-size", "3"], ["--checkpoint", tmp_path / "x.pt"],
                 ["--device", "tpu"]):
        result = run(EXAMPLES / "shapes_5.jpg", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.startswith("error:")


def test_interrupted_run_leaves_a_valid_partial_file(tmp_path):
    images = tmp_path / "many"
    images.mkdir()
    # enough images that the run is still going when the first records reach the disk (they are
    # written in buffered blocks), on a fast machine too
    count = 2000
    for i in range(count):
        shutil.copy(EXAMPLES / "shapes_5.jpg", images / f"{i:04d}.jpg")
    output = tmp_path / "captions.jsonl"
    output.write_text("an older file that must not be half-overwritten\n")
    process = subprocess.Popen([sys.executable, "-m", "captioner", "caption", str(images), "--output", str(output),
                                "--batch-size", "8", "--num-workers", "0", "--quiet"],
                               stderr=subprocess.PIPE, text=True,
                               # a shell's background job (nohup, `&`) ignores SIGINT, and a child
                               # would inherit that; Ctrl-C in a terminal reaches a default handler
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # wait until captioning is under way (the temporary output has records), then Ctrl-C
    for _ in range(600):
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p.stat().st_size]
        if partial or process.poll() is not None:
            break
        subprocess.run(["sleep", "0.1"])
    process.send_signal(2)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert 0 < len(records) < count and all("caption" in r for r in records)
    assert "interrupted" in stderr


def test_expand_inputs_and_image_ids(tmp_path):
    (tmp_path / "a.JPG").write_bytes(b"x")
    (tmp_path / "b.txt").write_text("x")
    paths, problems = expand_inputs([str(tmp_path), str(tmp_path / "b.txt"), f"@{tmp_path / 'none.txt'}"])
    assert paths == [str(tmp_path / "a.JPG"), str(tmp_path / "b.txt")]
    assert problems[0][0].endswith("none.txt") and "list file" in problems[0][1]
    assert image_id("val2014/COCO_val2014_000000391895.jpg", None) == 391895
    assert image_id("x/cat.jpg", {"cat.jpg": 7}) == 7 and image_id("cat.jpg", None) is None


def test_writer_keeps_the_old_file_when_discarded(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    writer = ResultWriter(path, "jsonl")
    writer.write(CaptionResult(source="a.jpg", text="a red circle", score=-1.0, log_prob=-1.0))
    writer.discard()
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]


@pytest.fixture(scope="module")
def endless_checkpoint(tmp_path_factory):
    """The bundled model unable to say <end>: every caption it writes runs into --max-len."""
    payload = load_checkpoint(None)
    end_id = Vocabulary.from_dict(payload["vocab"]).end_id
    payload["model"]["decoder.out.bias"][end_id] = -1e4
    return save_checkpoint(payload, tmp_path_factory.mktemp("endless") / "endless.pt")


@pytest.fixture
def two_images_and_a_broken_one(tmp_path):
    images = [EXAMPLES / "shapes_1.jpg", EXAMPLES / "shapes_5.jpg", tmp_path / "empty.jpg"]
    images[2].write_bytes(b"")
    return images


def test_captions_that_never_end_are_counted_and_marked(endless_checkpoint, two_images_and_a_broken_one, tmp_path):
    jsonl, table = tmp_path / "captions.jsonl", tmp_path / "captions.csv"
    result = run(*two_images_and_a_broken_one, "--checkpoint", endless_checkpoint, "--max-len", "5",
                 "--output", jsonl, "--quiet", check_code=1)
    assert ("captioned 2 of 3 inputs (2 unfinished: stopped at --max-len without <end>; raise --max-len), "
            "1 failed") in result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r.get("finished") for r in records] == [False, False, None]  # an error record has no caption
    assert all(len(r["caption"].split()) == 5 for r in records[:2])

    run(*two_images_and_a_broken_one, "--checkpoint", endless_checkpoint, "--max-len", "5", "--output", table,
        "--quiet", check_code=1)
    assert [row["finished"] for row in csv.DictReader(table.open())] == ["false", "false", ""]


def test_captions_that_end_are_marked_finished_and_not_counted(two_images_and_a_broken_one, tmp_path):
    table = tmp_path / "captions.csv"
    result = run(*two_images_and_a_broken_one, "--output", table, "--quiet", check_code=1)
    assert "captioned 2 of 3 inputs, 1 failed" in result.stderr and "unfinished" not in result.stderr
    assert [row["finished"] for row in csv.DictReader(table.open())] == ["true", "true", ""]


def test_coco_results_stay_plain_when_captions_are_unfinished(endless_checkpoint, tmp_path):
    shutil.copy(EXAMPLES / "shapes_1.jpg", tmp_path / "COCO_val2014_000000000001.jpg")
    output = tmp_path / "results.json"
    result = run(tmp_path / "COCO_val2014_000000000001.jpg", "--checkpoint", endless_checkpoint, "--max-len", "4",
                 "--format", "coco", "--output", output, "--quiet", check_code=0)
    assert "(1 unfinished: " in result.stderr
    assert [set(r) for r in json.loads(output.read_text())] == [{"image_id", "caption"}]


def test_the_closing_line_separates_thousands():
    tally = Tally(captioned=1000, unfinished=12, failed=0)
    assert tally.summary(None) == ("captioned 1,000 of 1,000 inputs (12 unfinished: stopped at --max-len without "
                                   "<end>; raise --max-len), 0 failed")
    assert Tally(captioned=3, failed=1).summary("out.csv") == "captioned 3 of 4 inputs, 1 failed; wrote out.csv"
