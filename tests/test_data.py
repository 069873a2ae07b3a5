import gc
import json

import pytest
import torch

from captioner.config import DataConfig
from captioner.data.coco import (
    CaptionDataset,
    DatasetError,
    EpochBatchSampler,
    collate_captions,
    cyclic_gc_paused,
    load_karpathy_split,
    load_split,
)
from captioner.vocab import Vocabulary


def test_official_and_karpathy_sources_agree(shapes_data):
    official = load_split(DataConfig(root=str(shapes_data)), "train")
    karpathy = load_split(DataConfig(root=str(shapes_data), split_file=str(shapes_data / "dataset_shapes.json")), "train")
    assert {r.image_id: r.captions for r in official} == {r.image_id: r.captions for r in karpathy}
    assert all(r.path.is_file() and r.path.parent.name == "train2014" for r in official)
    assert all(len(r.captions) == 5 for r in official)


def test_restval_joins_train_and_ids_come_from_cocoid(tmp_path):
    split = {"images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "cocoid": 42, "imgid": 0,
         "sentences": [{"raw": "A cat."}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "train", "cocoid": 7, "imgid": 1,
         "sentences": [{"raw": "A dog."}, {"raw": "Dog."}]},
        {"filename": "c.jpg", "split": "test", "imgid": 2, "sentences": [{"raw": "A bird."}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(split))
    train = load_karpathy_split(path, tmp_path, "train")
    assert sorted(r.image_id for r in train) == [7, 42]
    assert next(r for r in train if r.image_id == 42).path == tmp_path / "val2014" / "a.jpg"
    (test,) = load_karpathy_split(path, tmp_path, "test")
    assert test.image_id == 2 and test.path == tmp_path / "c.jpg"  # flickr files have no filepath
    with pytest.raises(DatasetError, match="'val'.*restval"):
        load_karpathy_split(path, tmp_path, "val")


def test_the_cycle_collector_is_paused_only_while_a_split_file_loads(tmp_path):
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError):
        load_karpathy_split(tmp_path / "bad.json", tmp_path, "train")
    assert gc.isenabled()  # back on after a failed load too
    gc.disable()
    try:  # and left off when the caller had turned it off
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_missing_files_name_themselves(tmp_path):
    with pytest.raises(DatasetError, match="captions_train2014.json"):
        load_split(DataConfig(root=str(tmp_path)), "train")
    with pytest.raises(DatasetError, match="nope.json"):
        load_split(DataConfig(root=str(tmp_path), split_file=str(tmp_path / "nope.json")), "train")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        load_split(DataConfig(root=str(tmp_path), split_file=str(tmp_path / "bad.json")), "train")
    no_name = {"images": [{"split": "train", "cocoid": 1, "sentences": [{"raw": "A cat."}]}]}
    (tmp_path / "no_name.json").write_text(json.dumps(no_name))
    with pytest.raises(DatasetError, match=r"no_name.json is not a Karpathy split file: bad image entry \(KeyError"):
        load_split(DataConfig(root=str(tmp_path), split_file=str(tmp_path / "no_name.json")), "train")
    with pytest.raises(DatasetError, match="unknown split 'restval'"):
        load_split(DataConfig(root=str(tmp_path)), "restval")


def test_one_image_serves_several_captions(shapes_data):
    records = load_split(DataConfig(root=str(shapes_data)), "train")[:3]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    features = torch.randn(3, 4, 5)
    dataset = CaptionDataset(records, vocab, features=features, captions_per_image=2)
    batch = collate_captions([dataset[i] for i in range(3)])
    assert batch["inputs"].shape == (3, 4, 5)
    assert batch["captions"].shape[0] == 6 and batch["image_index"].tolist() == [0, 0, 1, 1, 2, 2]
    for row, length in enumerate(batch["lengths"].tolist()):
        caption = batch["captions"][row]
        assert caption[0] == vocab.start_id and caption[length - 1] == vocab.end_id
        assert (caption[length:] == vocab.pad_id).all()
    # The caption choice is fixed by (seed, epoch) and changes between epochs.
    first = [dataset[i]["captions"] for i in range(3)]
    assert first == [dataset[i]["captions"] for i in range(3)]
    dataset.set_epoch(1)
    assert first != [dataset[i]["captions"] for i in range(3)]


def test_batch_sampler_resumes_mid_epoch_with_the_same_batches():
    sampler = EpochBatchSampler(10, 3, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(i for batch in full for i in batch) == list(range(10)) and len(sampler) == 4
    sampler.set_epoch(2, start_batch=2)
    assert list(sampler) == full[2:] and len(sampler) == 2
    sampler.set_epoch(3)
    assert list(sampler) != full
