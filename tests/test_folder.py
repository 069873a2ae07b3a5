"""Training on your own images: an image folder with metadata.jsonl or metadata.csv
(captioner/data/folder.py), its split, evaluation against its captions, and --init."""

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from captioner.checkpoint import load_checkpoint
from captioner.coco_eval import GroundTruth, evaluate_captions
from captioner.config import DataConfig, load_config
from captioner.data.coco import DatasetError, load_split
from captioner.data.folder import (
    BAD_ROW,
    EMPTY_CAPTION,
    MALFORMED,
    MISSING_FILE,
    SPLIT_FILE_NAME,
    UNREADABLE,
    random_split,
    read_folder_split,
)
from captioner.training import fit, unknown_words
from captioner.vocab import Vocabulary, tokenize

REPO = Path(__file__).resolve().parents[1]
FOLDER_RECIPE = REPO / "configs" / "folder.yaml"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}


def draw(path: Path, colour: str, size: int = 32) -> None:
    """A small picture: a coloured square on grey (32 px keeps image checks and encoding quick)."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    image.paste(COLOURS[colour], (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def good_images(root: Path, count: int) -> dict[str, list[str]]:
    """`count` images in root/images/, each with two captions: {file name: captions}."""
    captions = {}
    for index in range(count):
        colour = list(COLOURS)[index % len(COLOURS)]
        name = f"images/{index:03d}.png"
        draw(root / name, colour)
        captions[name] = [f"a {colour} square", f"the square is {colour}"]
    return captions


def write_jsonl(root: Path, lines: list) -> None:
    """Lines of metadata.jsonl: dicts are written as JSON, strings as they are (bad lines)."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (root / "metadata.jsonl").write_text(text + "\n")


def write_csv(root: Path, rows: list[dict]) -> None:
    """metadata.csv of `rows` (dicts of file_name, text and maybe split), written by the csv module."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    (root / "metadata.csv").write_text(text.getvalue())


def rows_of(captions: dict[str, list[str]], split: str | None = None) -> list[dict]:
    """One row per caption, as the imagefolder convention has it."""
    return [{"file_name": name, "text": text, **({"split": split} if split else {})}
            for name, texts in captions.items() for text in texts]


def data(root: Path, **keys) -> DataConfig:
    return DataConfig(format="folder", root=str(root), **keys)


# ---------------------------------------------------------------------------- bad rows


def test_jsonl_bad_rows_are_reported_by_name_counted_and_skipped(tmp_path):
    captions = good_images(tmp_path, 4)
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    (tmp_path / "broken.png").write_bytes((tmp_path / "images/000.png").read_bytes()[:60])  # truncated
    draw(tmp_path / "lonely.png", "red")
    write_jsonl(tmp_path, [
        *rows_of(captions, "train"),                                               # lines 1-8
        '{"file_name": "images/001.png", "text": "unclosed',                      # 9: malformed JSON
        '["images/001.png", "a list is not a row"]',                               # 10: not an object
        {"file_name": "gone.png", "text": "a missing image", "split": "train"},     # 11: missing file
        {"file_name": "notes.jpg", "text": "a text file", "split": "train"},       # 12: not an image
        {"file_name": "broken.png", "text": "a truncated image", "split": "train"},  # 13: unreadable
        {"file_name": "images/002.png", "text": "  ", "split": "train"},           # 14: empty caption
        {"text": "a caption of no image", "split": "train"},                       # 15: no file_name
        {"file_name": "lonely.png", "text": ["a red square", "", "red"], "split": "train"},  # 16: list, one empty
    ])
    result = read_folder_split(data(tmp_path), "train")
    assert result.counts() == Counter({MALFORMED: 2, MISSING_FILE: 1, UNREADABLE: 2, EMPTY_CAPTION: 2, BAD_ROW: 1})
    where = {problem.where: problem.kind for problem in result.problems}
    assert where["line 9"] == where["line 10"] == MALFORMED
    assert where["gone.png"] == MISSING_FILE and where["notes.jpg"] == where["broken.png"] == UNREADABLE
    assert where["line 14 (images/002.png)"] == where["line 16 (lonely.png)"] == EMPTY_CAPTION
    assert where["line 15"] == BAD_ROW
    by_file = {record.path.relative_to(tmp_path).as_posix(): record.captions for record in result.records}
    assert by_file == {**{name: tuple(texts) for name, texts in captions.items()},
                       "lonely.png": ("a red square", "red")}  # a list gives several captions
    assert result.summary() == ("metadata.jsonl, split train: 5 images; 8 skipped (1 bad row, 2 empty caption, "
                                "2 malformed line, 1 missing file, 2 unreadable image)")


def test_csv_bad_rows_are_reported_with_their_line_numbers(tmp_path):
    captions = good_images(tmp_path, 3)
    (tmp_path / "notes.png").write_text("hello")
    lines = ["file_name,text"] + [f"{name},{text}" for name, texts in captions.items() for text in texts]
    lines += [
        'images/000.png,"a quoted caption, with a comma"',  # 8: good, one more caption
        'images/001.png,"bad"quote',                         # 9: CSV error
        "images/001.png,too,many",                           # 10: three fields
        "gone.png,a missing image",                          # 11
        "notes.png,a text file",                             # 12
        "images/002.png,",                                   # 13: empty caption
    ]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    # no split column: every image is in one of the three splits, each checked where it lies
    results = [read_folder_split(data(tmp_path), split) for split in ("train", "val", "test")]
    rows = Counter({MALFORMED: 2, EMPTY_CAPTION: 1})  # row problems are met by every split's load
    images = sum((result.counts() - rows for result in results), Counter())
    assert all(result.counts() >= rows for result in results)
    assert images == Counter({MISSING_FILE: 1, UNREADABLE: 1})
    problems = {str(problem) for problem in results[0].problems}
    assert any(p.startswith("line 9: malformed line: invalid CSV") for p in problems)
    assert "line 10: malformed line: 3 fields, the header has 2" in problems
    assert "line 13 (images/002.png): empty caption: no words" in problems
    records = {record.path.name: record.captions for result in results for record in result.records}
    assert records["000.png"] == ("a red square", "the square is red", "a quoted caption, with a comma")
    assert set(records) == {"000.png", "001.png", "002.png"}


def test_a_csv_without_file_name_and_text_columns_is_a_clear_error(tmp_path):
    (tmp_path / "metadata.csv").write_text("image,caption\na.png,a cat\n")
    with pytest.raises(DatasetError, match="file_name and text.*missing file_name, text"):
        read_folder_split(data(tmp_path), "train")


def test_no_usable_image_is_a_clear_error_naming_the_folder(tmp_path):
    write_jsonl(tmp_path, [{"file_name": "gone.png", "text": "a cat", "split": "train"}])
    with pytest.raises(DatasetError, match=f"no usable image in split train of {tmp_path}"):
        load_split(data(tmp_path), "train")
    (tmp_path / "metadata.jsonl").unlink()
    with pytest.raises(DatasetError, match=f"{tmp_path} has no metadata.jsonl or metadata.csv"):
        load_split(data(tmp_path), "train")
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(FOLDER_RECIPE), "--set", f"data.root={tmp_path}",
         f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path} has no metadata.jsonl" in result.stderr


# ---------------------------------------------------------------------------- splits


@pytest.mark.parametrize("write", [write_jsonl, write_csv], ids=["jsonl", "csv"])
def test_split_column_honours_val_and_rejects_unknown_or_conflicting_splits(tmp_path, write):
    captions = good_images(tmp_path, 6)
    names = list(captions)
    write(tmp_path, [
        {"file_name": names[0], "text": "a", "split": "train"},
        {"file_name": names[1], "text": "b", "split": "val"},
        {"file_name": names[2], "text": "c", "split": "validation"},
        {"file_name": names[3], "text": "d", "split": "test"},
        {"file_name": names[4], "text": "e", "split": "dev"},          # line 5: unknown split
        {"file_name": names[0], "text": "f", "split": "test"},         # line 6: a second split
        {"file_name": names[5], "text": "g"},                          # line 7: no split (an empty CSV cell)
        {"file_name": names[3], "text": "h", "split": " Test "},       # a second caption, case and spaces aside
    ])
    splits = {split: read_folder_split(data(tmp_path), split) for split in ("train", "val", "test")}
    assert {s: [r.path.name for r in result.records] for s, result in splits.items()} == {
        "train": ["000.png"], "val": ["001.png", "002.png"], "test": ["003.png"]}
    assert splits["test"].records[0].captions == ("d", "h")
    assert splits["train"].counts() == Counter({BAD_ROW: 3})
    lines = {problem.where.split(" (")[0] for problem in splits["train"].problems}
    first = 5 if write is write_jsonl else 6  # a CSV's header is its line 1
    assert lines == {f"line {first}", f"line {first + 1}", f"line {first + 2}"}
    assert not (tmp_path / SPLIT_FILE_NAME).exists()  # a split column needs no stored split


def test_the_90_5_5_split_is_deterministic_stored_and_reused(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    captions = good_images(first, 40)
    good_images(second, 40)
    write_jsonl(first, rows_of(captions))
    write_jsonl(second, list(reversed(rows_of(captions))))  # row order does not matter
    ids = {}
    for root in (first, second):
        records = {s: read_folder_split(data(root), s).records for s in ("train", "validation", "test")}
        assert [len(records[s]) for s in records] == [36, 2, 2]
        ids[root] = {s: sorted(r.path.name for r in records[s]) for s in records}
    assert ids[first] == ids[second]
    stored = json.loads((first / SPLIT_FILE_NAME).read_text())
    assert stored["seed"] == 0 and stored["test"] == sorted(f"images/{name}" for name in ids[first]["test"])
    assert random_split(sorted(captions), 1) != random_split(sorted(captions), 0)
    # an image added later joins train; the held-out images stay those scored before
    draw(first / "late.png", "blue")
    write_jsonl(first, rows_of(captions) + [{"file_name": "late.png", "text": "a blue square"}])
    train = read_folder_split(data(first, split_seed=5), "train")  # the stored split wins over a new seed
    assert "late.png" in {r.path.name for r in train.records} and train.notes[0].startswith("1 new images")
    assert {r.path.name for r in read_folder_split(data(first), "test").records} == set(ids[first]["test"])
    elsewhere = tmp_path / "splits" / "mine.json"
    read_folder_split(data(second, split_file=str(elsewhere)), "train")
    assert json.loads(elsewhere.read_text())["test"] == stored["test"]


# ---------------------------------------------------------------------------- train, evaluate, caption, --init


def tiny_overrides(*extra: str) -> list[str]:
    """configs/tiny.yaml's model, data sizes and training keys as --set overrides of the folder
    recipe, for one epoch: a seconds-long run."""
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    keys = {f"model.encoder.{k}": v for k, v in tiny["model"].pop("encoder").items()}
    keys |= {f"model.{k}": v for k, v in tiny["model"].items()}
    keys |= {f"data.{k}": tiny["data"][k] for k in ("captions_per_image", "cache_features", "num_workers")}
    keys |= {f"train.{k}": v for k, v in tiny["train"].items()} | {"train.epochs": 1}
    return [f"{key}={json.dumps(value)}" for key, value in keys.items()] + list(extra)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A folder of 40 images (and two bad rows) trained on for one epoch by train.py."""
    root = tmp_path_factory.mktemp("own_images")
    captions = good_images(root, 40)
    # one word seen once in training, so that data.min_word_count=2 leaves it out
    train = random_split(sorted([*captions, "gone.png"]), seed=0)["train"]
    captions[next(name for name in train if name in captions)].append("a dull square")
    write_jsonl(root, rows_of(captions) + ["{oops", {"file_name": "gone.png", "text": "a missing image"}])
    run = root.parent / (root.name + "_run")
    command = [sys.executable, str(REPO / "train.py"), "--config", str(FOLDER_RECIPE), "--set", f"data.root={root}",
               f"output_dir={run}", *tiny_overrides("data.min_word_count=2")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, run, captions, result


def test_a_folder_trains_end_to_end_then_evaluates_and_captions(folder_run, tmp_path):
    root, run, captions, training = folder_run
    assert "line 82: malformed line: invalid JSON" in training.stderr  # 81 caption rows before it
    assert "metadata.jsonl, split train: " in training.stderr
    stored = json.loads((root / SPLIT_FILE_NAME).read_text())
    assert [len(stored[s]) for s in ("train", "validation", "test")] == [37, 2, 2]  # gone.png is listed too
    checkpoint = load_checkpoint(run / "checkpoint_last.pt")
    assert checkpoint["config"]["data"]["format"] == "folder"
    # the vocabulary: the words of the training split's captions seen at least data.min_word_count=2 times
    counts = Counter(w for name in stored["train"] for text in captions.get(name, []) for w in tokenize(text))
    assert counts["dull"] == 1 and "dull" not in checkpoint["vocab"]["itos"]
    assert {w for w, n in counts.items() if n >= 2} == set(checkpoint["vocab"]["itos"][4:])

    # evaluate reads the checkpoint's config: the same folder, the same stored split
    output = tmp_path / "scores.json"
    subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--checkpoint", str(run / "checkpoint_last.pt"),
                    "--output", str(output), "--quiet", "--num-workers", "0", "--no-java"],
                   check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(output.read_text())
    assert report["references"] == {"source": "metadata.jsonl", "kind": "folder-metadata"}
    results = {r["image_id"]: r["caption"] for r in json.loads((tmp_path / "scores_results.json").read_text())}
    test_records = load_split(DataConfig(format="folder", root=str(root)), "test")
    assert sorted(r.path.relative_to(root).as_posix() for r in test_records) == sorted(
        name for name in stored["test"] if name in captions)
    assert set(results) == {r.image_id for r in test_records} and report["num_images"] == len(test_records)
    references = GroundTruth({r.image_id: captions[r.path.relative_to(root).as_posix()] for r in test_records}, "x")
    expected = evaluate_captions(references, results, java=False)["metrics"]
    assert report["metrics"] == pytest.approx(expected)

    caption = subprocess.run([sys.executable, "-m", "captioner", "caption", str(test_records[0].path),
                              "--checkpoint", str(run / "checkpoint_last.pt"), "--format", "jsonl"],
                             check=True, capture_output=True, text=True, timeout=300)
    assert json.loads(caption.stdout.splitlines()[0])["caption"] == results[test_records[0].image_id]


def test_init_keeps_the_vocabulary_fixed_and_counts_new_words_as_unk(folder_run, tmp_path, capsys):
    _, run, _, _ = folder_run
    init = load_checkpoint(run / "checkpoint_last.pt")
    vocab = Vocabulary.from_dict(init["vocab"])
    root = tmp_path / "new_images"
    captions = good_images(root, 6)
    captions["images/000.png"].append("a zebra near a red giraffe")
    captions["images/001.png"].append("one more zebra")
    write_jsonl(root, rows_of(dict(list(captions.items())[:4]), "train") + rows_of(dict(list(captions.items())[4:5]),
                "validation") + rows_of(dict(list(captions.items())[5:]), "test"))
    train_captions = [text for name in list(captions)[:4] for text in captions[name]]
    new = unknown_words(vocab, train_captions)
    assert new == Counter(w for t in train_captions for w in tokenize(t) if w not in vocab.stoi) and new["zebra"] == 2
    # the recipe asks for another architecture: the init checkpoint's is used; with a learning rate
    # of 0 the weights trained are exactly the ones it started from
    config = load_config(FOLDER_RECIPE, [f"data.root={root}", f"output_dir={tmp_path / 'run'}",
                                         *tiny_overrides("model.decoder_dim=16", "train.lr=0")])
    capsys.readouterr()
    fine_tuned = fit(config, init=run / "checkpoint_last.pt")
    out = capsys.readouterr().out
    assert (f"{len(new)} words of the training captions are new to it and train as <unk> "
            f"({sum(new.values())} occurrences") in out
    checkpoint = load_checkpoint(fine_tuned / "checkpoint_last.pt")
    assert checkpoint["vocab"] == init["vocab"] and checkpoint["config"]["model"] == init["config"]["model"]
    assert checkpoint["model"].keys() == init["model"].keys()
    assert all(torch.equal(checkpoint["model"][k], init["model"][k]) for k in init["model"])
    assert load_config(fine_tuned / "config.yaml").model.decoder_dim == init["config"]["model"]["decoder_dim"]
    with pytest.raises(ValueError, match="--init and --resume exclude each other"):
        fit(config, resume=run / "checkpoint_last.pt", init=run / "checkpoint_last.pt")
