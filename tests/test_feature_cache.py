"""The memory-mapped fp16 feature cache: round trip, resume, refusal to mix, the CLI, and
training from it giving the losses of training from the images."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from captioner import feature_cache
from captioner.cli import main
from captioner.config import load_config
from captioner.data.coco import load_split
from captioner.feature_cache import FeatureCacheError
from captioner.images import load_image
from captioner.model import Encoder
from captioner.training import fit

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
CPU = torch.device("cpu")
# float16 keeps 11 significant bits: rounding moves a value by at most 2^-11 of itself (2^-25
# absolute below the normal range), so cached and direct features agree to these tolerances.
FP16_RTOL, FP16_ATOL = 2.0**-11, 2.0**-24


def data_overrides(shapes_data):
    return [f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}"]


@pytest.fixture(scope="module")
def tiny(shapes_data):
    """(config, train records, frozen encoder) of the tiny recipe."""
    config = load_config(TINY, data_overrides(shapes_data))
    return config, load_split(config.data, "train"), Encoder(config.model.encoder)


def counting(monkeypatch, encoder, fail_at_call=None, folder=None):
    """Count the images `encoder` encodes; optionally raise KeyboardInterrupt at call number
    `fail_at_call`, and record the `completed` count on disk in `folder` at each call."""
    seen = {"images": 0, "calls": 0, "completed_on_disk": []}
    forward = encoder.forward

    def wrapped(images):
        seen["calls"] += 1
        if folder is not None:
            seen["completed_on_disk"].append(json.loads((folder / "index.json").read_text())["completed"])
        if seen["calls"] == fail_at_call:
            raise KeyboardInterrupt
        seen["images"] += len(images)
        return forward(images)

    monkeypatch.setattr(encoder, "forward", wrapped)
    return seen


def test_cache_round_trip_equals_the_encoder_to_fp16_precision(tiny, tmp_path):
    config, records, encoder = tiny
    folder = tmp_path / "cache"
    features = feature_cache.build(encoder, config.model.encoder, records, folder, CPU, batch_size=5, progress=False)
    P, D = config.model.encoder.grid ** 2, encoder.feature_dim
    assert features.shape == (len(records), P, D) and features.dtype == torch.float16
    with torch.no_grad():
        direct = encoder(torch.stack([encoder.preprocess(load_image(r.path)) for r in records]))
    torch.testing.assert_close(features.float(), direct, rtol=FP16_RTOL, atol=FP16_ATOL)
    assert torch.equal(features[[4, 1]], torch.stack([features[4], features[1]]))

    # the layout index.json describes: raw (N, P, D) float16, nothing else in the file
    index = json.loads((folder / "index.json").read_text())
    assert index["shape"] == [len(records), P, D] and index["completed"] == len(records)
    assert index["dtype"] == "float16" and index["images"] == [str(r.path) for r in records]
    assert index["encoder"]["grid"] == config.model.encoder.grid
    raw = np.fromfile(folder / "features.f16", dtype=np.float16).reshape(len(records), P, D)
    assert torch.equal(torch.from_numpy(raw), features)
    assert torch.equal(feature_cache.read(folder), features)


def test_interrupted_build_resumes_and_writes_the_same_file(tiny, tmp_path, monkeypatch):
    config, records, encoder = tiny
    options = {"batch_size": 2, "progress": False}

    whole = tmp_path / "whole"
    seen = counting(monkeypatch, encoder, folder=whole)
    feature_cache.build(encoder, config.model.encoder, records, whole, CPU, flush_seconds=0, **options)
    # progress reaches the disk batch by batch, not only at the end (a killed build keeps it too)
    assert seen["completed_on_disk"] == list(range(0, len(records), 2))
    monkeypatch.undo()

    broken = tmp_path / "broken"
    seen = counting(monkeypatch, encoder, fail_at_call=4)  # Ctrl-C while encoding the 4th batch
    with pytest.raises(KeyboardInterrupt):
        feature_cache.build(encoder, config.model.encoder, records, broken, CPU, **options)
    assert json.loads((broken / "index.json").read_text())["completed"] == 6
    with pytest.raises(FeatureCacheError, match="incomplete: 6 of 12 images"):
        feature_cache.read(broken)
    monkeypatch.undo()

    seen = counting(monkeypatch, encoder)
    feature_cache.build(encoder, config.model.encoder, records, broken, CPU, **options)
    assert seen["images"] == len(records) - 6  # only what was left
    assert (broken / "features.f16").read_bytes() == (whole / "features.f16").read_bytes()
    assert (broken / "index.json").read_text() == (whole / "index.json").read_text()

    seen = counting(monkeypatch, encoder)
    feature_cache.build(encoder, config.model.encoder, records, broken, CPU, **options)
    assert seen["calls"] == 0  # complete: opened, not encoded


def test_a_cache_of_other_images_or_another_encoder_is_refused_not_mixed(tiny, tmp_path):
    config, records, encoder = tiny
    folder = tmp_path / "cache"
    feature_cache.build(encoder, config.model.encoder, records, folder, CPU, progress=False)
    before = (folder / "features.f16").read_bytes()

    with pytest.raises(FeatureCacheError, match=r"image list has 12 images there, 11 here.*--overwrite"):
        feature_cache.build(encoder, config.model.encoder, records[:-1], folder, CPU, progress=False)
    with pytest.raises(FeatureCacheError, match=r"image lists differ from position 0"):
        feature_cache.build(encoder, config.model.encoder, records[::-1], folder, CPU, progress=False)
    other_config = dataclasses.replace(config.model.encoder, grid=2)
    other_encoder = Encoder(other_config)
    with pytest.raises(FeatureCacheError, match=r"model.encoder.grid is 3 there, 2 here.*another folder"):
        feature_cache.build(other_encoder, other_config, records, folder, CPU, progress=False)
    assert (folder / "features.f16").read_bytes() == before  # nothing was touched

    replaced = feature_cache.build(other_encoder, other_config, records, folder, CPU, overwrite=True, progress=False)
    assert replaced.shape == (len(records), 4, encoder.feature_dim)

    (folder / "index.json").write_text("{not json")
    with pytest.raises(FeatureCacheError, match=r"index.json is not a feature cache index.*--overwrite"):
        feature_cache.read(folder)


def test_too_little_disk_space_stops_before_encoding(tiny, tmp_path, monkeypatch, capsys):
    config, records, encoder = tiny
    disk = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(feature_cache.shutil, "disk_usage", lambda path: disk._replace(free=1000))
    seen = counting(monkeypatch, encoder)
    with pytest.raises(FeatureCacheError, match=r"not enough disk space.*needs 276.5 kB more, 1.0 kB is free"):
        feature_cache.build(encoder, config.model.encoder, records, tmp_path / "cache", CPU, progress=False)
    assert seen["calls"] == 0
    # 12 images x 9 cells x 1280 features x 2 bytes, said before any work starts
    assert "12 images x 9 cells x 1280 features as float16 = 276.5 kB" in capsys.readouterr().err


def test_cli_writes_the_caches_that_training_then_uses_without_encoding(shapes_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "features"
    code = main(["features", "--config", str(TINY), "--set", *data_overrides(shapes_data), "--out", str(out),
                 "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"--set data.feature_cache_dir={out} data.cache_features=true" in printed
    assert sorted(p.name.split("_")[0] for p in out.iterdir()) == ["train", "val"]

    def no_encoding(self, images):
        raise AssertionError("training encoded images although the cache holds their features")

    caches = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(Encoder, "forward", no_encoding)
    config = load_config(TINY, [*data_overrides(shapes_data), f"output_dir={tmp_path / 'run'}", "train.epochs=1",
                                f"data.feature_cache_dir={out}", "data.cache_features=true"])
    run_dir = fit(config)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == caches  # the same folders: no other key


def test_cli_refuses_an_encoder_that_trains(shapes_data, tmp_path, capsys):
    code = main(["features", "--config", str(TINY), "--set", *data_overrides(shapes_data),
                 "model.encoder.fine_tune=1", "--out", str(tmp_path / "features")])
    assert code == 2
    error = capsys.readouterr().err
    assert "model.encoder.fine_tune is 1" in error and "cannot be cached" in error
    assert not (tmp_path / "features").exists()


def test_training_from_the_cache_gives_the_losses_of_training_from_images(shapes_data, tmp_path):
    """Same seed, frozen encoder, two epochs (dropout on): the only difference between the runs
    is that the cached features were rounded to float16. That moves each feature by at most
    2^-11 of itself, and the loss (a mean over tokens of smooth functions of the features) by
    the same order, so FP16_RTOL bounds the difference; measured: below 1e-5. A run with
    another seed differs by about 5e-2, so the tolerance does tell the runs apart."""

    def train_losses(name, *overrides):
        config = load_config(TINY, [*data_overrides(shapes_data), f"output_dir={tmp_path / name}", "train.epochs=2",
                                    "train.seed=1", *overrides])
        lines = (fit(config) / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train_loss"] for line in lines]

    cached = train_losses("cached", "data.cache_features=true")
    from_images = train_losses("images", "data.cache_features=false")
    other_seed = train_losses("other_seed", "data.cache_features=true", "train.seed=2")
    assert len(cached) == len(from_images) == 2
    assert cached == pytest.approx(from_images, rel=FP16_RTOL)
    assert cached[0] != pytest.approx(other_seed[0], rel=10 * FP16_RTOL)
